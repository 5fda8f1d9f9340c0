/**
 * `kube-npm operator`: flags and wiring only (controller/operator.ts does the work).
 * Exits when it loses the leader Lease (the Deployment restarts it as a candidate), and shuts down
 * gracefully on SIGTERM/SIGINT, releasing the Lease so the other replica takes over at once.
 */
import { hostname } from 'node:os';
import { randomBytes } from 'node:crypto';
import { AgentDaemonSetManager } from '../controller/daemonset.js';
import { NpmOperator } from '../controller/operator.js';
import { LeaderElector } from '../framework/leader.js';
import { createClusterMetrics, referencedSets } from '../metrics/cluster.js';
import { startEndpoints } from '../metrics/serve.js';
import { InputError } from './load.js';
import { loadKubeConfig, parseAddress, parseFlags } from './flags.js';
import type { CliIO } from './translate.js';

const FLAGS = {
  kubeconfig: 'string',
  'metrics-bind-address': 'string',
  'metrics-secure': 'bool',
  'metrics-cert-dir': 'string',
  'health-probe-bind-address': 'string',
  'leader-elect': 'bool',
  'leader-election-namespace': 'string',
  'lease-name': 'string',
  identity: 'string',
  'lease-duration-seconds': 'string',
  'renew-deadline-seconds': 'string',
  'retry-period-seconds': 'string',
  workers: 'string',
  'manage-agent-daemonset': 'bool',
  'agent-image': 'string',
  'agent-lease-namespace': 'string',
} as const;

export async function runOperator(args: string[], io: CliIO): Promise<number> {
  let f: Record<string, string | boolean>;
  try {
    f = parseFlags(args, FLAGS);
  } catch (err) {
    if (err instanceof InputError) {
      io.stderr(`error: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  const log = (s: string) => io.stderr(`${new Date().toISOString()} operator: ${s}\n`);
  const kc = loadKubeConfig(f.kubeconfig as string | undefined);
  const addr = parseAddress((f['metrics-bind-address'] as string | undefined) ?? '0.0.0.0:10091', '--metrics-bind-address');
  const identity = (f.identity as string | undefined) ?? `${process.env.POD_NAME ?? hostname()}-${randomBytes(3).toString('hex')}`;
  let elector: LeaderElector | undefined;
  let op: NpmOperator | undefined;
  // Every set the rulesets reference, ipBlock sets included (the engine's own count holds only the
  // pod-derived sets, whose members it computes).
  const sets = () => {
    if (!op) return { sets: 0, ipBlockMembers: 0 };
    const engine = op.engine;
    return referencedSets(engine.policyKeys().map((k) => engine.ruleset(k.slice(0, k.indexOf('/')), k.slice(k.indexOf('/') + 1))));
  };
  const metrics = createClusterMetrics({
    policies: () => op?.counts().policies ?? 0,
    rules: () => op?.counts().rules ?? 0,
    ipsets: () => sets().sets,
    ipsetEntries: () => (op ? op.counts().ipsetEntries + sets().ipBlockMembers : 0),
    queueDepth: () => op?.queue.length ?? 0,
    notProgrammed: () => op?.counts().notProgrammed ?? 0,
    invalid: () => op?.counts().invalid ?? 0,
    isLeader: () => (elector ? elector.isLeader() : op !== undefined),
  });
  const healthFlag = f['health-probe-bind-address'] as string | undefined;
  const server = await startEndpoints({
    kc,
    secure: f['metrics-secure'] !== false,
    ...(f['metrics-cert-dir'] ? { certDir: f['metrics-cert-dir'] as string } : {}),
    metrics: addr,
    ...(healthFlag ? { health: parseAddress(healthFlag, '--health-probe-bind-address') } : {}),
    path: '/cluster-metrics',
    registry: metrics.registry,
    // Live while the process runs; ready as a leader with synced caches, or as a standby candidate.
    probes: { '/healthz': () => true, '/readyz': () => (op ? op.isSynced() : elector !== undefined) },
    log,
  });
  log(server.summary);

  const workers = f.workers ? Number(f.workers) : 4;
  // OLM bundles cannot carry a DaemonSet: when asked, the leader creates and keeps the agents' one.
  if (f['manage-agent-daemonset'] && !f['agent-image']) {
    io.stderr('error: --manage-agent-daemonset needs --agent-image IMAGE\n');
    return 2;
  }
  let daemonsets: AgentDaemonSetManager | undefined;
  const lead = async () => {
    // The agents' liveness Leases: in the operator's namespace unless told (agents default the same way).
    const agentLeaseNamespace = (f['agent-lease-namespace'] as string | undefined) ?? process.env.POD_NAMESPACE ?? 'kube-npm-system';
    op = new NpmOperator({ kc, log, metrics, workers, agentLeaseNamespace });
    await op.start();
    log('caches synced; reconciling');
    if (f['manage-agent-daemonset']) {
      daemonsets = new AgentDaemonSetManager({
        kc,
        namespace: process.env.POD_NAMESPACE ?? (f['leader-election-namespace'] as string | undefined) ?? 'kube-system',
        image: f['agent-image'] as string,
        ...(process.env.OWNER_DEPLOYMENT ? { ownerDeployment: process.env.OWNER_DEPLOYMENT } : {}),
        log,
      });
      await daemonsets.start();
      log('managing the agent DaemonSet');
    }
  };
  let done: (code: number) => void = () => undefined;
  const finished = new Promise<number>((resolve) => (done = resolve));
  const shutdown = async (code: number) => {
    log(`shutting down (${code === 0 ? 'signal' : 'lost leadership'})`);
    await daemonsets?.stop().catch((e: unknown) => log(`stop: ${String(e)}`));
    await op?.stop().catch((e: unknown) => log(`stop: ${String(e)}`));
    op = undefined;
    if (code === 0) await elector?.stop();
    server.close();
    done(code);
  };
  process.once('SIGTERM', () => void shutdown(0));
  process.once('SIGINT', () => void shutdown(0));

  if (f['leader-elect'] === false) await lead();
  else {
    const seconds = (k: string, d: number) => (f[k] ? Number(f[k]) : d);
    elector = new LeaderElector({
      kc,
      namespace: (f['leader-election-namespace'] as string | undefined) ?? process.env.POD_NAMESPACE ?? 'kube-system',
      name: (f['lease-name'] as string | undefined) ?? 'kube-npm-operator',
      identity,
      leaseDurationSeconds: seconds('lease-duration-seconds', 15),
      renewDeadlineSeconds: seconds('renew-deadline-seconds', 10),
      retryPeriodSeconds: seconds('retry-period-seconds', 2),
      log,
    });
    void elector.run({
      onStartedLeading: async () => {
        log(`became leader as ${identity}`);
        await lead();
      },
      onStoppedLeading: () => {
        if (op) void shutdown(1);
      },
    });
  }
  return finished;
}
