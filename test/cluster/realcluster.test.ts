/**
 * kube-npm installed as a user installs it, on the real local cluster of hack/cluster (real kubelets,
 * containerd, kube-proxy; docs/adr/0012-real-cluster.md), then put through real operations while
 * probers in pods check that an isolated pod stays isolated (issue #11):
 *   - `kubectl apply -k` of config/default with the locally built image (a kustomize image override):
 *     the operator Deployment and the agent DaemonSet run as real pods with real tokens;
 *   - a deny-all policy isolates a real pod, cross-node and same-node, and `kubectl get nrs` shows it
 *     Programmed on every node; /node-metrics and /cluster-metrics answer through their Services;
 *   - an agent DaemonSet rollout to a new image tag, an operator rolling update, `kubectl delete pod` of
 *     an agent, a node drained and uncordoned: no probe reaches the isolated pod at any time, while
 *     probes to an allowed pod show the probers were working all along;
 *   - a pod started after all that, with the kubenpm.io/PolicyProgrammed readiness gate, is isolated
 *     once Ready.
 * Run by test/cluster/run.sh (`npm run test:cluster`), which builds the image, brings the cluster up and
 * loads the images; KNPM_IMAGE and KNPM_IMAGE_NEXT name them. Figures are printed, not asserted.
 */
import { expect } from 'chai';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { REPO, waitFor } from '../support/e2e.js';
import { getJson, inNode, kubectl, kubectlOk, type NodeName } from './kube.js';

const IMAGE = process.env.KNPM_IMAGE ?? '';
const IMAGE_NEXT = process.env.KNPM_IMAGE_NEXT ?? '';
const SYS = 'kube-npm-system';
const NS = 'knpm-rc';
const PORT = 8080;

// Test pods run the product image's Node.js: a TCP server, and a prober that connects to each
// target every 100 ms and prints one JSON line per attempt (read back with kubectl logs).
// (A peer's reset, e.g. the kubelet's TCP readiness probe, must not crash the server.)
const SERVER_JS = `require('net').createServer((s) => { s.on('error', () => {}); s.end('ok\\n'); }).listen(${PORT});`;
const PROBER_JS = `
const net = require('net');
const targets = process.env.TARGETS.split(',').map((x) => { const [name, host] = x.split('='); return { name, host }; });
setInterval(() => {
  for (const t of targets) {
    const sent = Date.now();
    const s = net.connect({ host: t.host, port: ${PORT} });
    let done = false;
    const fin = (r) => { if (done) return; done = true; s.destroy(); console.log(JSON.stringify({ t: sent, to: t.name, r })); };
    s.setTimeout(500, () => fin('timeout'));
    s.on('connect', () => fin('ok'));
    s.on('error', (e) => fin(e.code));
  }
}, 100);`;
const PROBE_ONCE_JS = `
const s = require('net').connect({ host: process.argv[1], port: ${PORT} });
const fin = (r) => { console.log(r); process.exit(0); };
s.setTimeout(1000, () => fin('timeout'));
s.on('connect', () => fin('ok'));
s.on('error', (e) => fin(e.code));`;

interface Obj {
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  status?: Record<string, unknown>;
}
interface PodJ extends Obj {
  spec: { nodeName?: string };
  status: { phase?: string; podIP?: string; conditions?: { type: string; status: string }[] };
}

function pod(name: string, node: NodeName, labels: Record<string, string>, js: string, extra: Record<string, unknown> = {}, env: Record<string, string> = {}): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: NS, labels },
    spec: {
      nodeSelector: { 'kubernetes.io/hostname': node },
      terminationGracePeriodSeconds: 1,
      containers: [
        {
          name: 'c',
          image: IMAGE,
          imagePullPolicy: 'IfNotPresent',
          command: ['node', '-e', js],
          env: Object.entries(env).map(([name, value]) => ({ name, value })),
          ports: [{ containerPort: PORT, protocol: 'TCP' }],
          // Ready means listening (the prober does not listen: its probe would fail, it is exempt).
          ...(js === SERVER_JS ? { readinessProbe: { tcpSocket: { port: PORT }, periodSeconds: 1 } } : {}),
        },
      ],
      ...extra,
    },
  };
}

const apply = (obj: object): Promise<string> => kubectlOk(['apply', '-f', '-'], JSON.stringify(obj));
const ready = (p: PodJ): boolean => p.status.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false;

async function waitPodsReady(ns: string, selector: string, count: number, timeoutMs = 180_000): Promise<PodJ[]> {
  return waitFor(
    `${count} ready pods ${selector} in ${ns}`,
    async () => {
      const l = await getJson<{ items: PodJ[] }>(['get', 'pods', '-n', ns, '-l', selector]);
      const r = l.items.filter(ready);
      return r.length === count && l.items.length === count ? r : undefined;
    },
    timeoutMs,
    1000,
  );
}

async function probeOnce(from: string, ip: string): Promise<string> {
  return (await kubectlOk(['exec', '-n', NS, from, '--', 'node', '-e', PROBE_ONCE_JS, ip])).trim();
}

interface ProbeLine {
  t: number;
  to: string;
  r: string;
}
async function proberLog(name: string): Promise<ProbeLine[]> {
  const text = await kubectlOk(['logs', '-n', NS, name], undefined, 60_000);
  return text
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as ProbeLine);
}

const reached = (r: string): boolean => r === 'ok' || r === 'ECONNREFUSED';

describe('kube-npm on a real cluster (hack/cluster: kubelet, containerd, kube-proxy)', function () {
  this.timeout(0);
  const figures: string[] = [];
  const fig = (s: string): void => {
    figures.push(s);
    console.log(`      ${s}`);
  };
  let overlay = '';
  let isolatedIp = '';
  let openIp = '';
  /** The deny-all test passed: the operations below have something to keep. */
  let isolating = false;
  const probers: Record<string, NodeName> = { 'prober-n1': 'kc-n1', 'prober-n2': 'kc-n2' };

  before(async function () {
    if (!IMAGE || !IMAGE_NEXT) throw new Error('KNPM_IMAGE and KNPM_IMAGE_NEXT must name the loaded images (test/cluster/run.sh sets them)');
    const nodes = await getJson<{ items: Obj[] }>(['get', 'nodes']);
    expect(nodes.items.map((n) => n.metadata.name).sort()).to.deep.equal(['kc-n1', 'kc-n2']);
    // A rerun on a cluster kept up (KEEP_CLUSTER=1) starts from the same place.
    await kubectlOk(['delete', 'namespace', NS, '--ignore-not-found', '--wait=true'], undefined, 180_000);
    await kubectlOk(['delete', 'clusterrolebinding', 'knpm-rc-scraper', '--ignore-not-found']);
  });

  after(async () => {
    if (overlay) await rm(overlay, { recursive: true, force: true });
    if (figures.length) process.stderr.write(`\n  real cluster figures:\n${figures.map((f) => `    ${f}\n`).join('')}`);
  });

  it('installs with kubectl apply -k (config/default + an image override): operator and agents Ready on every node', async () => {
    overlay = await mkdtemp(join(tmpdir(), 'knpm-install-'));
    const [name, tag] = [IMAGE.slice(0, IMAGE.lastIndexOf(':')), IMAGE.slice(IMAGE.lastIndexOf(':') + 1)];
    // kustomize refuses absolute paths as resources; a relative one from the overlay works anywhere.
    await writeFile(
      join(overlay, 'kustomization.yaml'),
      `resources:\n  - ${relative(overlay, join(REPO, 'config/default'))}\nimages:\n  - name: ghcr.io/kube-npm/kube-npm\n    newName: ${name}\n    newTag: ${tag}\n`,
    );
    const t0 = Date.now();
    await kubectlOk(['apply', '-k', overlay]);
    await kubectlOk(['-n', SYS, 'rollout', 'status', 'deployment/kube-npm-operator', '--timeout=300s'], undefined, 320_000);
    await kubectlOk(['-n', SYS, 'rollout', 'status', 'daemonset/kube-npm-agent', '--timeout=300s'], undefined, 320_000);
    fig(`install: apply -k to operator 2/2 and agents 2/2 ready: ${Date.now() - t0} ms`);
    const agents = await waitPodsReady(SYS, 'app.kubernetes.io/component=agent', 2);
    expect(agents.map((p) => p.spec.nodeName).sort()).to.deep.equal(['kc-n1', 'kc-n2']);
    const pods = await getJson<{ items: { spec: { containers: { image: string }[] } }[] }>(['get', 'pods', '-n', SYS]);
    for (const p of pods.items) expect(p.spec.containers[0]!.image).to.equal(IMAGE);
    // The agent, inside its container, follows the iptables backend of the node's kube-proxy
    // (hack/cluster/up.sh NODE_IPTABLES, default nft), as its NpmNode reports.
    const backend = process.env.NODE_IPTABLES ?? 'nft';
    const reported = await waitFor(
      'both NpmNodes report a backend',
      async () => {
        const l = await getJson<{ items: { metadata: { name: string }; status?: { backend?: string } }[] }>(['get', 'npmnodes']);
        const b = l.items.map((n) => `${n.metadata.name}=${n.status?.backend ?? ''}`).sort();
        return b.length === 2 && b.every((x) => !x.endsWith('=')) ? b : undefined;
      },
      60_000,
      500,
    );
    expect(reported).to.deep.equal([`kc-n1=${backend}`, `kc-n2=${backend}`]);
  });

  it('a deny-all policy isolates a real pod from pods on both nodes; kubectl get nrs shows it Programmed 1/1', async () => {
    await kubectlOk(['create', 'namespace', NS]);
    await apply(pod('isolated', 'kc-n1', { role: 'isolated' }, SERVER_JS));
    // Both servers on kc-n1, so that draining kc-n2 leaves them (and prober-n1) in place.
    await apply(pod('open', 'kc-n1', { role: 'open' }, SERVER_JS));
    const servers = await waitPodsReady(NS, 'role in (isolated,open)', 2);
    isolatedIp = servers.find((p) => p.metadata.name === 'isolated')!.status.podIP!;
    openIp = servers.find((p) => p.metadata.name === 'open')!.status.podIP!;
    for (const [name, node] of Object.entries(probers)) {
      await apply(pod(name, node, { role: 'prober' }, PROBER_JS, {}, { TARGETS: `isolated=${isolatedIp},open=${openIp}` }));
    }
    await waitPodsReady(NS, 'role=prober', 2);
    // Before any policy both servers answer: the probes can succeed.
    for (const from of Object.keys(probers)) {
      expect(await probeOnce(from, isolatedIp), `${from} -> isolated before the policy`).to.equal('ok');
      expect(await probeOnce(from, openIp), `${from} -> open before the policy`).to.equal('ok');
    }
    const t0 = Date.now();
    await apply({
      apiVersion: 'networking.k8s.io/v1',
      kind: 'NetworkPolicy',
      metadata: { name: 'isolate', namespace: NS },
      spec: { podSelector: { matchLabels: { role: 'isolated' } }, policyTypes: ['Ingress'] },
    });
    // NODES counts the nodes that must enforce it: those hosting a selected pod (ADR 0011), here kc-n1.
    await waitFor(
      'NpmRuleSet knpm-rc/isolate Programmed on 1/1 nodes',
      async () => {
        const out = await kubectlOk(['get', 'nrs', '-n', NS, 'isolate']);
        return /\s1\/1\s+True\s+True\s/.test(out) ? out : undefined;
      },
      120_000,
      250,
    );
    fig(`policy created -> Programmed 1/1 in kubectl get nrs: ${Date.now() - t0} ms`);
    console.log((await kubectlOk(['get', 'nrs', '-A'])).replace(/^/gm, '        '));
    for (const from of Object.keys(probers)) {
      expect(await probeOnce(from, isolatedIp), `${from} -> isolated under deny-all`).to.equal('timeout');
      expect(await probeOnce(from, openIp), `${from} -> open`).to.equal('ok');
    }
    isolating = true;
  });

  it('/node-metrics and /cluster-metrics answer through their Services for a reader token, 401 without one', async () => {
    await kubectlOk(['create', 'serviceaccount', 'scraper', '-n', NS]);
    await kubectlOk(['create', 'clusterrolebinding', 'knpm-rc-scraper', '--clusterrole=kube-npm-metrics-reader', `--serviceaccount=${NS}:scraper`]);
    const token = (await kubectlOk(['create', 'token', 'scraper', '-n', NS])).trim();
    for (const [svc, path, metric] of [
      ['npm-metrics-cluster-service', '/cluster-metrics', /^npm_num_policies (\d+)/m],
      ['npm-metrics-node-service', '/node-metrics', /^npm_num_policies (\d+)/m],
    ] as const) {
      const ip = (await kubectlOk(['get', 'svc', '-n', SYS, svc, '-o', 'jsonpath={.spec.clusterIP}'])).trim();
      const url = `https://${ip}:10091${path}`;
      // From a node's namespace: kube-proxy's rules there carry the ClusterIP to an endpoint.
      const body = await waitFor(
        `${svc} ${path}`,
        async () => {
          const r = await inNode('kc-n1', 'curl', ['-sk', '--max-time', '5', '-H', `Authorization: Bearer ${token}`, url]);
          const m = metric.exec(r.stdout);
          // The cluster Service reaches either replica; only the leader reports counts.
          return m && Number(m[1]) >= 1 ? r.stdout : undefined;
        },
        60_000,
        1000,
      );
      fig(`${svc} ${path}: ${body.split('\n').filter((l) => l.startsWith('npm_')).length} npm_ samples, ${metric.exec(body)![0]}`);
      const anon = await inNode('kc-n1', 'curl', ['-sk', '--max-time', '5', '-o', '/dev/null', '-w', '%{http_code}', url]);
      expect(anon.stdout, `${svc} without a token`).to.equal('401');
    }
  });

  /** Runs `action` while the probers probe, then checks their log over that window. */
  async function underProbes(what: string, action: () => Promise<void>, only: string[] = Object.keys(probers)): Promise<void> {
    if (!isolating) throw new Error(`${what}: not run, the isolation it checks was never set up (see the deny-all test)`);
    const t0 = Date.now();
    await action();
    const t1 = Date.now();
    await new Promise((r) => setTimeout(r, 2000)); // probes in flight at t1 end within 500 ms
    for (const name of only) {
      const lines = (await proberLog(name)).filter((l) => l.t >= t0 && l.t <= t1);
      const iso = lines.filter((l) => l.to === 'isolated');
      const open = lines.filter((l) => l.to === 'open');
      const openOk = open.filter((l) => reached(l.r)).length;
      const isoReached = iso.filter((l) => reached(l.r));
      fig(`${what}: ${t1 - t0} ms; ${name}: isolated ${isoReached.length}/${iso.length} reached, open ${openOk}/${open.length} reached`);
      expect(iso.length, `${name} probed the isolated pod during ${what}`).to.be.greaterThan(0);
      expect(isoReached, `${name}: probes that reached the isolated pod during ${what}`).to.deep.equal([]);
      // The prober worked all along: most probes to the allowed pod got through.
      expect(openOk, `${name}: probes to the allowed pod during ${what}`).to.be.greaterThan(open.length / 2);
    }
  }

  it('an agent DaemonSet rollout to a new image tag: the isolated pod stays isolated', async () => {
    await underProbes('agent rollout to a new tag', async () => {
      await kubectlOk(['-n', SYS, 'set', 'image', 'daemonset/kube-npm-agent', `agent=${IMAGE_NEXT}`]);
      await kubectlOk(['-n', SYS, 'rollout', 'status', 'daemonset/kube-npm-agent', '--timeout=300s'], undefined, 320_000);
    });
    const agents = await waitPodsReady(SYS, 'app.kubernetes.io/component=agent', 2);
    expect(agents.length).to.equal(2);
  });

  it('an operator rolling update: the isolated pod stays isolated', async () => {
    await underProbes('operator rolling update', async () => {
      await kubectlOk(['-n', SYS, 'rollout', 'restart', 'deployment/kube-npm-operator']);
      await kubectlOk(['-n', SYS, 'rollout', 'status', 'deployment/kube-npm-operator', '--timeout=300s'], undefined, 320_000);
    });
  });

  it('kubectl delete pod of the agent on the isolated pod\'s node: the isolated pod stays isolated', async () => {
    await underProbes('agent pod deleted on kc-n1', async () => {
      const agents = await getJson<{ items: PodJ[] }>(['get', 'pods', '-n', SYS, '-l', 'app.kubernetes.io/component=agent']);
      const victim = agents.items.find((p) => p.spec.nodeName === 'kc-n1')!;
      await kubectlOk(['-n', SYS, 'delete', 'pod', victim.metadata.name, '--wait=true']);
      await waitFor(
        'a new ready agent on kc-n1',
        async () => {
          const l = await getJson<{ items: PodJ[] }>(['get', 'pods', '-n', SYS, '-l', 'app.kubernetes.io/component=agent']);
          return l.items.some((p) => p.spec.nodeName === 'kc-n1' && p.metadata.name !== victim.metadata.name && ready(p)) || undefined;
        },
        180_000,
        500,
      );
    });
  });

  it('kc-n2 drained and uncordoned: the isolated pod stays isolated; a new pod behind the readiness gate is isolated once Ready', async () => {
    // Draining evicts prober-n2 (a bare pod, hence --force); prober-n1 watches throughout.
    await underProbes(
      'kc-n2 drained, then uncordoned',
      async () => {
        await kubectlOk(['drain', 'kc-n2', '--ignore-daemonsets', '--delete-emptydir-data', '--force', '--timeout=180s'], undefined, 200_000);
        await kubectlOk(['-n', SYS, 'rollout', 'status', 'deployment/kube-npm-operator', '--timeout=300s'], undefined, 320_000);
        await kubectlOk(['uncordon', 'kc-n2']);
      },
      ['prober-n1'],
    );
    const t0 = Date.now();
    await apply(pod('isolated-2', 'kc-n2', { role: 'isolated' }, SERVER_JS, { readinessGates: [{ conditionType: 'kubenpm.io/PolicyProgrammed' }] }));
    const p = (await waitPodsReady(NS, 'role=isolated', 2)).find((x) => x.metadata.name === 'isolated-2')!;
    fig(`new pod behind the readiness gate on kc-n2: created -> Ready ${Date.now() - t0} ms`);
    for (let i = 0; i < 3; i++) expect(await probeOnce('prober-n1', p.status.podIP!), 'prober-n1 -> isolated-2 once Ready').to.equal('timeout');
    expect(await probeOnce('prober-n1', openIp), 'prober-n1 -> open').to.equal('ok');
  });

  it('removing the policy opens the pod again (the probe can succeed after isolation)', async () => {
    await kubectlOk(['delete', 'networkpolicy', '-n', NS, 'isolate']);
    await waitFor('isolated reachable after the policy is deleted', async () => (await probeOnce('prober-n1', isolatedIp)) === 'ok' || undefined, 60_000, 500);
    const r = await kubectl(['get', 'nrs', '-n', NS, 'isolate']);
    expect(r.code, 'the NpmRuleSet goes with its policy').to.not.equal(0);
  });
});
