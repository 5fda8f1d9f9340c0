/**
 * npm run bench:e2e — end-to-end latency and load, figures not pass/fail. Needs root.
 * A real control plane, the operator and two agents as processes, pods as network namespaces.
 *  1. NetworkPolicy create / update / delete -> enforced on every node, observed with packets
 *     (p50/p99 over N trials; targets p50 ≤ 300 ms, p99 ≤ 1 s).
 *  2. New pod -> its memberships programmed (a new pod allowed by label can connect).
 *  3. Pod churn at 50 pods/s for 60 s (Pod objects with IPs, no namespaces): operator backlog,
 *     API writes per second, agent and operator CPU; then kernel rules per node vs cluster policies.
 */
import { readFileSync } from 'node:fs';
import { startControlPlane, type ControlPlane } from '../support/controlplane.js';
import { kubectlOk, podManifest, setPodRunning, startCli, waitFor, type Proc } from '../support/e2e.js';
import { createCluster, type Cluster } from '../kernel/harness/cluster.js';

const TRIALS = Number(process.env.KNPM_BENCH_TRIALS ?? 50);
const CHURN_SECONDS = Number(process.env.KNPM_BENCH_CHURN_SECONDS ?? 60);
const CHURN_RATE = Number(process.env.KNPM_BENCH_CHURN_RATE ?? 50);

const PODS = { 'x/a': { node: 1, ip: '10.244.1.10' }, 'x/b': { node: 2, ip: '10.244.2.10' }, 'y/a': { node: 1, ip: '10.244.1.20' }, 'y/b': { node: 2, ip: '10.244.2.20' } } as const;

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))] ?? NaN;
}

function cpuSeconds(pid: number): number {
  const f = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ');
  return (Number(f[11]) + Number(f[12])) / 100; // utime + stime, in clock ticks (100/s)
}

async function main(): Promise<void> {
  if (process.getuid?.() !== 0) throw new Error('bench:e2e needs root');
  const cp: ControlPlane = await startControlPlane({ log: () => undefined });
  let cluster: Cluster | undefined;
  const procs: Proc[] = [];
  try {
    cluster = await createCluster({ nodes: 2, pods: Object.entries(PODS).map(([name, p]) => ({ name, node: p.node, ip: p.ip })), defaultTimeoutMs: 50 });
    for (const ns of ['x', 'y', 'churn']) await kubectlOk(cp, ['create', 'namespace', ns]);
    await kubectlOk(cp, ['label', 'namespace', 'y', 'team=y']);
    for (const [name, p] of Object.entries(PODS)) {
      const [ns, pod] = name.split('/') as [string, string];
      await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify(podManifest(ns, pod, `n${p.node}`, { pod })));
      await setPodRunning(cp, ns, pod, p.ip);
    }
    const operator = startCli(cp, 'operator', ['operator', '--leader-elect=false', '--metrics-bind-address', '127.0.0.1:0', '--metrics-secure=false']);
    const agents = [1, 2].map((k) => startCli(cp, `agent-n${k}`, ['agent', '--node-name', `n${k}`, '--netns', cluster!.nodeNs(k), '--metrics-bind-address', '127.0.0.1:0', '--metrics-secure=false', '--min-sync-interval-ms', '20']));
    procs.push(operator, ...agents);
    // Baseline: x isolated for ingress.
    await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny', namespace: 'x' }, spec: { podSelector: {} } }));
    const c = cluster;
    // Both nodes: y/a (n1) -> x/a (n1) is judged on n1; y/b (n2) -> x/b (n2) on n2.
    const both = async (port: number) => (await Promise.all([c.probe('y/a', 'x/a', port, 'TCP', 50), c.probe('y/b', 'x/b', port, 'TCP', 50)])).every(Boolean);
    const none = async (port: number) => !(await Promise.all([c.probe('y/a', 'x/a', port, 'TCP', 50), c.probe('y/b', 'x/b', port, 'TCP', 50)])).some(Boolean);
    await waitFor('baseline deny', () => none(80).then((v) => v || undefined), 30_000);
    const policy = (port: number) => JSON.stringify({
      apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'allow-y', namespace: 'x' },
      spec: { podSelector: {}, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'y' } } }], ports: [{ port }] }] },
    });
    const timed = async (action: () => Promise<unknown>, until: () => Promise<boolean>) => {
      const t0 = performance.now();
      await action();
      await waitFor('enforced', () => until().then((v) => v || undefined), 30_000, 5);
      return performance.now() - t0;
    };
    const create: number[] = [];
    const update: number[] = [];
    const del: number[] = [];
    for (let i = 0; i < TRIALS; i++) {
      create.push(await timed(() => kubectlOk(cp, ['apply', '-f', '-'], policy(80)), () => both(80)));
      update.push(await timed(() => kubectlOk(cp, ['apply', '-f', '-'], policy(81)), () => both(81)));
      del.push(await timed(() => kubectlOk(cp, ['-n', 'x', 'delete', 'networkpolicy', 'allow-y']), () => none(81)));
    }
    const line = (what: string, xs: number[]) =>
      console.log(`  ${what.padEnd(28)} p50 ${pct(xs, 50).toFixed(0).padStart(5)} ms   p99 ${pct(xs, 99).toFixed(0).padStart(5)} ms   (n=${xs.length}; targets p50 ≤ 300, p99 ≤ 1000; includes the kubectl process)`);
    console.log(`policy -> enforced on both nodes (packets), ${TRIALS} trials each:`);
    line('create', create);
    line('update', update);
    line('delete', del);

    // New pod -> memberships programmed: a pod labelled into an allowed set connects.
    await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify({
      apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'allow-clients', namespace: 'x' },
      spec: { podSelector: {}, ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { role: 'client' } } }] }] },
    }));
    const newPod: number[] = [];
    for (let i = 0; i < Math.min(TRIALS, 20); i++) {
      const name = `new${i}`;
      const ip = `10.244.2.${100 + i}`;
      await c.addPod({ name: `y/${name}`, node: 2, ip });
      const t = await timed(async () => {
        await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify(podManifest('y', name, 'n2', { role: 'client' })));
        await setPodRunning(cp, 'y', name, ip);
      }, () => c.probe(`y/${name}`, 'x/a', 81, 'TCP', 50));
      newPod.push(t);
      await kubectlOk(cp, ['-n', 'y', 'delete', 'pod', name, '--grace-period=0', '--force']);
      await c.removePod(`y/${name}`);
    }
    console.log('new pod -> memberships programmed (its first allowed connection):');
    line('pod create + status', newPod);

    // Churn: Pod objects only (the kubelet's part is the status write).
    const opPort = Number(/serving \/cluster-metrics.* on 127\.0\.0\.1:(\d+)/.exec(readFileSync(operator.log, 'utf8'))?.[1]);
    const metric = async (name: string) => {
      const text = await (await fetch(`http://127.0.0.1:${opPort}/cluster-metrics`)).text();
      let sum = 0;
      for (const m of text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, 'gm'))) sum += Number(m[2]);
      return sum;
    };
    const cpu0 = [operator, ...agents].map((p) => cpuSeconds(p.child.pid!));
    const writes0 = await metric('kubenpm_api_writes_total');
    const t0 = performance.now();
    const depths: number[] = [];
    let created = 0;
    const live: string[] = [];
    const { KubeConfig, CoreV1Api, setHeaderOptions, PatchStrategy } = await import('@kubernetes/client-node');
    const merge = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
    const kc = new KubeConfig();
    kc.loadFromFile(cp.kubeconfigPath);
    const core = kc.makeApiClient(CoreV1Api);
    const sampler = setInterval(() => void metric('kubenpm_workqueue_depth').then((d) => depths.push(d)), 1000);
    // Ticks of 100 ms launch CHURN_RATE/10 creates (and deletes) without waiting for earlier ones,
    // so the offered rate holds even when single calls take longer than a tick.
    const inflight = new Set<Promise<unknown>>();
    let failed = 0;
    while (performance.now() - t0 < CHURN_SECONDS * 1000) {
      const tick = performance.now();
      const batch: Promise<unknown>[] = [];
      for (let i = 0; i < CHURN_RATE / 10; i++) {
        const n = created++;
        const name = `c${n}`;
        const ip = `10.244.${3 + ((n >> 8) % 200)}.${n % 250 + 2}`;
        batch.push(
          core.createNamespacedPod({ namespace: 'churn', body: podManifest('churn', name, `n${1 + (n % 2)}`, { role: n % 3 ? 'client' : 'other' }) as never })
            .then(() => core.patchNamespacedPodStatus({ namespace: 'churn', name, body: { status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] } } }, merge)),
        );
        live.push(name);
        if (live.length > 200) {
          const old = live.shift()!;
          batch.push(core.deleteNamespacedPod({ namespace: 'churn', name: old, gracePeriodSeconds: 0 }));
        }
      }
      for (const p of batch) {
        const tracked: Promise<unknown> = p.catch(() => void failed++).finally(() => inflight.delete(tracked));
        inflight.add(tracked);
      }
      const rest = 100 - (performance.now() - tick);
      if (rest > 0) await new Promise((r) => setTimeout(r, rest));
    }
    await Promise.all([...inflight]);
    const elapsed = (performance.now() - t0) / 1000;
    clearInterval(sampler);
    await waitFor('backlog drained', async () => ((await metric('kubenpm_workqueue_depth')) === 0 ? true : undefined), 60_000, 200);
    const drainS = (performance.now() - t0) / 1000 - elapsed;
    const writes = (await metric('kubenpm_api_writes_total')) - writes0;
    const cpu = [operator, ...agents].map((p, i) => cpuSeconds(p.child.pid!) - cpu0[i]!);
    console.log(`pod churn: ${created} pods created (+ deletes, ${failed} API calls failed) in ${elapsed.toFixed(1)} s = ${(created / elapsed).toFixed(0)} pods/s`);
    console.log(`  operator queue depth (1 s samples): max ${Math.max(...depths)}, last ${depths.at(-1)}, drained ${drainS.toFixed(1)} s after the churn stopped`);
    console.log(`  API writes by the operator: ${writes} (${(writes / elapsed).toFixed(1)}/s)`);
    console.log(`  CPU over the churn: operator ${(100 * cpu[0]! / elapsed).toFixed(0)}%, agent n1 ${(100 * cpu[1]! / elapsed).toFixed(0)}%, agent n2 ${(100 * cpu[2]! / elapsed).toFixed(0)}% of one core`);

    // Kernel rules per node follow local pods: a policy whose pods live on no node costs nothing.
    for (let i = 0; i < 20; i++) {
      await kubectlOk(cp, ['create', 'namespace', `empty${i}`]);
      await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny', namespace: `empty${i}` }, spec: { podSelector: {}, ingress: [{ from: [{ podSelector: {} }] }] } }));
    }
    await new Promise((r) => setTimeout(r, 3000));
    const nodes = JSON.parse(await kubectlOk(cp, ['get', 'npmnodes', '-o', 'json'])) as { items: { metadata: { name: string }; status?: { kernel?: { chains: number; rules: number; ipsets: number } } }[] };
    const policies = JSON.parse(await kubectlOk(cp, ['get', 'networkpolicies', '-A', '-o', 'json'])) as { items: unknown[] };
    console.log(`node-local programming: ${policies.items.length} policies in the cluster (20 of them select no pod on any node)`);
    for (const n of nodes.items) console.log(`  ${n.metadata.name}: ${n.status?.kernel?.chains} policy chains, ${n.status?.kernel?.rules} rules, ${n.status?.kernel?.ipsets} sets`);
  } finally {
    for (const p of procs) await p.stop().catch(() => undefined);
    await cluster?.destroy();
    await cp.stop();
  }
}

main().catch((err: unknown) => {
  console.error(err);
  process.exitCode = 1;
});
