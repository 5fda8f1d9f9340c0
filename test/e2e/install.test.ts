// The install against a real kube-apiserver v1.35.4 (test/support/controlplane.ts):
//  - every object `kubectl kustomize config/default` renders (and the samples) passes
//    `kubectl apply --dry-run=server --validate=strict`: schemas, defaulting, admission;
//  - the OLM bundle: OLM's own CRDs, taken from the Go module github.com/operator-framework/api
//    (hack/olm/go.mod), are installed, and the CSV and the rest of the bundle pass a server dry run;
//    a broken CSV is rejected (the check can fail); then the module's own validators run
//    (`go run ./validate` in hack/olm);
//  - RBAC: config/rbac applied for real, then `kubectl auth can-i --as=system:serviceaccount:...`
//    over a matrix of what each component needs and must not have;
//  - AgentDaemonSetManager running as the operator's ServiceAccount (a real token): creates the
//    DaemonSet owned by the operator Deployment, re-creates it after `kubectl delete`, reverts
//    `kubectl set image`.
import { expect } from 'chai';
import { copyFile, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { KubeConfig, type V1DaemonSet } from '@kubernetes/client-node';
import { parse, parseAllDocuments, stringify } from 'yaml';
import { run, startControlPlane, type ControlPlane } from '../support/controlplane.js';
import { kubectlOk, REPO, waitFor } from '../support/e2e.js';
import { AgentDaemonSetManager, agentDaemonSet, isSubset } from '../../operator/src/controller/daemonset.js';

const NS = 'kube-npm-system';
const OLM_MODULE = 'github.com/operator-framework/api';
const HACK_OLM = join(REPO, 'hack/olm');
// sum.golang.org is not reachable here; go.sum (committed) is what downloads are verified against.
const GO_ENV = { ...process.env, GOSUMDB: 'off', GOFLAGS: '-mod=readonly' };

type Obj = { apiVersion: string; kind: string; metadata: { name: string; namespace?: string; [k: string]: unknown }; [k: string]: unknown };
const docs = (text: string): Obj[] => parseAllDocuments(text).map((d) => d.toJS() as Obj | null).filter((o): o is Obj => o !== null);
const ms = (t0: number) => `${Date.now() - t0} ms`;

describe('install manifests against a real API server (e2e)', function () {
  this.timeout(0);
  let cp: ControlPlane;
  let rendered: string;
  const figures: string[] = [];

  before(async () => {
    cp = await startControlPlane({ log: () => undefined });
    rendered = await kubectlOk(cp, ['kustomize', join(REPO, 'config/default')]);
    // A dry run never creates the Namespace, and admission refuses objects in a missing one.
    await kubectlOk(cp, ['create', 'namespace', NS]);
  });
  after(async () => {
    if (figures.length) process.stderr.write(`\n  install e2e figures:\n${figures.map((f) => `    ${f}\n`).join('')}`);
    await cp?.stop();
  });

  it('every manifest of config/default passes apply --dry-run=server --validate=strict', async () => {
    const objs = docs(rendered);
    expect(objs.length).to.equal(26); // 16 + the node metrics Service + the metrics-reader ClusterRole + the agent's Lease Role and RoleBinding + 6 admission objects (config/admission)
    const r = await cp.kubectl(['apply', '--dry-run=server', '--validate=strict', '-f', '-'], { input: rendered });
    expect(r.code, r.stderr).to.equal(0);
    for (const o of objs) expect(r.stdout, `${o.kind}/${o.metadata.name}`).to.match(new RegExp(`${o.metadata.name}\\b.*\\(server dry run\\)`));
  });

  it('a manifest with an unknown field is rejected (the dry run is a real check)', async () => {
    const objs = docs(rendered);
    const ds = objs.find((o) => o.kind === 'DaemonSet')!;
    (ds.spec as { template: { spec: Record<string, unknown> } }).template.spec.hostNetwrok = true;
    const r = await cp.kubectl(['apply', '--dry-run=server', '--validate=strict', '-f', '-'], { input: stringify(ds) });
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.match(/unknown field "spec\.template\.spec\.hostNetwrok"/);
  });

  it('the samples pass a server dry run', async () => {
    await kubectlOk(cp, ['create', 'namespace', 'demo']);
    const samples = await kubectlOk(cp, ['kustomize', join(REPO, 'config/samples')]);
    const r = await cp.kubectl(['apply', '-n', 'demo', '--dry-run=server', '--validate=strict', '-f', '-'], { input: samples });
    expect(r.code, r.stderr).to.equal(0);
    expect(r.stdout.trim().split('\n')).to.have.length(5);
  });

  describe('OLM bundle', () => {
    let olmDir = '';
    let bundleDir = '';
    before(async () => {
      let t0 = Date.now();
      const d = await runIn(HACK_OLM, 'go', ['mod', 'download', OLM_MODULE]);
      expect(d.code, d.stderr).to.equal(0);
      const info = await runIn(HACK_OLM, 'go', ['list', '-m', '-json', OLM_MODULE]);
      expect(info.code, info.stderr).to.equal(0);
      const mod = JSON.parse(info.stdout) as { Version: string; Dir: string };
      figures.push(`go mod download ${OLM_MODULE}@${mod.Version}: ${ms(t0)}`);
      // Copy the module's CRDs (read-only in the module cache) and find the CSV's among them.
      olmDir = await mkdtemp(join(tmpdir(), 'kube-npm-olm-crds-'));
      const files = (await readdir(join(mod.Dir, 'crds'))).filter((f) => f.endsWith('.yaml'));
      let csvCrd = '';
      for (const f of files) {
        await copyFile(join(mod.Dir, 'crds', f), join(olmDir, f));
        const o = parse(await readFile(join(olmDir, f), 'utf8')) as { kind: string; spec?: { names?: { kind?: string } } };
        if (o.kind === 'CustomResourceDefinition' && o.spec?.names?.kind === 'ClusterServiceVersion') csvCrd = f;
      }
      expect(csvCrd, `no ClusterServiceVersion CRD among ${files.join(', ')}`).to.not.equal('');
      t0 = Date.now();
      // Server-side: the CSV CRD (~460 KB) is over the 256 KB last-applied annotation limit.
      await kubectlOk(cp, ['apply', '--server-side', '-f', olmDir]);
      await kubectlOk(cp, ['wait', '--for=condition=Established', '--timeout=60s', '-f', olmDir]);
      figures.push(`OLM CRDs (${files.length}, from ${mod.Version}) applied and Established: ${ms(t0)}`);
      bundleDir = join(REPO, 'config/olm');
    });
    after(async () => {
      // The CRD copies: read once by the before hook's apply, not needed after the suite.
      if (olmDir) await rm(olmDir, { recursive: true, force: true });
    });

    it('the CSV and every bundle manifest pass a server dry run against OLM\'s CSV schema', async () => {
      const manifests = (await readdir(join(bundleDir, 'manifests'))).sort();
      expect(manifests).to.include('kube-npm.clusterserviceversion.yaml');
      for (const f of manifests) {
        const r = await cp.kubectl(['apply', '-n', NS, '--dry-run=server', '--validate=strict', '--server-side', '-f', join(bundleDir, 'manifests', f)]);
        expect(r.code, `${f}: ${r.stderr}`).to.equal(0);
        expect(r.stdout, f).to.match(/serverside-applied \(server dry run\)/);
      }
    });

    it('a broken CSV is rejected by the same schema', async () => {
      const csv = parse(await readFile(join(bundleDir, 'manifests/kube-npm.clusterserviceversion.yaml'), 'utf8')) as { spec: Record<string, unknown> };
      const broken = structuredClone(csv);
      delete broken.spec.install;
      (broken.spec as { installModes: unknown }).installModes = 'AllNamespaces';
      const r = await cp.kubectl(['apply', '-n', NS, '--dry-run=server', '--validate=strict', '-f', '-'], { input: stringify(broken) });
      expect(r.code).to.not.equal(0);
      expect(r.stderr).to.match(/spec\.install: Required value/);
      expect(r.stderr).to.match(/spec\.installModes: Invalid value: "string"/);
    });

    it("the module's own bundle validators (operator-sdk's) find no error", async () => {
      const t0 = Date.now();
      const r = await runIn(HACK_OLM, 'go', ['run', './validate', bundleDir]);
      figures.push(`go run ./validate (build cached after the first run): ${ms(t0)}`);
      expect(r.code, r.stdout + r.stderr).to.equal(0);
      expect(r.stdout).to.match(/csv kube-npm\.v0\.1\.0, 3 CRDs\): 0 errors/);
      figures.push(`validators: ${r.stdout.trim().split('\n').pop()}`);
    });
    it('the validators do report errors (a bundle with a bad minKubeVersion fails)', async () => {
      const dir = await mkdtemp(join(tmpdir(), 'kube-npm-olm-bad-'));
      try {
        for (const sub of ['manifests', 'metadata']) {
          await run('cp', ['-r', join(bundleDir, sub), join(dir, sub)]);
        }
        const f = join(dir, 'manifests/kube-npm.clusterserviceversion.yaml');
        const text = await readFile(f, 'utf8');
        expect(text).to.match(/^ {2}minKubeVersion: 1\.25\.0$/m);
        await writeFile(f, text.replace(/^ {2}minKubeVersion: 1\.25\.0$/m, '  minKubeVersion: soon'));
        const r = await runIn(HACK_OLM, 'go', ['run', './validate', dir]);
        expect(r.code).to.equal(1);
        expect(r.stdout).to.match(/ERROR kube-npm\.v0\.1\.0: .*MinKubeVersion has an invalid value: soon/);
      } finally {
        // Also when an expectation fails: a failed run must not leave the bundle copy behind.
        await rm(dir, { recursive: true, force: true });
      }
    });
  });

  describe('RBAC (config/rbac applied for real)', () => {
    before(async () => {
      await kubectlOk(cp, ['apply', '-f', '-'], await kubectlOk(cp, ['kustomize', join(REPO, 'config/rbac')]));
    });
    const can = async (sa: string, verb: string, resource: string, opts: { ns?: string; sub?: string } = {}) => {
      const args = ['auth', 'can-i', verb, resource, `--as=system:serviceaccount:${NS}:${sa}`];
      if (opts.ns) args.push('-n', opts.ns);
      else args.push('--all-namespaces');
      if (opts.sub) args.push(`--subresource=${opts.sub}`);
      const r = await cp.kubectl(args);
      if (r.code > 1) throw new Error(`kubectl ${args.join(' ')}: ${r.stderr}`);
      return r.stdout.trim() === 'yes';
    };
    type Row = [verb: string, resource: string, opts?: { ns?: string; sub?: string }];
    const check = async (sa: string, allowed: Row[], denied: Row[]) => {
      const wrong: string[] = [];
      for (const [v, res, o] of allowed) if (!(await can(sa, v, res, o))) wrong.push(`cannot ${v} ${res}${o?.sub ? `/${o.sub}` : ''}${o?.ns ? ` in ${o.ns}` : ''}`);
      for (const [v, res, o] of denied) if (await can(sa, v, res, o)) wrong.push(`CAN ${v} ${res}${o?.sub ? `/${o.sub}` : ''}${o?.ns ? ` in ${o.ns}` : ''}`);
      expect(wrong, sa).to.deep.equal([]);
    };
    const read = (res: string): Row[] => ['get', 'list', 'watch'].map((v) => [v, res]);
    const write = (res: string): Row[] => ['create', 'patch', 'update', 'delete'].map((v) => [v, res]);

    it('the operator can do what it needs and nothing else', async () => {
      await check(
        'kube-npm-operator',
        [
          ...read('networkpolicies.networking.k8s.io'), ...read('pods'), ...read('namespaces'), ...read('npmnodes.kubenpm.io'),
          ...read('npmrulesets.kubenpm.io'), ...write('npmrulesets.kubenpm.io'), ...read('npmipsets.kubenpm.io'), ...write('npmipsets.kubenpm.io'),
          ['patch', 'npmrulesets.kubenpm.io', { sub: 'status' }], ['update', 'npmrulesets.kubenpm.io', { sub: 'status' }],
          ['create', 'events.events.k8s.io', { ns: 'demo' }], ['patch', 'events.events.k8s.io', { ns: 'demo' }],
          ['create', 'leases.coordination.k8s.io', { ns: NS }], ['get', 'leases.coordination.k8s.io/kube-npm-operator', { ns: NS }], ['update', 'leases.coordination.k8s.io/kube-npm-operator', { ns: NS }],
          ['create', 'tokenreviews.authentication.k8s.io'], ['create', 'subjectaccessreviews.authorization.k8s.io'],
          // Liveness (#10): the operator watches the agents' Leases and writes Ready=False (AgentNotReporting) on NpmNodes.
          ['list', 'leases.coordination.k8s.io', { ns: NS }], ['watch', 'leases.coordination.k8s.io', { ns: NS }],
          ['patch', 'npmnodes.kubenpm.io', { sub: 'status' }],
        ],
        [
          // The default install ships the agent DaemonSet: the operator may not create or change
          // DaemonSets (#9 item 9; only config/rbac/olm, the OLM install, grants that).
          ['create', 'daemonsets.apps', { ns: NS }],
          ...['get', 'list', 'watch', 'patch', 'update', 'delete'].map((v): Row => [v, 'daemonsets.apps/kube-npm-agent', { ns: NS }]),
          ['get', 'deployments.apps/kube-npm-operator', { ns: NS }],
          ...read('secrets'), ['get', 'secrets', { ns: NS }], ['list', 'configmaps', { ns: NS }],
          ...write('npmnodes.kubenpm.io'), ['update', 'npmnodes.kubenpm.io', { sub: 'status' }],
          ...write('networkpolicies.networking.k8s.io'), ...write('pods'), ['create', 'events', { ns: 'demo' }], ['create', 'pods/exec', { ns: NS }],
          ['create', 'leases.coordination.k8s.io', { ns: 'kube-system' }], ['update', 'leases.coordination.k8s.io/other', { ns: NS }],
          ['create', 'daemonsets.apps', { ns: 'kube-system' }], ['patch', 'daemonsets.apps/kube-proxy', { ns: NS }], ['list', 'daemonsets.apps', { ns: NS }], ['patch', 'daemonsets.apps/kube-npm-agent', { ns: 'kube-system' }],
          ['patch', 'deployments.apps/kube-npm-operator', { ns: NS }], ['get', 'deployments.apps/other', { ns: NS }],
          ['create', 'clusterrolebindings.rbac.authorization.k8s.io'], ['escalate', 'clusterroles.rbac.authorization.k8s.io'], ['impersonate', 'serviceaccounts'],
          ['*', '*'],
        ],
      );
    });

    it('the agent can do what it needs and nothing else', async () => {
      await check(
        'kube-npm-agent',
        [
          ...read('npmrulesets.kubenpm.io'), ...read('npmipsets.kubenpm.io'), ...read('pods'),
          ...read('networkpolicies.networking.k8s.io'), ['get', 'nodes'],
          ['get', 'npmnodes.kubenpm.io'], ['create', 'npmnodes.kubenpm.io'],
          ['patch', 'npmnodes.kubenpm.io', { sub: 'status' }], ['update', 'npmnodes.kubenpm.io', { sub: 'status' }],
          ['create', 'tokenreviews.authentication.k8s.io'], ['create', 'subjectaccessreviews.authorization.k8s.io'],
          // #10: it watches its own NpmNode (re-creates it if deleted) and renews its Lease (admission binds the name to its node).
          ['list', 'npmnodes.kubenpm.io'], ['watch', 'npmnodes.kubenpm.io'], ['create', 'leases.coordination.k8s.io', { ns: NS }],
        ],
        [
          ...write('npmrulesets.kubenpm.io'), ['patch', 'npmrulesets.kubenpm.io', { sub: 'status' }], ...write('npmipsets.kubenpm.io'),
          ...read('secrets'), ['get', 'secrets', { ns: NS }], ...read('configmaps'),
          ['patch', 'npmnodes.kubenpm.io'], ['update', 'npmnodes.kubenpm.io'], ['delete', 'npmnodes.kubenpm.io'],
          ...write('networkpolicies.networking.k8s.io'), ...read('namespaces'), ...write('pods'), ['create', 'pods/exec', { ns: NS }],
          ['create', 'events.events.k8s.io', { ns: NS }], ['create', 'leases.coordination.k8s.io', { ns: 'kube-system' }], ['list', 'nodes'], ['patch', 'nodes'], ['patch', 'daemonsets.apps/kube-npm-agent', { ns: NS }],
          ['*', '*'],
        ],
      );
    });

    it('with config/rbac/olm (OLM installs) the operator may manage the agent DaemonSet, and only it', async () => {
      await kubectlOk(cp, ['apply', '-f', '-'], await kubectlOk(cp, ['kustomize', join(REPO, 'config/rbac/olm')]));
      try {
        await check(
          'kube-npm-operator',
          [
            ['create', 'daemonsets.apps', { ns: NS }],
            ...['get', 'list', 'watch', 'patch', 'update', 'delete'].map((v): Row => [v, 'daemonsets.apps/kube-npm-agent', { ns: NS }]),
            ['get', 'deployments.apps/kube-npm-operator', { ns: NS }],
          ],
          [['create', 'daemonsets.apps', { ns: 'kube-system' }], ['patch', 'daemonsets.apps/kube-proxy', { ns: NS }], ['list', 'daemonsets.apps', { ns: NS }], ['patch', 'deployments.apps/kube-npm-operator', { ns: NS }]],
        );
      } finally {
        await kubectlOk(cp, ['delete', '-f', '-'], await kubectlOk(cp, ['kustomize', join(REPO, 'config/rbac/olm')]));
      }
    });

    it('the metrics reader may get /node-metrics and /cluster-metrics, nobody else may', async () => {
      await kubectlOk(cp, ['create', 'serviceaccount', 'prom', '-n', NS]);
      await kubectlOk(cp, ['create', 'clusterrolebinding', 'prom-kube-npm', '--clusterrole=kube-npm-metrics-reader', `--serviceaccount=${NS}:prom`]);
      const url = async (sa: string, path: string) => (await cp.kubectl(['auth', 'can-i', 'get', path, `--as=system:serviceaccount:${NS}:${sa}`])).stdout.trim() === 'yes';
      expect(await url('prom', '/node-metrics')).to.equal(true);
      expect(await url('prom', '/cluster-metrics')).to.equal(true);
      expect(await url('prom', '/metrics')).to.equal(false);
      expect(await url('kube-npm-agent', '/node-metrics')).to.equal(false);
    });
  });

  describe('AgentDaemonSetManager (as the operator ServiceAccount)', () => {
    let mgr: AgentDaemonSetManager | undefined;
    const logs: string[] = [];
    const getDs = async () => JSON.parse(await kubectlOk(cp, ['-n', NS, 'get', 'ds', 'kube-npm-agent', '-o', 'json', '--show-managed-fields'])) as V1DaemonSet;
    before(async () => {
      // RBAC, the options ConfigMap and the operator Deployment (its owner) for real.
      await kubectlOk(cp, ['apply', '-f', '-'], await kubectlOk(cp, ['kustomize', join(REPO, 'config/rbac')]));
      // The manager runs as in an OLM install: with the DaemonSet rights of config/rbac/olm.
      await kubectlOk(cp, ['apply', '-f', '-'], await kubectlOk(cp, ['kustomize', join(REPO, 'config/rbac/olm')]));
      await kubectlOk(cp, ['apply', '-f', '-'], await kubectlOk(cp, ['kustomize', join(REPO, 'config/manager')]));
      const token = (await kubectlOk(cp, ['-n', NS, 'create', 'token', 'kube-npm-operator', '--duration=1h'])).trim();
      const kc = new KubeConfig();
      kc.loadFromOptions({
        clusters: [{ name: 'cp', server: cp.server, caData: Buffer.from(cp.caPem).toString('base64') }],
        users: [{ name: 'operator-sa', token }],
        contexts: [{ name: 'sa', cluster: 'cp', user: 'operator-sa' }],
        currentContext: 'sa',
      });
      mgr = new AgentDaemonSetManager({ kc, namespace: NS, image: 'example.com/kube-npm:e2e', ownerDeployment: 'kube-npm-operator', log: (m) => void logs.push(m) });
    });
    after(async () => {
      await mgr?.stop();
    });

    it('creates the DaemonSet, owned by the operator Deployment, with the spec of agentDaemonSet()', async () => {
      const t0 = Date.now();
      await mgr!.start();
      const ds = await getDs();
      figures.push(`manager start -> DaemonSet created: ${ms(t0)}`);
      const dep = JSON.parse(await kubectlOk(cp, ['-n', NS, 'get', 'deploy', 'kube-npm-operator', '-o', 'json'])) as { metadata: { uid: string } };
      const owner = { apiVersion: 'apps/v1', kind: 'Deployment', name: 'kube-npm-operator', uid: dep.metadata.uid, controller: true };
      expect(ds.metadata?.ownerReferences).to.deep.equal([owner]);
      expect(isSubset(agentDaemonSet({ namespace: NS, image: 'example.com/kube-npm:e2e', owner }), ds)).to.equal(true);
      expect(ds.metadata?.managedFields?.some((f) => f.manager === 'kube-npm-operator' && f.operation === 'Apply')).to.equal(true);
      expect(mgr!.applies).to.equal(1);
    });

    it('re-creates it after kubectl delete', async () => {
      const before = await getDs();
      const t0 = Date.now();
      await kubectlOk(cp, ['-n', NS, 'delete', 'ds', 'kube-npm-agent', '--wait=false']);
      const after = await waitFor('the DaemonSet re-created', async () => {
        const r = await cp.kubectl(['-n', NS, 'get', 'ds', 'kube-npm-agent', '-o', 'json']);
        if (r.code !== 0) return false;
        const ds = JSON.parse(r.stdout) as V1DaemonSet;
        return ds.metadata?.uid !== before.metadata?.uid ? ds : false;
      });
      figures.push(`kubectl delete ds -> re-created: ${ms(t0)}`);
      expect(after.spec?.template.spec?.containers[0]?.image).to.equal('example.com/kube-npm:e2e');
    });

    it('reverts a manual edit of its image (and leaves fields it does not own alone)', async () => {
      const t0 = Date.now();
      await kubectlOk(cp, ['-n', NS, 'set', 'image', 'ds/kube-npm-agent', 'agent=evil.example.com/miner:1']);
      await kubectlOk(cp, ['-n', NS, 'annotate', 'ds/kube-npm-agent', 'example.com/note=kept']);
      const ds = await waitFor('the image reverted', async () => {
        const d = await getDs();
        return d.spec?.template.spec?.containers[0]?.image === 'example.com/kube-npm:e2e' ? d : false;
      });
      figures.push(`kubectl set image -> reverted: ${ms(t0)}`);
      expect(ds.metadata?.annotations?.['example.com/note']).to.equal('kept');
      // Settles: no apply loop once the object matches (our own apply's watch event is a no-op).
      const applies = mgr!.applies;
      await new Promise((r) => setTimeout(r, 1500));
      expect(mgr!.applies).to.equal(applies);
    });

    it('stop() leaves the DaemonSet in place', async () => {
      await mgr!.stop();
      mgr = undefined;
      await getDs();
      expect(logs.filter((l) => /failed/.test(l)), logs.join('\n')).to.deep.equal([]);
    });
  });
});

async function runIn(cwd: string, cmd: string, args: string[]) {
  // run() has no cwd option: go through sh -c with the directory.
  const quoted = [cmd, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  return run('sh', ['-c', `cd '${cwd}' && ${quoted}`], { env: GO_ENV, timeoutMs: 15 * 60_000 });
}
