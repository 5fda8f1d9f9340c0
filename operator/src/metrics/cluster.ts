/**
 * Cluster metrics of the operator, served at /cluster-metrics: the counts Azure NPM users chart,
 * computed from the operator's translation (the cluster's desired state), plus the operator's own
 * health: work queue depth, API writes and bytes, reconciles, rulesets not yet programmed, leadership.
 *
 * npm_num_ipsets counts every distinct kernel set the NpmRuleSets reference, pod-derived and
 * ipBlock alike (referencedSets()); npm_num_ipset_entries adds the ipBlock sets' inline members to
 * the pod-derived sets' members, as a node's kernel counts them.
 *
 * The labelled counters exist at 0 from start-up for every label value the operator can write
 * (API_WRITES, RECONCILE_RESULTS): a series that appears only at its first increment is invisible to
 * rate()/increase() for that first burst (they need two samples). Process and Node.js runtime
 * metrics (prom-client's defaults, e.g. process_cpu_seconds_total, process_resident_memory_bytes,
 * nodejs_heap_size_used_bytes, nodejs_eventloop_lag_p99_seconds, which the dashboard charts) are on
 * the same registry unless `processMetrics: false` (several registries in one process, e.g. tests).
 */
import { Counter, Gauge, Registry } from 'prom-client';
import { registerRuntimeMetrics } from './runtime.js';

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

export interface ClusterMetricsOptions {
  /** process_* and nodejs_* metrics on this registry (default true; they watch GC and the event loop process-wide). */
  processMetrics?: boolean;
}

/**
 * The writes the operator makes, as controller/operator.ts countingApi() counts them: kind -> verbs.
 * `status` is a write of the status subresource (NpmRuleSet status, the NpmNode AgentNotReporting
 * condition). A new write there needs its line here, or its series starts at its first increment.
 */
export const API_WRITES: Readonly<Record<string, readonly string[]>> = {
  NpmRuleSet: ['create', 'patch', 'delete', 'status'],
  NpmIPSet: ['create', 'patch', 'delete'],
  NpmNode: ['status'],
};

/** Reconcile outcomes (controller/operator.ts): done, waiting for another object, retried later, failed. */
export const RECONCILE_RESULTS = ['ok', 'wait', 'retry', 'error'] as const;

/** The part of an NpmRuleSet referencedSets() reads. */
export interface SetRefs {
  spec: { ipsets: readonly { name: string; kind?: string; members?: readonly string[] }[] };
}

/**
 * Distinct kernel sets the rulesets reference (pod-derived, named-port and ipBlock sets), and the
 * inline members of the distinct ipBlock sets among them (a set shared by two rulesets counts once).
 */
export function referencedSets(rulesets: Iterable<SetRefs | undefined>): { sets: number; ipBlockMembers: number } {
  const seen = new Set<string>();
  let ipBlockMembers = 0;
  for (const rs of rulesets) {
    for (const ref of rs?.spec.ipsets ?? []) {
      if (seen.has(ref.name)) continue;
      seen.add(ref.name);
      if (ref.kind === 'IPBlock') ipBlockMembers += ref.members?.length ?? 0;
    }
  }
  return { sets: seen.size, ipBlockMembers };
}

export function createClusterMetrics(src: ClusterSource, registry = new Registry(), opts: ClusterMetricsOptions = {}): ClusterMetrics {
  const registers = [registry];
  const gauge = (name: string, help: string, read: () => number) =>
    new Gauge({ name, help, registers, collect() { this.set(read()); } });
  gauge('npm_num_policies', 'NetworkPolicies translated by the operator', () => src.policies());
  gauge('npm_num_iptables_rules', 'Allow rules over all NpmRuleSets (cluster-wide, before node-local selection)', () => src.rules());
  gauge('npm_num_ipsets', 'Distinct kernel sets the NpmRuleSets reference: pod-derived, named-port and ipBlock sets', () => src.ipsets());
  gauge('npm_num_ipset_entries', 'Members over those sets: pod-derived sets (NpmIPSets) plus the inline members of ipBlock sets', () => src.ipsetEntries());
  gauge('kubenpm_workqueue_depth', 'Keys waiting in the operator work queue', () => src.queueDepth());
  gauge('kubenpm_rulesets_not_programmed', 'NpmRuleSets whose Programmed condition is not True', () => src.notProgrammed());
  gauge('kubenpm_rulesets_invalid', 'NpmRuleSets whose Accepted condition is False', () => src.invalid());
  gauge('kubenpm_leader', '1 when this replica is the leader', () => (src.isLeader() ? 1 : 0));
  const kinds = Object.keys(API_WRITES);
  const m: ClusterMetrics = {
    registry,
    apiWrites: new Counter({ name: 'kubenpm_api_writes_total', help: `Writes to the API server, by kind and verb (${kinds.map((k) => `${k}: ${API_WRITES[k]!.join(', ')}`).join('; ')})`, labelNames: ['kind', 'verb'], registers }),
    apiWriteBytes: new Counter({ name: 'kubenpm_api_write_bytes_total', help: `Request bytes written to the API server, by kind (${kinds.join(', ')})`, labelNames: ['kind'], registers }),
    reconciles: new Counter({ name: 'kubenpm_reconciles_total', help: `Reconciles by result (${RECONCILE_RESULTS.join(', ')})`, labelNames: ['result'], registers }),
  };
  // Every label value at 0 from start-up (see the header).
  for (const kind of kinds) {
    m.apiWriteBytes.inc({ kind }, 0);
    for (const verb of API_WRITES[kind]!) m.apiWrites.inc({ kind, verb }, 0);
  }
  for (const result of RECONCILE_RESULTS) m.reconciles.inc({ result }, 0);
  if (opts.processMetrics !== false) registerRuntimeMetrics(registry);
  return m;
}
