/**
 * Cluster metrics of the operator, served at /cluster-metrics: the counts Azure NPM users chart,
 * computed from the operator's translation (the cluster's desired state), plus the operator's own
 * health: work queue depth, API writes and bytes, rulesets not yet programmed, leadership.
 */
import { Counter, Gauge, Registry } from 'prom-client';

export interface ClusterSource {
  policies(): number;
  rules(): number;
  ipsets(): number;
  ipsetEntries(): number;
  queueDepth(): number;
  notProgrammed(): number;
  invalid(): number;
  isLeader(): boolean;
}

export interface ClusterMetrics {
  registry: Registry;
  apiWrites: Counter<'kind' | 'verb'>;
  apiWriteBytes: Counter<'kind'>;
  reconciles: Counter<'result'>;
}

export function createClusterMetrics(src: ClusterSource, registry = new Registry()): ClusterMetrics {
  const registers = [registry];
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({ name, help, registers, collect() { this.set(read()); } });
  gauge('npm_num_policies', 'NetworkPolicies translated by the operator', () => src.policies());
  gauge('npm_num_iptables_rules', 'Allow rules over all NpmRuleSets (cluster-wide, before node-local selection)', () => src.rules());
  gauge('npm_num_ipsets', 'Distinct kernel sets the NpmRuleSets reference', () => src.ipsets());
  gauge('npm_num_ipset_entries', 'Members over all pod-derived sets', () => src.ipsetEntries());
  gauge('kubenpm_workqueue_depth', 'Keys waiting in the operator work queue', () => src.queueDepth());
  gauge('kubenpm_rulesets_not_programmed', 'NpmRuleSets whose Programmed condition is not True', () => src.notProgrammed());
  gauge('kubenpm_rulesets_invalid', 'NpmRuleSets whose Accepted condition is False', () => src.invalid());
  gauge('kubenpm_leader', '1 when this replica is the leader', () => (src.isLeader() ? 1 : 0));
  return {
    registry,
    apiWrites: new Counter({ name: 'kubenpm_api_writes_total', help: 'Writes to the API server, by kind and verb', labelNames: ['kind', 'verb'], registers }),
    apiWriteBytes: new Counter({ name: 'kubenpm_api_write_bytes_total', help: 'Request bytes written to the API server, by kind', labelNames: ['kind'], registers }),
    reconciles: new Counter({ name: 'kubenpm_reconciles_total', help: 'Reconciles by result (ok, retry, error)', labelNames: ['result'], registers }),
  };
}
