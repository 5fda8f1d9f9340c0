/**
 * npm run bench:agent-memory -- [--nodes N] [--pods P] [--policies K] [--namespaces NS] [--node I]
 *   [--heap-snapshot FILE] [--untrimmed] [--paged-trim]
 * npm run bench:agent-memory -- --apiserver [--pods P] [--policies K] [--local L] [--events E] [--dist DIR]
 *   (after `npm run build`, as root: a REAL agent process, see realAgent() below)
 *   (tsx test/bench/agent-memory.bench.ts ...: bundles itself with esbuild and measures in a plain
 *   `node --expose-gc` child, as bench:scale runs its agents; AGENT_MEMORY_NODE_FLAGS: more node
 *   flags for that child, e.g. "--max-old-space-size=64")
 *
 * Where one agent's memory goes at scale (issue #10: agent RSS ≤ 80 MiB at P=10,000, K=1,000).
 * Figures, no timed assertion. No API server: the seeded synthetic cluster (test/bench/synthetic.ts,
 * pods spread over N nodes as bench:scale spreads them) is translated in-process as the operator
 * would (translate/engine.ts), its NpmRuleSets and NpmIPSets labelled for the nodes that program
 * them (ADR 0011), and served to ONE real AgentDaemon (node-I) through its transport seam: the
 * list returns what a label/field-selected list would, as freshly parsed JSON (no shared objects),
 * and the watch stays open without events. Objects carry what the API server adds (managedFields,
 * resourceVersion, creationTimestamp, uid; pods as a kubelet reports them: conditions, container
 * statuses, the defaulted spec with its service-account volume), so the caches hold what a real
 * agent's caches hold. The kernel is the in-process fake (test/unit/agent/fakekernel.ts): it is
 * released FIRST and its share printed apart, since a real agent's kernel state lives in the kernel.
 *
 * Printed after the first sync (and a forced GC): process.memoryUsage() (rss, heapUsed, external,
 * arrayBuffers), V8 heap spaces; then the retained heap of each cache, measured by releasing the
 * caches one after another (GC, heapUsed difference): the order matters only where two caches
 * share objects, and the later one is then charged only what is left.
 */
import { spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { writeHeapSnapshot, getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { AgentDaemon } from '../../operator/src/agent/daemon.js';
import { Converger } from '../../operator/src/agent/converge.js';
import { realClock } from '../../operator/src/agent/exec.js';
import { API_VERSION, IPSET_KIND, RULESET_KIND, type NpmIPSet, type NpmRuleSet } from '../../operator/src/api/types.js';
import { withNodeLabels } from '../../operator/src/controller/nodelabels.js';
import type { ListFn, WatchFn } from '../../operator/src/framework/informer.js';
import type { ResourceRef } from '../../operator/src/framework/kube.js';
import { translate } from '../../operator/src/translate/engine.js';
import type { NetworkPolicy, Pod } from '../../operator/src/translate/k8s.js';
import { FakeKernel } from '../unit/agent/fakekernel.js';
import { REPO } from '../support/e2e.js';
import { rng, syntheticCluster } from './synthetic.js';

interface Options {
  nodes: number;
  pods: number;
  policies: number;
  namespaces: number;
  node: number;
  heapSnapshot?: string;
  /** Informers without their transforms: the agent as before the trim. */
  untrimmed?: boolean;
  /** The transform applied to each list page as it arrives (a proposed listObjects option). */
  pagedTrim?: boolean;
  /** realAgent(): the built CLI against a real API server instead of the in-process daemon. */
  apiserver?: boolean;
  /** realAgent(): the build to run (its operator/src/cli/main.js); default the repository's dist. */
  dist?: string;
  /** realAgent(): pods on the agent's node (the first L); the others on nine other nodes. */
  local?: number;
  /** realAgent(): pod adds on the agent's node after its first sync (CPU per add). */
  events: number;
}

function parseArgs(args: readonly string[]): Options {
  const o: Options = { nodes: 10, pods: 10_000, policies: 1_000, namespaces: 100, node: 0, events: 20 };
  for (let i = 0; i < args.length; i += 2) {
    if (args[i] === '--untrimmed' || args[i] === '--paged-trim' || args[i] === '--apiserver') {
      o[args[i] === '--untrimmed' ? 'untrimmed' : args[i] === '--paged-trim' ? 'pagedTrim' : 'apiserver'] = true;
      i--;
      continue;
    }
    const [k, v] = [args[i]!, args[i + 1]];
    if (v === undefined) throw new Error(`bench:agent-memory: ${k} needs a value`);
    if (k === '--heap-snapshot') o.heapSnapshot = v;
    else if (k === '--dist') o.dist = v;
    else if (['--nodes', '--pods', '--policies', '--namespaces', '--node', '--local', '--events'].includes(k) && Number.isInteger(Number(v)) && Number(v) >= 0) {
      (o as unknown as Record<string, number>)[k.slice(2)] = Number(v);
    } else throw new Error(`bench:agent-memory: unknown argument or bad value: ${k} ${v}`);
  }
  return o;
}

const MiB = (b: number) => (b / 1048576).toFixed(1);
/** Same placement as bench:scale (scale.bench.ts nodeOf): seeded pseudo-random per pod. */
const nodeOf = (i: number, n: number) => rng(i * 2654435761 + 17).int(n);
const gc = (): void => {
  const g = (globalThis as { gc?: () => void }).gc;
  if (!g) throw new Error('run with node --expose-gc (npm run bench:agent-memory does)');
  for (let i = 0; i < 3; i++) g();
};
const heapUsed = (): number => {
  gc();
  return process.memoryUsage().heapUsed;
};

/** An object as JSON (timestamps are strings there, not client-node's Dates). */
type Served = { kind?: string; [k: string]: unknown };

const created = '2026-12-01T12:00:00Z';
const field = (manager: string, operation: string, fieldsV1: unknown, subresource?: string) => ({
  manager, operation, apiVersion: 'v1', time: created, fieldsType: 'FieldsV1', fieldsV1, ...(subresource ? { subresource } : {}),
});

/** A pod as the API server serves it once a kubelet runs it: defaulted spec, kubelet status, managedFields. */
function apiPod(p: Pod, rv: number): Served {
  const c = p.spec!.containers![0]!;
  const ports = (c.ports ?? []).map((x) => ({ ...x }));
  const portKeys = Object.fromEntries(ports.map((x) => [`k:{"containerPort":${x.containerPort},"protocol":"${x.protocol}"}`, { '.': {}, 'f:containerPort': {}, 'f:name': {}, 'f:protocol': {} }]));
  const cond = (type: string) => ({ type, status: 'True', lastProbeTime: null, lastTransitionTime: created });
  const condKey = (type: string) => [`k:{"type":"${type}"}`, { '.': {}, 'f:lastProbeTime': {}, 'f:lastTransitionTime': {}, 'f:status': {}, 'f:type': {} }];
  const types = ['PodReadyToStartContainers', 'Initialized', 'Ready', 'ContainersReady', 'PodScheduled'];
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: p.metadata.name, namespace: p.metadata.namespace, uid: `0b9c${String(rv).padStart(4, '0')}-1c2d-4e5f-8a9b-${String(rv).padStart(12, '0')}`,
      resourceVersion: String(rv), creationTimestamp: created, labels: { ...p.metadata.labels },
      managedFields: [
        field('kubectl-client-side-apply', 'Update', { 'f:metadata': { 'f:labels': Object.fromEntries(Object.keys(p.metadata.labels ?? {}).map((k) => [`f:${k}`, {}])) }, 'f:spec': { 'f:containers': { 'k:{"name":"main"}': { '.': {}, 'f:image': {}, 'f:imagePullPolicy': {}, 'f:name': {}, 'f:ports': { '.': {}, ...portKeys }, 'f:resources': {}, 'f:terminationMessagePath': {}, 'f:terminationMessagePolicy': {} } }, 'f:dnsPolicy': {}, 'f:enableServiceLinks': {}, 'f:restartPolicy': {}, 'f:schedulerName': {}, 'f:securityContext': {}, 'f:terminationGracePeriodSeconds': {} } }),
        field('kubelet', 'Update', { 'f:status': { 'f:conditions': Object.fromEntries(types.map(condKey)), 'f:containerStatuses': {}, 'f:hostIP': {}, 'f:hostIPs': {}, 'f:phase': {}, 'f:podIP': {}, 'f:podIPs': { '.': {}, [`k:{"ip":"${p.status!.podIP}"}`]: { '.': {}, 'f:ip': {} } }, 'f:startTime': {} } }, 'status'),
      ],
    },
    spec: {
      volumes: [{ name: 'kube-api-access-x7k2p', projected: { sources: [{ serviceAccountToken: { expirationSeconds: 3607, path: 'token' } }, { configMap: { name: 'kube-root-ca.crt', items: [{ key: 'ca.crt', path: 'ca.crt' }] } }, { downwardAPI: { items: [{ path: 'namespace', fieldRef: { apiVersion: 'v1', fieldPath: 'metadata.namespace' } }] } }], defaultMode: 420 } }],
      containers: [{ name: c.name, image: 'registry.example/app:1.2.3', ports, resources: {}, volumeMounts: [{ name: 'kube-api-access-x7k2p', readOnly: true, mountPath: '/var/run/secrets/kubernetes.io/serviceaccount' }], terminationMessagePath: '/dev/termination-log', terminationMessagePolicy: 'File', imagePullPolicy: 'IfNotPresent' }],
      restartPolicy: 'Always', terminationGracePeriodSeconds: 30, dnsPolicy: 'ClusterFirst', serviceAccountName: 'default', serviceAccount: 'default',
      nodeName: p.spec!.nodeName, securityContext: {}, schedulerName: 'default-scheduler',
      tolerations: [{ key: 'node.kubernetes.io/not-ready', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 }, { key: 'node.kubernetes.io/unreachable', operator: 'Exists', effect: 'NoExecute', tolerationSeconds: 300 }],
      priority: 0, enableServiceLinks: true, preemptionPolicy: 'PreemptLowerPriority',
    },
    status: {
      phase: 'Running', conditions: types.map(cond), hostIP: '192.168.250.10', hostIPs: [{ ip: '192.168.250.10' }], podIP: p.status!.podIP, podIPs: [{ ip: p.status!.podIP! }], startTime: created,
      containerStatuses: [{ name: 'main', state: { running: { startedAt: created } }, lastState: {}, ready: true, restartCount: 0, image: 'registry.example/app:1.2.3', imageID: `registry.example/app@sha256:${'4f'.repeat(32)}`, containerID: `containerd://${String(rv).padStart(64, 'a')}`, started: true }],
      qosClass: 'BestEffort',
    },
  };
}

function apiPolicy(np: NetworkPolicy, rv: number): Served {
  return {
    apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy',
    metadata: { ...np.metadata, resourceVersion: String(rv), generation: 1, creationTimestamp: created, managedFields: [field('kubectl-client-side-apply', 'Update', { 'f:spec': { 'f:ingress': {}, 'f:podSelector': {}, 'f:policyTypes': {} } })] },
    spec: np.spec,
  };
}

/** What the operator writes (create, then JSON patches): an Update managedFields entry per writer. */
function apiOurs(o: NpmRuleSet | NpmIPSet, rv: number): Served {
  const labels = Object.fromEntries(Object.keys(o.metadata.labels ?? {}).map((k) => [`f:${k}`, {}]));
  const spec = Object.fromEntries(Object.keys(o.spec).map((k) => [`f:${k}`, {}]));
  return {
    ...o,
    metadata: {
      ...o.metadata, uid: `5e1f${String(rv).padStart(4, '0')}-aaaa-4bbb-8ccc-${String(rv).padStart(12, '0')}`, resourceVersion: String(rv), generation: 1, creationTimestamp: created,
      managedFields: [{ ...field('kube-npm-operator', 'Update', { 'f:metadata': { 'f:labels': labels, 'f:ownerReferences': {} }, 'f:spec': spec }), apiVersion: API_VERSION }],
    },
  };
}

/** The cluster as served to node-I's informers: per resource, the JSON of every object it lists. */
function buildCluster(o: Options): { served: Map<string, string[]>; counts: Record<string, number> } {
  const snap = syntheticCluster({ namespaces: o.namespaces, pods: o.pods, policies: o.policies, seed: 42 });
  const nodeName = (i: number) => `node-${i}`;
  for (const p of snap.pods) p.spec!.nodeName = nodeName(nodeOf(Number(p.metadata.name!.slice(4)), o.nodes));
  const nodeOfIP = new Map(snap.pods.map((p) => [p.status!.podIP!, p.spec!.nodeName!]));
  const { items } = translate(snap);
  const sets = items.filter((x): x is NpmIPSet => x.kind === IPSET_KIND);
  const rulesets = items.filter((x): x is NpmRuleSet => x.kind === RULESET_KIND);
  const shardsOf = new Map<string, NpmIPSet[]>();
  for (const s of sets) shardsOf.set(s.spec.setName, [...(shardsOf.get(s.spec.setName) ?? []), s]);
  // ADR 0011: a ruleset concerns the nodes hosting a member of one of its target sets; a set, the
  // union of the concerned nodes of the rulesets that reference it.
  const setNodes = new Map<string, Set<string>>();
  const me = nodeName(o.node);
  const mine: Served[] = [];
  let rv = 1000;
  for (const rs of rulesets) {
    const nodes = new Set<string>();
    for (const c of rs.spec.chains) for (const sh of shardsOf.get(c.targetSet) ?? []) for (const m of sh.spec.members) nodes.add(nodeOfIP.get(m) ?? '');
    nodes.delete('');
    for (const r of rs.spec.ipsets) for (const n of nodes) setNodes.set(r.name, (setNodes.get(r.name) ?? new Set()).add(n));
    if (nodes.has(me)) mine.push(apiOurs(withNodeLabels(rs, nodes), rv++));
  }
  for (const s of sets) {
    const nodes = setNodes.get(s.spec.setName) ?? new Set<string>();
    if (nodes.has(me)) mine.push(apiOurs(withNodeLabels(s, nodes), rv++));
  }
  const pods = snap.pods.filter((p) => p.spec!.nodeName === me).map((p) => JSON.stringify(apiPod(p, rv++)));
  const policies = snap.policies.map((np) => JSON.stringify(apiPolicy(np, rv++)));
  const served = new Map<string, string[]>([
    ['npmrulesets', mine.filter((x) => x.kind === RULESET_KIND).map((x) => JSON.stringify(x))],
    ['npmipsets', mine.filter((x) => x.kind === IPSET_KIND).map((x) => JSON.stringify(x))],
    ['pods', pods],
    ['networkpolicies', policies],
    ['npmnodes', []],
  ]);
  const counts = Object.fromEntries([...served].map(([k, v]) => [k, v.length]));
  return { served, counts: { ...counts, clusterRulesets: rulesets.length, clusterSets: sets.length } };
}

/** The child: one AgentDaemon fed from the served file, then the figures. */
async function child(dir: string, o: Options): Promise<void> {
  const base = heapUsed();
  const rss0 = process.memoryUsage().rss;
  // Each list reads its resource's pages then (500 objects each, as framework/kube.ts listObjects
  // asks): the process holds the served JSON only while a list runs, and, as listObjects does
  // today, every page's objects untrimmed until the list ends. --paged-trim applies the informer's
  // transform to each page instead (a proposed listObjects option): the peak of one page.
  let transformOf: ((plural: string) => ((x: KubernetesObject) => KubernetesObject) | undefined) = () => undefined;
  const { counts, bytes: servedBytes, pages } = JSON.parse(readFileSync(join(dir, 'counts.json'), 'utf8')) as { counts: Record<string, number>; bytes: Record<string, number>; pages: Record<string, number> };
  const transport = (r: ResourceRef): { listFn: ListFn<KubernetesObject>; watchFn: WatchFn } => ({
    listFn: async () => {
      const items: KubernetesObject[] = [];
      const map = o.pagedTrim ? transformOf(r.plural) : undefined;
      for (let i = 0; i < (pages[r.plural] ?? 0); i++) {
        for (const x of JSON.parse(readFileSync(join(dir, `${r.plural}.${i}.json`), 'utf8')) as KubernetesObject[]) items.push(map ? map(x) : x);
      }
      return { items, resourceVersion: '999999' };
    },
    watchFn: async () => ({ abort: () => undefined }),
  });
  const kernel = new FakeKernel();
  kernel.calls = { push: () => 0 } as unknown as FakeKernel['calls'];
  const converger = new Converger({ exec: kernel.exec, backend: 'nft', resyncIntervalMs: 3_600_000 });
  const node = `node-${o.node}`;
  const daemon = new AgentDaemon({
    kc: {} as KubeConfig, nodeName: node, backend: 'nft', converger, clock: realClock, log: () => undefined,
    resyncMs: 3_600_000, tamperCheckMs: 0, podStartup: 'open', transport, writeStatus: async () => undefined,
  });
  const informers: Record<string, string> = { npmrulesets: 'rulesets', npmipsets: 'ipsets', pods: 'pods', networkpolicies: 'policies', npmnodes: 'self' };
  transformOf = (plural) => (daemon as unknown as Record<string, { opts: { transform?: (x: KubernetesObject) => KubernetesObject } }>)[informers[plural]!]?.opts.transform;
  if (o.untrimmed) {
    // The agent as before its informers trimmed objects (agent/trim.ts): the before figures.
    for (const k of ['rulesets', 'ipsets', 'pods', 'policies', 'self']) delete (daemon as unknown as Record<string, { opts: { transform?: unknown } }>)[k]!.opts.transform;
  }
  const t0 = Date.now();
  await daemon.start();
  await daemon.settled();
  const syncMs = Date.now() - t0;
  const after = heapUsed();
  const mu = process.memoryUsage();
  const hs = getHeapStatistics();
  const hwm = /VmHWM:\s+(\d+)/.exec(readFileSync('/proc/self/status', 'utf8'))?.[1];
  console.log(`bench:agent-memory ${node} of N=${o.nodes}, P=${o.pods}, K=${o.policies}, ${o.namespaces} namespaces (${process.version}, bundled, plain node${o.untrimmed ? ', UNTRIMMED informers: as before agent/trim.ts' : ''}${o.pagedTrim ? ', list pages trimmed as they arrive' : ''})`);
  console.log(`  served to the agent: ${JSON.stringify(counts)}; JSON MiB ${JSON.stringify(Object.fromEntries(Object.entries(servedBytes).map(([k, v]) => [k, Number(MiB(v))])))}`);
  console.log(`  start + first sync ${syncMs} ms (noisy: loaded machine)`);
  console.log(`  after the first sync: rss ${MiB(mu.rss)} MiB (peak ${MiB(Number(hwm ?? 0) * 1024)}, before the agent ${MiB(rss0)}), heapUsed ${MiB(mu.heapUsed)} (before the agent: ${MiB(base)}), heapTotal ${MiB(mu.heapTotal)}, external ${MiB(mu.external)}, arrayBuffers ${MiB(mu.arrayBuffers)}; V8 malloced ${MiB(hs.malloced_memory)}`);
  console.log(`  heap spaces used MiB: ${getHeapSpaceStatistics().filter((s) => s.space_used_size > 0).map((s) => `${s.space_name.replace('_space', '')} ${MiB(s.space_used_size)}`).join(', ')}`);
  if (o.heapSnapshot) console.log(`  heap snapshot: ${writeHeapSnapshot(o.heapSnapshot)}`);

  // Retained heap per cache, released one after another.
  const d = daemon as unknown as Record<string, unknown>;
  const inf = (k: string) => (d[k] as { cache: Map<string, unknown> }).cache;
  const steps: [string, () => void][] = [
    ['fake kernel (bench only: a real kernel holds this)', () => { kernel.sets.clear(); kernel.chains.clear(); }],
    ['converger (last applied kernel state)', () => void ((converger as unknown as Record<string, unknown>).applied = undefined)],
    ['pods informer', () => inf('pods').clear()],
    ['networkpolicies informer', () => inf('policies').clear()],
    ['daemon programmed view + setCache (member maps)', () => { d.programmed = undefined; (d.setCache as Map<string, unknown>).clear(); }],
    ['daemon lastApplied + status', () => { (d.lastApplied as Map<string, unknown>).clear(); d.applied = []; d.written = undefined; }],
    ['npmrulesets informer', () => inf('rulesets').clear()],
    ['npmipsets informer', () => inf('ipsets').clear()],
  ];
  let prev = after;
  for (const [what, release] of steps) {
    release();
    const now = heapUsed();
    console.log(`  retained: ${what}: ${MiB(prev - now)} MiB`);
    prev = now;
  }
  console.log(`  left: ${MiB(prev)} MiB heapUsed (before the agent: ${MiB(base)})`);
  await daemon.stop();
}

/** The parent (under tsx): builds the served cluster, bundles this file, runs it in a plain node child. */
function parent(o: Options): void {
  // Under the repository: the bundle's packages (--packages=external) resolve from node_modules.
  mkdirSync(join(REPO, 'node_modules/.cache'), { recursive: true });
  const dir = mkdtempSync(join(REPO, 'node_modules/.cache/kube-npm-agentmem-'));
  try {
    const { served, counts } = buildCluster(o);
    const pages: Record<string, number> = {};
    for (const [plural, items] of served) {
      pages[plural] = Math.ceil(items.length / 500);
      for (let i = 0; i < pages[plural]; i++) writeFileSync(join(dir, `${plural}.${i}.json`), `[${items.slice(i * 500, i * 500 + 500).join(',')}]`);
    }
    const bytes = Object.fromEntries([...served].map(([k, v]) => [k, v.reduce((a, x) => a + x.length, 0)]));
    writeFileSync(join(dir, 'counts.json'), JSON.stringify({ counts, bytes, pages }));
    // Plain JavaScript: under tsx the child would carry a second V8 isolate (the loader thread).
    const r = spawnSync(join(REPO, 'node_modules/.bin/esbuild'), [fileURLToPath(import.meta.url), '--bundle', '--platform=node', '--format=esm', '--target=node20', '--packages=external', `--outfile=${join(dir, 'bench.mjs')}`, '--log-level=warning'], { cwd: REPO, encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`esbuild failed (${r.status}): ${r.stderr}`);
    const c = spawnSync(process.execPath, ['--expose-gc', ...(process.env.AGENT_MEMORY_NODE_FLAGS ?? '').split(' ').filter(Boolean), join(dir, 'bench.mjs'), ...process.argv.slice(2), '--child', dir], { cwd: REPO, stdio: 'inherit', env: { ...process.env, NODE_OPTIONS: '' } });
    if (c.status !== 0) throw new Error(`bench child failed: status ${c.status} signal ${c.signal}`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

/**
 * Loaded into the measured agent with `--import`: on SIGUSR2 it prints one `memprobe {json}` line
 * to stderr: V8's heap (used / committed, per space: committed and resident), external and array
 * buffers, malloc'ed by V8, and the kernel's view (RssAnon: heap, malloc, thread stacks; RssFile:
 * the node binary and libraries mapped), threads. It allocates nothing until asked.
 */
const MEMPROBE = `
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';
import { readFileSync } from 'node:fs';
process.on('SIGUSR2', () => {
  const M = (b) => Math.round(b / 104857.6) / 10;
  const m = process.memoryUsage();
  const st = readFileSync('/proc/self/status', 'utf8');
  const line = (k) => Number(new RegExp('^' + k + ':\\\\s+(\\\\d+)', 'm').exec(st)?.[1] ?? 0);
  const spaces = Object.fromEntries(getHeapSpaceStatistics().filter((s) => s.space_size > 0).map((s) => [s.space_name.replace('_space', ''), [M(s.space_used_size), M(s.space_size), M(s.physical_space_size)]]));
  const out = { rss: M(m.rss), rssAnon: M(line('RssAnon') * 1024), rssFile: M(line('RssFile') * 1024), threads: line('Threads'), heapUsed: M(m.heapUsed), heapTotal: M(m.heapTotal), heapPhysical: M(getHeapStatistics().total_physical_size), malloced: M(getHeapStatistics().malloced_memory), external: M(m.external), arrayBuffers: M(m.arrayBuffers), spaces };
  process.stderr.write('memprobe ' + JSON.stringify(out) + '\\n');
});
`;

/** Node flag sets from an env variable: sets separated by `;` (an empty set: node's defaults). */
function flagSets(env: string | undefined): string[][] {
  return (env ?? '').split(';').map((set) => set.split(' ').filter(Boolean));
}

/** A flag set's VAR=value words (e.g. MALLOC_ARENA_MAX=2) as the process's environment, its node flags apart. */
function splitEnv(set: string[]): { flags: string[]; env: NodeJS.ProcessEnv } {
  const isVar = (w: string) => /^[A-Z_][A-Z0-9_]*=/.test(w);
  return { flags: set.filter((w) => !isVar(w)), env: { ...process.env, ...Object.fromEntries(set.filter(isVar).map((w) => [w.slice(0, w.indexOf('=')), w.slice(w.indexOf('=') + 1)])) } };
}

/**
 * --apiserver: the RSS and CPU of a real agent process. hack/controlplane's kube-apiserver + etcd,
 * P pods in namespace agentmem (running, with addresses in 10.244.0.0/16): the first L (--local,
 * default all) on node n1, the others spread over n2..n10; K NetworkPolicies (policy k selects
 * app=a<k> and admits app=a<k+1> on port 80), the built operator writing the rulesets, then the
 * built agent (`<dist>/operator/src/cli/main.js agent --node-name n1`) programming a network
 * namespace of its own (kube-npm-agentmem-<pid>, recreated for each agent, deleted at the end).
 * AGENT_MEMORY_NODE_FLAGS: the agent's node flags (VAR=value words: its environment, e.g.
 * MALLOC_ARENA_MAX=2); several sets separated by `;` run one agent
 * after the other against the same cluster (e.g. "; --max-semi-space-size=2"). For each: VmRSS and
 * VmHWM (peak) 10 s after its first sync, its CPU for start + first sync, then E (--events, default
 * 20) pod adds on n1 one after the other, each waited for until the agent logs its sync: CPU per
 * event (informer, plan, restore, NpmNode report) and VmRSS after them.
 * AGENT_MEMORY_OPERATOR_NODE_FLAGS: the operator's node flags, same format; each set runs one
 * operator over the full initial load (the first creates the rulesets, the others find them written):
 * its VmHWM and CPU until every ruleset exists, its caches synced and its CPU has been quiet for 5 s.
 * Each operator starts from no NpmRuleSets and NpmIPSets (the previous one's are deleted), so each
 * measures the initial load; the first set is then left running for the agents
 * (AGENT_MEMORY_NODE_FLAGS=none: no agent). Needs root (the netns) and `npm run build`.
 */
async function realAgent(o: Options): Promise<void> {
  const { spawn, execFileSync } = await import('node:child_process');
  const { startControlPlane } = await import('../support/controlplane.js');
  const { podManifest } = await import('../support/e2e.js');
  const { KubeClient } = await import('../../operator/src/framework/client.js');
  const { procStat } = await import('./scale/proc.js');
  const NETNS = `kube-npm-agentmem-${process.pid}`;
  const main = join(o.dist ?? join(REPO, 'dist'), 'operator/src/cli/main.js');
  const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
  const cp = await startControlPlane({ log: () => {} });
  const api = await KubeClient.load(cp.kubeconfigPath);
  const procs: ReturnType<typeof spawn>[] = [];
  const local = o.local ?? o.pods;
  let probeDir: string | undefined;
  try {
    for (const ns of ['agentmem', 'kube-npm-system']) await api.request('POST', '/api/v1/namespaces', { body: { metadata: { name: ns } } });
    const k = Math.max(1, o.policies);
    const addPod = async (i: number, name = `p${i}`): Promise<void> => {
      await api.request('POST', '/api/v1/namespaces/agentmem/pods', { body: podManifest('agentmem', name, i < local ? 'n1' : `n${2 + (i % 9)}`, { app: `a${i % k}` }) });
      const ip = `10.244.${1 + Math.floor(i / 250)}.${(i % 250) + 2}`;
      const status = { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] };
      await api.request('PATCH', `/api/v1/namespaces/agentmem/pods/${name}/status`, { contentType: 'application/merge-patch+json', body: { status } });
    };
    const t0 = Date.now();
    for (let i = 0; i < o.pods; i += 16) await Promise.all(Array.from({ length: Math.min(16, o.pods - i) }, (_, j) => addPod(i + j)));
    for (let p = 0; p < o.policies; p += 16) {
      await Promise.all(Array.from({ length: Math.min(16, o.policies - p) }, (_, j) => {
        const spec = { podSelector: { matchLabels: { app: `a${p + j}` } }, ingress: [{ from: [{ podSelector: { matchLabels: { app: `a${(p + j + 1) % k}` } } }], ports: [{ port: 80 }] }] };
        return api.request('POST', '/apis/networking.k8s.io/v1/namespaces/agentmem/networkpolicies', { body: { metadata: { name: `np${p + j}` }, spec } });
      }));
    }
    console.log(`cluster: ${o.pods} pods (${local} on n1), ${o.policies} policies, created in ${((Date.now() - t0) / 1000).toFixed(0)} s`);
    const opFlags = flagSets(process.env.AGENT_MEMORY_OPERATOR_NODE_FLAGS);
    let op: ReturnType<typeof spawn> | undefined;
    for (const [n, flags] of [...opFlags.entries()].reverse()) {
      // The last set first; the first set ends up running for the agents. Each starts from no
      // NpmRuleSets and NpmIPSets (the previous operator's deleted): each measures the initial load.
      if (n < opFlags.length - 1) {
        for (const path of ['/apis/kubenpm.io/v1alpha1/namespaces/agentmem/npmrulesets', '/apis/kubenpm.io/v1alpha1/npmipsets']) {
          await api.request('DELETE', path);
          for (let t = 0; t < 600 && (await api.request<{ items: unknown[] }>('GET', path, { query: { limit: 1 } })).items.length > 0; t++) await sleep(250);
        }
      }
      op = spawn(process.execPath, [...splitEnv(flags).flags, main, 'operator', '--kubeconfig', cp.kubeconfigPath, '--metrics-bind-address', '127.0.0.1:0', '--metrics-secure=false', '--leader-elect=false', '--agent-lease-namespace', 'kube-npm-system'], { stdio: ['ignore', 'pipe', 'pipe'], env: splitEnv(flags).env });
      procs.push(op);
      let opLog = '';
      op.stdout!.on('data', (d: Buffer) => (opLog += d.toString()));
      op.stderr!.on('data', (d: Buffer) => (opLog += d.toString()));
      const s0 = Date.now();
      // Done: its caches synced, every ruleset exists, and its CPU quiet (< 0.1 s in 5 s): a restarted
      // operator finds the rulesets written but still lists and translates everything.
      const cpu: number[] = [];
      for (let t = 0; ; t++) {
        // 429 "storage is (re)initializing" while the CRDs' storage starts: keep asking.
        const rs = await api.request<{ items: unknown[] }>('GET', '/apis/kubenpm.io/v1alpha1/npmrulesets', { query: { limit: 1 } }).catch(() => undefined);
        cpu.push(procStat(op.pid!).cpuS);
        const quiet = cpu.length > 20 && cpu[cpu.length - 1]! - cpu[cpu.length - 21]! < 0.1;
        const count = Number((rs as { metadata?: { remainingItemCount?: number } } | undefined)?.metadata?.remainingItemCount ?? -1) + 1;
        if (/caches synced/.test(opLog) && count >= o.policies && quiet) break;
        if (op.exitCode !== null || t > 2400) throw new Error(`operator (${flags.join(' ')}) exited or did not finish (${op.exitCode}): ${opLog.slice(-2000)}`);
        await sleep(250);
      }
      const m = procStat(op.pid!);
      console.log(`operator${flags.length ? ` (node ${flags.join(' ')})` : ''}: ${o.policies} rulesets after ${((Date.now() - s0) / 1000).toFixed(0)} s; RSS ${m.rssMiB.toFixed(1)} MiB, peak ${m.hwmMiB.toFixed(1)}; CPU ${m.cpuS.toFixed(1)} s`);
      if (n > 0) {
        op.kill('SIGTERM');
        await new Promise((r) => (op!.exitCode !== null ? r(undefined) : op!.once('exit', r)));
      }
    }
    probeDir = mkdtempSync(join(tmpdir(), 'kube-npm-memprobe-'));
    const probeFile = join(probeDir, 'memprobe.mjs');
    writeFileSync(probeFile, MEMPROBE);
    let extra = 0;
    let added = 0;
    // AGENT_MEMORY_NODE_FLAGS=none: the operators only.
    for (const flags of process.env.AGENT_MEMORY_NODE_FLAGS === 'none' ? [] : flagSets(process.env.AGENT_MEMORY_NODE_FLAGS)) {
      execFileSync('ip', ['netns', 'add', NETNS]);
      const agent = spawn(process.execPath, [...splitEnv(flags).flags, '--import', pathToFileURL(probeFile).href, main, 'agent', '--node-name', 'n1', '--kubeconfig', cp.kubeconfigPath, '--netns', NETNS, '--pod-cidr', '10.244.0.0/16', '--metrics-bind-address', '127.0.0.1:0', '--lease-namespace', 'kube-npm-system'], { stdio: ['ignore', 'ignore', 'pipe'], env: splitEnv(flags).env });
      procs.push(agent);
      let log = '';
      agent.stderr!.on('data', (d: Buffer) => (log += d.toString()));
      try {
        const a0 = Date.now();
        while (!/liveness: Lease/.test(log)) {
          if (agent.exitCode !== null || Date.now() - a0 > 300_000) throw new Error(`the agent did not finish its first sync:\n${log.slice(-3000)}`);
          await sleep(100);
        }
        const firstSync = Date.now() - a0;
        /** The agent's memprobe line (MEMPROBE above), asked for with SIGUSR2. */
        const probe = async (): Promise<string> => {
          const from = log.length;
          agent.kill('SIGUSR2');
          for (let t = 0; t < 200 && !log.slice(from).includes('memprobe '); t++) await sleep(25);
          return /memprobe ([^\n]*)/.exec(log.slice(from))?.[1] ?? '(no answer)';
        };
        const synced = /synced \(full\)[^\n]*/.exec(log)?.[0] ?? '';
        await sleep(10_000);
        const m0 = procStat(agent.pid!);
        const p0 = await probe();
        // E pod adds on n1, one after the other: each wakes the agent once its address is known.
        const syncs = () => (log.match(/synced \(/g) ?? []).length;
        const s0 = syncs();
        for (let e = 0; e < o.events; e++) {
          const before = syncs();
          await addPod(o.pods + extra, `x${extra}`);
          extra++;
          added++;
          for (let t = 0; syncs() === before && t < 400; t++) await sleep(25);
          await sleep(300);
        }
        const m1 = procStat(agent.pid!);
        const perEvent = ((m1.cpuS - m0.cpuS) * 1000) / Math.max(1, o.events);
        await sleep(15_000);
        const m2 = procStat(agent.pid!);
        const p2 = await probe();
        console.log(`agent${flags.length ? ` (node ${flags.join(' ')})` : ' (node defaults)'}: first sync ${firstSync} ms, CPU ${m0.cpuS.toFixed(2)} s (${synced}); 10 s later RSS ${m0.rssMiB.toFixed(1)} MiB, peak ${m0.hwmMiB.toFixed(1)}; ${o.events} pod adds: ${syncs() - s0} syncs, CPU ${perEvent.toFixed(1)} ms per add, RSS right after ${m1.rssMiB.toFixed(1)} MiB, 15 s later ${m2.rssMiB.toFixed(1)}, peak ${m2.hwmMiB.toFixed(1)}`);
        console.log(`  memory (MiB) after the first sync: ${p0}`);
        console.log(`  memory (MiB) 15 s after the pod adds: ${p2}`);
      } finally {
        agent.kill('SIGTERM');
        await new Promise((r) => (agent.exitCode !== null ? r(undefined) : agent.once('exit', r)));
        execFileSync('ip', ['netns', 'del', NETNS]);
      }
      // The next agent finds the cluster this one found: its pod adds deleted again.
      for (; added > 0; added--) await api.request('DELETE', `/api/v1/namespaces/agentmem/pods/x${extra - added}`, { body: { gracePeriodSeconds: 0 } });
      await sleep(3000);
    }
  } finally {
    for (const p of procs) if (p.exitCode === null) p.kill('SIGTERM');
    await sleep(1000);
    api.close();
    await cp.stop();
    spawnSync('ip', ['netns', 'del', NETNS]);
    if (probeDir) rmSync(probeDir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const i = args.indexOf('--child');
  const o = parseArgs(i >= 0 ? args.slice(0, i) : args);
  if (o.apiserver) await realAgent({ ...o, ...(args.includes('--pods') ? {} : { pods: 100 }), ...(args.includes('--policies') ? {} : { policies: 20 }) });
  else if (i >= 0) await child(args[i + 1]!, o);
  else parent(o);
}

main().catch((err: unknown) => {
  process.stderr.write(`bench:agent-memory failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
