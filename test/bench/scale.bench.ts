/**
 * npm run bench:scale -- --nodes N [--pods P] [--policies K] [--json FILE] [--idle-seconds S] [--source REV]
 *   [--pod-events E] [--trials T] [--agents-per-worker A] [--resync-seconds R] [--settle-ms M]
 *
 * Issue #10's instrument: the real kube-apiserver + etcd (hack/controlplane), the real operator
 * process, and N agents running the real AgentDaemon (informers, selection, planning, NpmNode
 * reporting) against fake kernels (test/bench/scale/agents.ts: A agents per worker process; node-0
 * alone in its own process so that its RSS is one agent's). Pods are spread over the nodes as a
 * kubelet would (Pod with spec.nodeName, then status.podIP/podIPs through the status subresource).
 * The cluster is the seeded generator's (test/bench/synthetic.ts), validated as `kube-npm
 * translate` validates its input. Figures, not pass/fail: each is printed beside its goal.
 *
 * How things are counted:
 *  - API writes and watch bytes: the API server's own /metrics (apiserver_request_total by verb and
 *    resource; apiserver_watch_events_sizes_sum by kind), diffed around each phase.
 *  - Agent wakeups: each agent's Converger.sync is wrapped (one call = one sync the daemon ran);
 *    syncs of the periodic full resync (forceFull) are counted apart and are not wakeups.
 *  - Per pod event, the background (periodic resync writes and what they cause, measured in the idle
 *    phase as a rate) is subtracted: `writes_per_pod_event` is net, `_raw` is as measured.
 *  - Operator: RSS (VmRSS) and CPU (utime+stime) of its process from /proc.
 * The operator and the agent workers run as plain JavaScript bundled from this source tree by
 * esbuild (tsx's own dependency) at the start: under tsx every process would carry a second V8
 * isolate for the loader thread (+100 MiB RSS measured), and dist/ may lag the source.
 */
import { fork, spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { copyFileSync, createWriteStream, mkdirSync, mkdtempSync, readFileSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { pathToFileURL } from 'node:url';
import { dirname, join } from 'node:path';
import { CoreV1Api, CustomObjectsApi, KubeConfig, NetworkingV1Api, type V1Pod } from '@kubernetes/client-node';
import { parse as parseYaml } from 'yaml';
import { GROUP, NODE_PLURAL, RULESET_PLURAL, VERSION } from '../../operator/src/api/types.js';
import type { NetworkPolicy, Pod } from '../../operator/src/translate/k8s.js';
import { startControlPlane, type ControlPlane } from '../support/controlplane.js';
import { REPO } from '../support/e2e.js';
import { diff, scraper, total } from './scale/apimetrics.js';
import { TrialTimeline, type Stamps } from './scale/timeline.js';
import { canRunRealAgent, measureRealAgent } from './scale/realagent.js';
import { procStat } from './scale/proc.js';
import type { WorkerStats } from './scale/agents.js';
import { rng, syntheticCluster, syntheticPod } from './synthetic.js';
import { assertValidSnapshot } from './validate.js';

// ------------------------------------------------------------------ options
export interface ScaleOptions {
  nodes: number;
  pods: number;
  policies: number;
  namespaces: number;
  idleSeconds: number;
  podEvents: number;
  trials: number;
  agentsPerWorker: number;
  resyncSeconds: number;
  settleMs: number;
  /**
   * 1 (default): the agents start right after the Nodes, before pods, policies and the operator,
   * as on a cluster whose DaemonSet runs before its workloads: they receive everything through their
   * watches. 0: they start after the operator wrote every NpmRuleSet and each begins with full
   * lists (every agent restarting at once: the API server serves N full lists).
   */
  agentsFirst: number;
  json?: string;
  /** A git revision whose operator/ is measured instead of the working tree. */
  source?: string;
}

export const DEFAULTS: ScaleOptions = { nodes: 100, pods: 10_000, policies: 1_000, namespaces: 100, idleSeconds: 60, podEvents: 50, trials: 50, agentsPerWorker: 25, resyncSeconds: 60, settleMs: 1000, agentsFirst: 1 };

/** `--nodes 10`, `--idle-seconds=30`, ...: every key of ScaleOptions in kebab case. */
export function parseScaleArgs(args: readonly string[]): ScaleOptions {
  const o: ScaleOptions = { ...DEFAULTS };
  const keys = new Map(Object.keys(DEFAULTS).concat('json', 'source').map((k) => [k.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`), k as keyof ScaleOptions]));
  for (let i = 0; i < args.length; i++) {
    const [name, inline] = args[i]!.startsWith('--') ? args[i]!.slice(2).split(/=(.*)/s, 2) : [args[i]!, undefined];
    const key = keys.get(name!);
    const v = inline ?? args[++i];
    if (!key || v === undefined) throw new Error(`bench:scale: unknown or incomplete argument ${args[i - (inline === undefined ? 1 : 0)]}`);
    if (key === 'json' || key === 'source') o[key] = v;
    else if (!Number.isFinite(Number(v)) || Number(v) < 0) throw new Error(`bench:scale: --${name} needs a number, not ${v}`);
    else o[key] = Number(v);
  }
  return o;
}
const CONCURRENCY = 24;

const GOALS = {
  idleWrites: 'goal 0 for npmrulesets, npmipsets, npmnodes',
  ratio: 'goal: N=10 vs N=100 ratio ≤ 1.2; at most the changed NpmIPSet shards + 1 NpmNode per node whose kernel changed',
  watch: 'goal: grows with the nodes that need the change, not with N',
  wakeups: 'goal: only the agents whose kernel state changes',
  programmed: { p50: 300, p99: 1000 },
  operatorRss: 300,
  agentRss: 80,
  operatorCpu: 1,
};

const log = (s: string) => console.log(`[${new Date().toISOString().slice(11, 19)}] ${s}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => pct(xs, 50);
function pct(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]!;
}
const met = (ok: boolean) => (ok ? 'met' : 'NOT met');
const nodeName = (i: number) => `node-${i}`;
/**
 * The node of pod i, as a scheduler would spread pods: pseudo-random per pod (seeded), so that a
 * namespace's pods land on many nodes. (The generator's own `node-${i % 100}` puts every pod of a
 * namespace on one node when N divides 100: each node would then concern only its namespaces.)
 */
const nodeOf = (i: number, n: number) => rng(i * 2654435761 + 17).int(n);

async function pool<T>(items: readonly T[], n: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: n }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

/** Retries a call the loaded API server refused for a moment (429, 5xx, timeouts). */
async function retry<T>(what: string, fn: () => Promise<T>): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      const code = (err as { code?: number }).code;
      if (i >= 5 || (code !== undefined && code < 500 && code !== 429)) throw new Error(`${what} failed`, { cause: err });
      await sleep(200 * 2 ** i);
    }
  }
}

// ------------------------------------------------------------------ processes
interface Worker {
  child: ChildProcess;
  nodes: string[];
  ready: Promise<void>;
  stats(): Promise<WorkerStats>;
}

/**
 * The operator and agent worker as plain JavaScript, bundled by esbuild from this tree or, with
 * `--source REV`, from that commit's operator/ (git archive into a temp dir; the worker and the fake
 * kernel are today's), so that one command measures before and after a product change. Bundles go
 * under the repo (their package imports resolve to node_modules), one dir per run.
 */
function bundle(rev: string | undefined): { agentsJs: string; operatorJs: string; source: { commit: string; uncommitted: string[] } } {
  const out = join(REPO, 'node_modules/.cache/kube-npm-scale', String(process.pid));
  const git = (args: string[]) => spawnSync('git', args, { cwd: REPO, encoding: 'utf8' });
  let cwd = REPO;
  let source: { commit: string; uncommitted: string[] };
  if (rev) {
    cwd = mkdtempSync(join(tmpdir(), 'knpm-scale-src-'));
    const commit = git(['rev-parse', '--short', `${rev}^{commit}`]).stdout.trim();
    if (!commit) throw new Error(`--source ${rev}: not a commit`);
    const tar = spawnSync('bash', ['-c', `git -C "${REPO}" archive ${commit} operator | tar -x -C "${cwd}"`], { encoding: 'utf8' });
    if (tar.status !== 0) throw new Error(`git archive ${commit} failed: ${tar.stderr}`);
    for (const f of ['test/bench/scale/agents.ts', 'test/unit/agent/fakekernel.ts']) {
      mkdirSync(dirname(join(cwd, f)), { recursive: true });
      copyFileSync(join(REPO, f), join(cwd, f));
    }
    source = { commit, uncommitted: [] };
  } else {
    source = { commit: git(['rev-parse', '--short', 'HEAD']).stdout.trim(), uncommitted: git(['status', '--porcelain', '--', 'operator/src']).stdout.split('\n').filter(Boolean) };
  }
  const r = spawnSync(
    join(REPO, 'node_modules/.bin/esbuild'),
    ['test/bench/scale/agents.ts', 'operator/src/cli/main.ts', '--bundle', '--platform=node', '--format=esm', '--target=node20', '--packages=external', `--outdir=${out}`, '--outbase=.', '--out-extension:.js=.mjs', '--log-level=warning'],
    { cwd, encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`esbuild failed (${r.status}): ${r.stderr}`);
  if (cwd !== REPO) rmSync(cwd, { recursive: true, force: true });
  return { agentsJs: join(out, 'test/bench/scale/agents.mjs'), operatorJs: join(out, 'operator/src/cli/main.mjs'), source };
}

/**
 * How a shipped manifest runs node (config/agent/daemonset.yaml, config/manager/deployment.yaml):
 * the node flags of its container's NODE_OPTIONS and its malloc tuning (MALLOC_* env). The bench
 * runs the operator and the agents as the manifests deploy them, read from them, not copied here.
 */
export function shippedRuntime(manifest: string): { nodeFlags: string[]; env: Record<string, string> } {
  type Env = { name: string; value?: string }[];
  const doc = parseYaml(readFileSync(join(REPO, manifest), 'utf8')) as { spec: { template: { spec: { containers: { env?: Env }[] } } } };
  const env = doc.spec.template.spec.containers[0]?.env ?? [];
  return {
    nodeFlags: (env.find((e) => e.name === 'NODE_OPTIONS')?.value ?? '').split(' ').filter(Boolean),
    env: Object.fromEntries(env.filter((e) => e.name.startsWith('MALLOC_') && e.value !== undefined).map((e) => [e.name, e.value!])),
  };
}
export const AGENT_MANIFEST = 'config/agent/daemonset.yaml';
export const OPERATOR_MANIFEST = 'config/manager/deployment.yaml';

/**
 * Node flags for a process that hosts `agents` agents: the shipped ones, with the old-space limit
 * (one agent's heap budget in the DaemonSet) multiplied by the agents sharing the process (25
 * agents under one agent's 256 MiB ran out of heap).
 */
export function workerNodeFlags(shipped: readonly string[], agents: number): string[] {
  return shipped.map((f) => {
    const m = /^--max-old-space-size=(\d+)$/.exec(f);
    return m ? `--max-old-space-size=${Number(m[1]) * agents}` : f;
  });
}

/** Set while a bench runs: stops its processes and control plane (an agent worker died). */
let onWorkerDeath: (() => Promise<void>) | undefined;

function startWorker(cp: ControlPlane, agentsJs: string, nodes: string[], index: number, resyncSeconds: number): Worker {
  const out = createWriteStream(join(cp.dir, `agents-${index}.log`));
  const child = fork(agentsJs, [cp.kubeconfigPath, nodes.join(',')], {
    // The shipped DaemonSet's NODE_OPTIONS (heap limit per agent), then SCALE_AGENT_NODE_FLAGS: more
    // node flags for the agent processes (e.g. --cpu-prof --cpu-prof-dir=D).
    execArgv: [...workerNodeFlags(shippedRuntime(AGENT_MANIFEST).nodeFlags, nodes.length), ...(process.env.SCALE_AGENT_NODE_FLAGS ?? '').split(' ').filter(Boolean)],
    env: { ...process.env, ...shippedRuntime(AGENT_MANIFEST).env, SCALE_RESYNC_MS: String(resyncSeconds * 1000) },
    stdio: ['ignore', 'pipe', 'pipe', 'ipc'],
  });
  child.stdout!.pipe(out);
  child.stderr!.pipe(out);
  let pending: ((s: WorkerStats) => void)[] = [];
  const ready = new Promise<void>((resolve, reject) => {
    child.on('message', (m: { type: string }) => {
      if (m.type === 'ready') resolve();
      if (m.type === 'stats') {
        const p = pending;
        pending = [];
        for (const r of p) r(m as WorkerStats);
      }
    });
    child.once('exit', (code) => reject(new Error(`agent worker ${index} exited with ${code} (log: ${cp.dir}/agents-${index}.log)`)));
  });
  // A worker dying later (out of memory, say) would leave its nodes silent and the bench waiting
  // for them forever: stop with its log instead. The bench's own stop sends 'stop' first.
  child.once('exit', (code, signal) => {
    if (code === 0 || !onWorkerDeath) return;
    process.stderr.write(`agent worker ${index} (${nodes.length} agents) died (exit ${code}${signal ? `, ${signal}` : ''}); its log: ${cp.dir}/agents-${index}.log\n`);
    void onWorkerDeath().finally(() => process.exit(1));
  });
  return {
    child,
    nodes,
    ready,
    stats: () =>
      new Promise((resolve) => {
        pending.push(resolve);
        child.send({ type: 'stats' });
      }),
  };
}

// ------------------------------------------------------------------ main
interface SyncTotals {
  event: number;
  full: number;
  perNode: Record<string, number>;
  /** Per node: event syncs that changed its kernel. */
  changedPerNode: Record<string, number>;
}

export async function runScaleBench(o: ScaleOptions): Promise<ScaleResult> {
  const { nodes: N, pods: P, policies: K, namespaces: NAMESPACES, idleSeconds: IDLE_S, podEvents: POD_EVENTS, trials: TRIALS, agentsPerWorker: PER_WORKER, resyncSeconds: RESYNC_S, settleMs: SETTLE_MS, agentsFirst: AGENTS_FIRST } = o;
  const t0 = Date.now();
  const built = bundle(o.source);
  log(`measuring the product of ${built.source.commit}${built.source.uncommitted.length ? ` with uncommitted changes in ${built.source.uncommitted.length} file(s)` : ''}`);
  // The generator places pod i on node-(i % 100): spread them over N nodes instead.
  const snap = syntheticCluster({ namespaces: NAMESPACES, pods: P, policies: K + TRIALS, seed: 42 });
  for (const p of snap.pods) p.spec!.nodeName = nodeName(nodeOf(Number(p.metadata.name!.slice(4)), N));
  assertValidSnapshot(snap, `synthetic ${P} pods x ${K + TRIALS} policies`);
  const trialPolicies = snap.policies.splice(K);
  log(`bench:scale N=${N} nodes, P=${P} pods, K=${K} policies in ${NAMESPACES} namespaces (+${TRIALS} trial policies); input valid`);

  const cp = await startControlPlane({ log: () => undefined });
  const children: ChildProcess[] = [];
  const workers: Worker[] = [];
  onWorkerDeath = async () => {
    onWorkerDeath = undefined;
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    await cp.stop();
  };
  try {
    const kc = new KubeConfig();
    kc.loadFromFile(cp.kubeconfigPath);
    const core = kc.makeApiClient(CoreV1Api);
    const net = kc.makeApiClient(NetworkingV1Api);
    const custom = kc.makeApiClient(CustomObjectsApi);
    const scrape = scraper(cp.server, cp.token, cp.caPem);
    log(`control plane up at ${cp.server} (${((Date.now() - t0) / 1000).toFixed(0)} s)`);

    // Nodes, namespaces, pods (created, then made Running with an address, as a kubelet would), policies.
    await pool(Array.from({ length: N }, (_, i) => i), CONCURRENCY, async (i) => {
      await retry('create node', () => core.createNode({ body: { apiVersion: 'v1', kind: 'Node', metadata: { name: nodeName(i), labels: { 'kubernetes.io/hostname': nodeName(i) } } } }));
    });
    // The agents: node-0 alone (its RSS is one agent's), the others PER_WORKER to a process.
    const startAgents = async () => {
      const names = Array.from({ length: N }, (_, i) => nodeName(i));
      const groups = [names.slice(0, 1)];
      for (let i = 1; i < N; i += PER_WORKER) groups.push(names.slice(i, i + PER_WORKER));
      groups.forEach((g, i) => workers.push(startWorker(cp, built.agentsJs, g, i, RESYNC_S)));
      children.push(...workers.map((w) => w.child));
      await Promise.all(workers.map((w) => w.ready));
      log(`${N} agents started in ${workers.length} processes (${((Date.now() - t0) / 1000).toFixed(0)} s)`);
    };
    if (AGENTS_FIRST) await startAgents();
    await pool(snap.namespaces, CONCURRENCY, async (ns) => void (await retry('create namespace', () => core.createNamespace({ body: { apiVersion: 'v1', kind: 'Namespace', ...ns } as never }))));
    const createPod = async (p: Pod): Promise<void> => {
      const ip = p.status!.podIP!;
      const body = { apiVersion: 'v1', kind: 'Pod', metadata: { name: p.metadata.name, namespace: p.metadata.namespace, labels: p.metadata.labels }, spec: { ...p.spec, containers: p.spec!.containers!.map((c) => ({ ...c, image: 'registry.k8s.io/pause:3.10' })) } } as V1Pod;
      const created = await retry('create pod', () => core.createNamespacedPod({ namespace: p.metadata.namespace!, body }));
      created.status = { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] };
      await retry('pod status', () => core.replaceNamespacedPodStatus({ name: p.metadata.name!, namespace: p.metadata.namespace!, body: created }));
    };
    let done = 0;
    await pool(snap.pods, CONCURRENCY, async (p) => {
      await createPod(p);
      if (++done % 2000 === 0) log(`  ${done}/${P} pods running`);
    });
    const createPolicy = (np: NetworkPolicy) => retry('create policy', () => net.createNamespacedNetworkPolicy({ namespace: np.metadata.namespace!, body: { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: np.metadata.name, namespace: np.metadata.namespace }, spec: np.spec } as never }));
    await pool(snap.policies, CONCURRENCY, async (np) => void (await createPolicy(np)));
    log(`cluster created: ${N} nodes, ${P} pods, ${K} policies (${((Date.now() - t0) / 1000).toFixed(0)} s)`);

    // The operator: the real CLI process (bundled from source, like the agents).
    const opLog = createWriteStream(join(cp.dir, 'operator.log'));
    // With the shipped Deployment's node flags and malloc tuning (its memory figures are the product's).
    const opRuntime = shippedRuntime(OPERATOR_MANIFEST);
    // SCALE_OPERATOR_NODE_FLAGS: more node flags for the operator (e.g. --cpu-prof --cpu-prof-dir=D).
    const opExtra = (process.env.SCALE_OPERATOR_NODE_FLAGS ?? '').split(' ').filter(Boolean);
    const op = spawn(process.execPath, [...opRuntime.nodeFlags, ...opExtra, built.operatorJs, 'operator', '--kubeconfig', cp.kubeconfigPath, '--metrics-bind-address', '127.0.0.1:0', '--metrics-secure=false', '--leader-election-namespace', 'kube-system', '--agent-lease-namespace', 'kube-system'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...opRuntime.env } });
    children.push(op);
    op.stdout!.pipe(opLog);
    op.stderr!.pipe(opLog);
    op.once('exit', (code) => log(`operator exited with ${code} (log: ${cp.dir}/operator.log)`));

    const listRuleSets = async () => (await custom.listCustomObjectForAllNamespaces({ group: GROUP, version: VERSION, plural: RULESET_PLURAL })) as { items: { metadata: { namespace: string; name: string }; status?: { conditions?: { type: string; status: string; reason?: string }[] } }[] };
    const programmed = (rs: { status?: { conditions?: { type: string; status: string }[] } }) => rs.status?.conditions?.some((c) => c.type === 'Programmed' && c.status === 'True') ?? false;
    const until = async (what: string, fn: () => Promise<string | true>, timeoutMs: number, everyMs = 2000) => {
      const end = Date.now() + timeoutMs;
      let last = '';
      while (Date.now() < end) {
        const r = await fn().catch((err: unknown) => `error: ${String(err).split('\n').slice(0, 3).join(' ').slice(0, 300)}`);
        if (r === true) return;
        if (r !== last) log(`  waiting for ${what}: ${r}`);
        last = r;
        await sleep(everyMs);
      }
      throw new Error(`timed out waiting for ${what}: ${last}`);
    };
    await until('operator: one NpmRuleSet per policy', async () => {
      const n = (await listRuleSets()).items.length;
      return n >= K ? true : `${n}/${K}`;
    }, 300_000);
    log(`operator wrote ${K} NpmRuleSets (${((Date.now() - t0) / 1000).toFixed(0)} s)`);

    if (!AGENTS_FIRST) await startAgents();

    await until('every NpmRuleSet Programmed', async () => {
      const items = (await listRuleSets()).items;
      const n = items.filter(programmed).length;
      if (n === items.length && n >= K) return true;
      // What the agents report, so that a stall says where it is.
      const nodes = (await custom.listClusterCustomObject({ group: GROUP, version: VERSION, plural: NODE_PLURAL })) as { items: { status?: { applied?: unknown[]; lastError?: string } }[] };
      const applied = nodes.items.map((x) => x.status?.applied?.length ?? 0);
      const errors = nodes.items.filter((x) => x.status?.lastError).length;
      return `${n}/${items.length}; ${nodes.items.length} NpmNodes, rulesets applied per node min ${Math.min(...applied)} max ${Math.max(...applied)}, ${errors} with lastError`;
    }, 600_000, 3000);
    const settledAt = Date.now();
    log(`all ${K} NpmRuleSets Programmed (${((settledAt - t0) / 1000).toFixed(0)} s)`);

    const syncTotals = async (): Promise<SyncTotals> => {
      const perNode: Record<string, number> = {};
      const changedPerNode: Record<string, number> = {};
      let ev = 0;
      let full = 0;
      for (const s of await Promise.all(workers.map((w) => w.stats()))) {
        for (const [n, c] of Object.entries(s.syncs)) {
          perNode[n] = c.event;
          changedPerNode[n] = c.changed;
          ev += c.event;
          full += c.full;
        }
      }
      return { event: ev, full, perNode, changedPerNode };
    };

    // ---------------------------------------------------------------- idle
    await sleep(Math.min(5000, SETTLE_MS * 3)); // let the last status writes land
    const idleA = await scrape();
    const opA = procStat(op.pid!);
    const syncA = await syncTotals();
    const idleT0 = Date.now();
    log(`idle window: ${IDLE_S} s with no change`);
    await sleep(IDLE_S * 1000);
    const idleB = await scrape();
    const opB = procStat(op.pid!);
    const syncB = await syncTotals();
    const idleMin = (Date.now() - idleT0) / 60_000;
    const perMin = (r: Record<string, number>) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, round(v / idleMin)]));
    const idleWritesRaw = diff(idleA.writes, idleB.writes);
    const heartbeat = Object.entries(idleWritesRaw).filter(([k]) => k.startsWith('leases')).reduce((a, [, v]) => a + v, 0);
    const idleWrites = perMin(Object.fromEntries(Object.entries(idleWritesRaw).filter(([k]) => !k.startsWith('leases'))));
    const idleWatch = diff(idleA.watchBytes, idleB.watchBytes);
    const operatorCpuIdle = (opB.cpuS - opA.cpuS) / idleMin;
    const idleSyncs = { event: syncB.event - syncA.event, full: syncB.full - syncA.full };
    const operatorIdle = opB;
    // Printed as soon as measured: a long run that is stopped later still gives these.
    log(`idle: writes/min ${JSON.stringify(idleWrites)}, lease writes/min ${round(heartbeat / idleMin)}, agent syncs ${JSON.stringify(idleSyncs)}, operator CPU ${round(operatorCpuIdle)} s/min, RSS ${round(opB.rssMiB)} MiB`);

    // ---------------------------------------------------------------- pod events
    log(`pod events: ${POD_EVENTS} pod adds, one at a time`);
    const rate = (r: Record<string, number>, ms: number) => Object.fromEntries(Object.entries(r).map(([k, v]) => [k, (v / (idleMin * 60_000)) * ms]));
    const bgWritesPerMs = rate(diff(idleA.writes, idleB.writes), 1);
    const bgWatchPerMs = rate(idleWatch, 1);
    const events: { writes: Record<string, number>; watch: Record<string, number>; wakeups: number; woken: number; changed: number; fullSyncs: number; ms: number }[] = [];
    const nodesWith = (a: Record<string, number>, b: Record<string, number>) => Object.keys(b).filter((n) => (b[n] ?? 0) > (a[n] ?? 0)).length;
    for (let j = 0; j < POD_EVENTS; j++) {
      const p = syntheticPod(P + j, NAMESPACES);
      p.spec!.nodeName = nodeName(nodeOf(P + j, N));
      const a = await scrape();
      const sa = await syncTotals();
      const ta = Date.now();
      await createPod(p);
      // Settled: no agent woke for SETTLE_MS (a pod event's chain: operator -> NpmIPSet -> agents ->
      // NpmNode -> operator status), then one more SETTLE_MS for the operator's status writes.
      let last = sa.event;
      let quietSince = Date.now();
      while (Date.now() - quietSince < SETTLE_MS && Date.now() - ta < 30_000) {
        await sleep(100);
        const s = (await syncTotals()).event;
        if (s !== last) {
          last = s;
          quietSince = Date.now();
        }
      }
      await sleep(SETTLE_MS);
      const b = await scrape();
      const sb = await syncTotals();
      events.push({ writes: diff(a.writes, b.writes), watch: diff(a.watchBytes, b.watchBytes), wakeups: sb.event - sa.event, woken: nodesWith(sa.perNode, sb.perNode), changed: nodesWith(sa.changedPerNode, sb.changedPerNode), fullSyncs: sb.full - sa.full, ms: Date.now() - ta });
      const e = events[events.length - 1]!;
      log(`  pod add ${j + 1}/${POD_EVENTS}: ${e.ms} ms, syncs ${e.wakeups} on ${e.woken} agents, kernel changed on ${e.changed} (+${e.fullSyncs} periodic), writes ${JSON.stringify(e.writes)}, watch bytes ${total(e.watch)}`);
    }
    const medianBy = (rs: Record<string, number>[]) => {
      const keys = new Set(rs.flatMap((r) => Object.keys(r)));
      return Object.fromEntries([...keys].sort().map((k) => [k, median(rs.map((r) => r[k] ?? 0))]));
    };
    const netOf = (e: (typeof events)[number], r: Record<string, number>, bg: Record<string, number>) =>
      Object.fromEntries(Object.entries(r).map(([k, v]) => [k, Math.max(0, v - (bg[k] ?? 0) * e.ms)]));
    const writesRaw = medianBy(events.map((e) => e.writes));
    const writesNet = medianBy(events.map((e) => netOf(e, e.writes, bgWritesPerMs)));
    const watchRaw = medianBy(events.map((e) => e.watch));
    const watchNet = medianBy(events.map((e) => netOf(e, e.watch, bgWatchPerMs)));
    const wakeups = median(events.map((e) => e.wakeups));
    const woken = median(events.map((e) => e.woken));
    const changedAgents = median(events.map((e) => e.changed));
    // The goal's unit: NpmNode writes per agent whose kernel the event changed (≤ 1 is the goal).
    const nodeWritesPerChanged = median(events.filter((e) => e.changed > 0).map((e) => (e.writes['npmnodes/status'] ?? 0) / e.changed));
    // Leases are heartbeats (reported apart): the agents renew theirs in bursts that land in some
    // event windows and not others, which would make the total noise.
    const writesNetTotal = median(events.map((e) => { const n = netOf(e, e.writes, bgWritesPerMs); return total(n) - (n['leases'] ?? 0) - (e.writes['pods'] ?? 0) - (e.writes['pods/status'] ?? 0); }));

    // ---------------------------------------------------------------- policy trials
    log(`policy trials: ${TRIALS} NetworkPolicy creates, each until its NpmRuleSet is Programmed`);
    const trialMs: number[] = [];
    const reasons: Record<string, number> = {};
    const timeline = new TrialTimeline(new Set(trialPolicies.map((np) => `${np.metadata.namespace}/${np.metadata.name}`)));
    // What one agent sync costs: the agent processes' CPU over the trials per sync they ran. On 2
    // cores the N simulated agents queue for CPU; a real agent has its node's CPU to itself.
    const workerCpu = () => workers.reduce((a, w) => a + (w.child.exitCode === null ? procStat(w.child.pid!).cpuS : 0), 0);
    const cpuA = workerCpu();
    const syncsA = await syncTotals();
    await timeline.start(cp.kubeconfigPath);
    const stages: Record<keyof Stamps, number[]> = { written: [], labelled: [], reported: [], programmed: [] };
    for (const np of trialPolicies) {
      const ta = performance.now();
      await createPolicy(np);
      for (;;) {
        const rs = (await custom.getNamespacedCustomObject({ group: GROUP, version: VERSION, plural: RULESET_PLURAL, namespace: np.metadata.namespace!, name: np.metadata.name! }).catch(() => undefined)) as
          | { status?: { conditions?: { type: string; status: string; reason?: string }[] } }
          | undefined;
        const c = rs?.status?.conditions?.find((x) => x.type === 'Programmed' && x.status === 'True');
        if (c) {
          trialMs.push(performance.now() - ta);
          await sleep(50); // the timeline's watch may trail our GET
          const st = timeline.get(`${np.metadata.namespace}/${np.metadata.name}`);
          for (const k of Object.keys(stages) as (keyof Stamps)[]) if (st[k] !== undefined) stages[k].push(st[k]! - ta);
          reasons[c.reason ?? '?'] = (reasons[c.reason ?? '?'] ?? 0) + 1;
          break;
        }
        if (performance.now() - ta > 60_000) throw new Error(`NpmRuleSet ${np.metadata.namespace}/${np.metadata.name} not Programmed after 60 s`);
        await sleep(25);
      }
    }
    timeline.stop();
    const syncsB = await syncTotals();
    const trialSyncs = syncsB.event + syncsB.full - syncsA.event - syncsA.full;
    const agentCpuMsPerSync = trialSyncs ? ((workerCpu() - cpuA) * 1000) / trialSyncs : NaN;
    log(`policy trials: ${trialSyncs} agent syncs, ${round(agentCpuMsPerSync)} ms of agent CPU per sync (JSON, informers, planning, fake kernel)`);
    const stageMs = Object.fromEntries(Object.entries(stages).map(([k, v]) => [k, { p50: round(pct(v, 50)), p99: round(pct(v, 99)), n: v.length }]));
    log(`policy trials: Programmed p50 ${round(pct(trialMs, 50))} ms; stages since create (p50/p99 ms): ${Object.entries(stageMs).map(([k, v]) => `${k} ${v.p50}/${v.p99}`).join(', ')}`);

    // ---------------------------------------------------------------- memory
    const agent0 = await workers[0]!.stats();
    const agentProc = procStat(workers[0]!.child.pid!);
    const opEnd = procStat(op.pid!);
    // One real agent process (dist/, real kernel in a bench netns) in place of the simulated node-0.
    let realAgent: Record<string, unknown> = { skipped: o.source ? 'measured only for the working tree (dist/), not --source' : canRunRealAgent(REPO) };
    if (!realAgent.skipped) {
      workers[0]!.child.send({ type: 'stop' });
      await new Promise((r) => (workers[0]!.child.exitCode !== null ? r(undefined) : workers[0]!.child.once('exit', r)));
      // As shipped (the DaemonSet's NODE_OPTIONS), then with node's defaults for comparison.
      for (const [key, rt] of [['shipped', shippedRuntime(AGENT_MANIFEST)], ['node_defaults', { nodeFlags: [], env: {} }]] as const) {
        const m = await measureRealAgent({ repo: REPO, kubeconfig: cp.kubeconfigPath, node: nodeName(0), nodeFlags: [...rt.nodeFlags], env: rt.env, log });
        const flags = [...Object.entries(rt.env).map(([k, v]) => `${k}=${v}`), ...rt.nodeFlags].join(' ');
        realAgent = { ...realAgent, [key]: { rss_mib: round(m.rssMiB), peak_rss_mib: round(m.hwmMiB), node_flags: flags, synced: m.synced } };
      }
    }

    const result = {
      source: built.source,
      node_runtime: { operator: shippedRuntime(OPERATOR_MANIFEST), agents: shippedRuntime(AGENT_MANIFEST), scale_agent_node_flags: process.env.SCALE_AGENT_NODE_FLAGS ?? '' },
      nodes: N,
      pods: P,
      policies: K,
      namespaces: NAMESPACES,
      idle_seconds: IDLE_S,
      resync_seconds: RESYNC_S,
      agents_first: AGENTS_FIRST,
      idle_writes_per_min: idleWrites,
      heartbeat_writes_per_min: round(heartbeat / idleMin),
      idle_agent_syncs_per_min: { event: round(idleSyncs.event / idleMin), periodic_full: round(idleSyncs.full / idleMin) },
      idle_watch_bytes_per_min: perMin(idleWatch),
      writes_per_pod_event: writesNet,
      writes_per_pod_event_total: writesNetTotal,
      writes_per_pod_event_raw: writesRaw,
      watch_bytes_per_pod_event: watchNet,
      watch_bytes_per_pod_event_total: round(total(watchNet)),
      watch_bytes_per_pod_event_raw: watchRaw,
      agent_wakeups_per_pod_event: wakeups,
      agents_woken_per_pod_event: woken,
      agents_kernel_changed_per_pod_event: changedAgents,
      npmnode_writes_per_changed_agent: round(nodeWritesPerChanged),
      pod_event_window_ms: median(events.map((e) => e.ms)),
      policy_programmed_ms: { p50: round(pct(trialMs, 50)), p99: round(pct(trialMs, 99)), trials: trialMs.length, reasons },
      policy_programmed_stages_ms: stageMs,
      agent_cpu_ms_per_sync: round(agentCpuMsPerSync),
      operator_rss_mib: round(operatorIdle.rssMiB),
      operator_rss_mib_end: round(opEnd.rssMiB),
      operator_peak_rss_mib: round(opEnd.hwmMiB),
      operator_cpu_s_per_min_idle: round(operatorCpuIdle),
      agent_rss_mib: round(agentProc.rssMiB),
      agent_peak_rss_mib: round(agentProc.hwmMiB),
      agent_heap_used_mib: round(agent0.heapUsedBytes / 1048576),
      real_agent: realAgent,
      bench_seconds: round((Date.now() - t0) / 1000),
    };
    return result;
  } finally {
    onWorkerDeath = undefined; // stopping now: a worker's exit is expected
    for (const w of workers) if (w.child.exitCode === null) w.child.send({ type: 'stop' });
    await sleep(500);
    for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
    await cp.stop();
  }
}

function round(x: number): number {
  return Math.round(x * 100) / 100;
}

export type ScaleResult = Record<string, unknown> & {
  idle_writes_per_min: Record<string, number>;
  writes_per_pod_event: Record<string, number>;
  policy_programmed_ms: { p50: number; p99: number };
};

function report(r: ScaleResult): void {
  const fmt = (o: unknown) => JSON.stringify(o);
  const npm = ['npmrulesets', 'npmipsets', 'npmnodes'];
  const idleNpm = Object.entries(r.idle_writes_per_min).filter(([k]) => npm.some((n) => k.startsWith(n))).reduce((a, [, v]) => a + v, 0);
  console.log(`\nbench:scale results (N=${r.nodes}, P=${r.pods}, K=${r.policies}; periodic resync ${r.resync_seconds} s)`);
  console.log(`  idle_writes_per_min: ${fmt(r.idle_writes_per_min)} — NpmRuleSet+NpmIPSet+NpmNode ${idleNpm}/min; ${GOALS.idleWrites}: ${met(idleNpm === 0)}`);
  console.log(`  heartbeat_writes_per_min (all Lease writes: the agents' liveness Leases, the operator's leader lease, the API server's identity leases): ${r.heartbeat_writes_per_min}`);
  console.log(`  idle agent syncs/min: ${fmt(r.idle_agent_syncs_per_min)}; idle watch bytes/min by kind: ${fmt(r.idle_watch_bytes_per_min)}`);
  console.log(`  writes_per_pod_event (median of pod adds, background subtracted): ${fmt(r.writes_per_pod_event)}; excluding the pod's own 2 and Lease renewals: ${r.writes_per_pod_event_total}`);
  console.log(`    raw: ${fmt(r.writes_per_pod_event_raw)}; ${GOALS.ratio} (compare the N=10 run)`);
  console.log(`  watch_bytes_per_pod_event: ${fmt(r.watch_bytes_per_pod_event)} (total ${r.watch_bytes_per_pod_event_total} B); ${GOALS.watch}`);
  console.log(`  agent_wakeups_per_pod_event: ${r.agent_wakeups_per_pod_event} syncs on ${r.agents_woken_per_pod_event} of ${r.nodes} agents, whose kernel changed on ${r.agents_kernel_changed_per_pod_event} (medians); ${GOALS.wakeups}`);
  console.log(`  npmnode_writes_per_changed_agent: ${r.npmnode_writes_per_changed_agent} (median; goal ≤ 1)`);
  const pp = r.policy_programmed_ms;
  console.log(`  policy_programmed_ms: p50 ${pp.p50} (goal ≤ ${GOALS.programmed.p50}: ${met(pp.p50 <= GOALS.programmed.p50)}; Cilium's CI gate 100), p99 ${pp.p99} (goal ≤ ${GOALS.programmed.p99}: ${met(pp.p99 <= GOALS.programmed.p99)}); ${fmt(r.policy_programmed_ms)}`);
  console.log(`  operator_rss_mib: ${r.operator_rss_mib} after idle, ${r.operator_rss_mib_end} at the end, peak ${r.operator_peak_rss_mib} (goal ≤ ${GOALS.operatorRss}: ${met((r.operator_peak_rss_mib as number) <= GOALS.operatorRss)})`);
  console.log(`  operator_cpu_s_per_min_idle: ${r.operator_cpu_s_per_min_idle} (goal ≤ ${GOALS.operatorCpu}: ${met((r.operator_cpu_s_per_min_idle as number) <= GOALS.operatorCpu)})`);
  console.log(`  agent_rss_mib (simulated node-0: the daemon and a fake kernel in one process): ${r.agent_rss_mib} (peak ${r.agent_peak_rss_mib}, heap used ${r.agent_heap_used_mib})`);
  type RealAgentRun = { rss_mib: number; peak_rss_mib: number; node_flags: string; synced: string };
  const ra = r.real_agent as { skipped?: string; shipped?: RealAgentRun; node_defaults?: RealAgentRun };
  if (ra.skipped) console.log(`  real agent: not measured (${ra.skipped})`);
  else {
    console.log(`  real agent (kube-npm agent, node-0, real kernel in a netns, node ${ra.shipped!.node_flags || 'defaults'} as shipped): RSS ${ra.shipped!.rss_mib} MiB, peak ${ra.shipped!.peak_rss_mib} (goal ≤ ${GOALS.agentRss}: ${met(ra.shipped!.rss_mib <= GOALS.agentRss)}); ${ra.shipped!.synced}`);
    console.log(`    with node's defaults: RSS ${ra.node_defaults!.rss_mib} MiB, peak ${ra.node_defaults!.peak_rss_mib}`);
  }
  console.log(`  bench took ${r.bench_seconds} s`);
}

// Run as a script (npm run bench:scale); imported by the smoke test, it only exports.
if (process.argv[1] && import.meta.url === pathToFileURL(realpathSync(process.argv[1])).href) {
  const opts = parseScaleArgs(process.argv.slice(2));
  runScaleBench(opts).then(
    (r) => {
      report(r);
      if (opts.json) writeFileSync(opts.json, `${JSON.stringify(r, null, 2)}\n`);
    },
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}
