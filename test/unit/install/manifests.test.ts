// The install manifests under config/, rendered with kustomize (no API server): they render, the
// CRD copies equal crds/, the agent DaemonSet equals agentDaemonSet() (the object the operator
// manages), the workloads have the security settings the install promises, the OLM bundle matches
// config/rbac and config/manager, and the CLI accepts the args the manifests pass.
// UPDATE_INSTALL=1 rewrites the generated files (CRD copies, config/agent/daemonset.yaml).
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseAllDocuments, stringify } from 'yaml';
import type { V1ClusterRole, V1DaemonSet, V1Deployment, V1PolicyRule, V1Role } from '@kubernetes/client-node';
import { agentDaemonSet, DEFAULT_IMAGE, isSubset } from '../../../operator/src/controller/daemonset.js';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));
const UPDATE = process.env.UPDATE_INSTALL === '1';

interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [k: string]: unknown;
}

/**
 * kubectl with kustomize: $KUBECTL, else the control plane's pinned kubectl if built
 * (hack/controlplane/build.sh), else kubectl on PATH; undefined when there is none.
 */
export function kubectlBin(): string | undefined {
  if (process.env.KUBECTL) return process.env.KUBECTL;
  const cached = join(process.env.KUBE_NPM_CACHE ?? join(homedir(), '.cache/kube-npm'), 'controlplane/v1.35.4/bin/kubectl');
  if (existsSync(cached)) return cached;
  return spawnSync('kubectl', ['version', '--client'], { encoding: 'utf8' }).status === 0 ? 'kubectl' : undefined;
}
const KUBECTL = kubectlBin();

function kustomize(dir: string): K8sObject[] {
  if (!KUBECTL) throw new Error('no kubectl');
  const r = spawnSync(KUBECTL, ['kustomize', join(REPO, dir)], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`kubectl kustomize ${dir} failed (${r.status}): ${r.stderr}`);
  return parseYaml(r.stdout);
}

function parseYaml(text: string): K8sObject[] {
  return parseAllDocuments(text)
    .map((d) => {
      if (d.errors.length > 0) throw new Error(d.errors.map((e) => e.message).join('; '));
      return d.toJS() as K8sObject | null;
    })
    .filter((o): o is K8sObject => o !== null);
}

const find = <T = K8sObject>(objs: K8sObject[], kind: string, name: string): T => {
  const o = objs.find((x) => x.kind === kind && x.metadata.name === name);
  if (!o) throw new Error(`no ${kind} ${name} among ${objs.map((x) => `${x.kind}/${x.metadata.name}`).join(', ')}`);
  return o as T;
};

/** Rules in a canonical form (sorted lists, sorted rules) to compare rule sets. */
function canonicalRules(rules: V1PolicyRule[] | undefined): string[] {
  return (rules ?? [])
    .map((r) =>
      JSON.stringify({
        apiGroups: [...(r.apiGroups ?? [])].sort(),
        resources: [...(r.resources ?? [])].sort(),
        resourceNames: [...(r.resourceNames ?? [])].sort(),
        verbs: [...r.verbs].sort(),
      }),
    )
    .sort();
}

/** Expand "verb on group/resource" pairs of a rule list (to assert exact grants). */
function grants(rules: V1PolicyRule[] | undefined): string[] {
  const out: string[] = [];
  for (const r of rules ?? [])
    for (const g of r.apiGroups ?? [])
      for (const res of r.resources ?? [])
        for (const v of r.verbs) out.push(`${v} ${g === '' ? '' : `${g}/`}${res}${r.resourceNames ? `[${[...r.resourceNames].sort().join(',')}]` : ''}`);
  return out.sort();
}

describe('install manifests (kustomize, no API server)', function () {
  this.timeout(60_000);
  before(function () {
    if (KUBECTL) return;
    // Said loudly: without kubectl nothing here runs (KUBECTL=..., or hack/controlplane/build.sh).
    process.stderr.write('\n*** SKIPPING install manifest tests: no kubectl (set KUBECTL or run hack/controlplane/build.sh) ***\n\n');
    this.skip();
  });

  describe('CRD copies', () => {
    const sources = readdirSync(join(REPO, 'crds')).filter((f) => f.endsWith('.yaml')).sort();
    for (const copyDir of ['config/crd/bases', 'config/olm/manifests']) {
      it(`${copyDir} holds byte-identical copies of crds/*.yaml`, () => {
        expect(sources).to.have.length.greaterThan(0);
        for (const f of sources) {
          const want = readFileSync(join(REPO, 'crds', f), 'utf8');
          const path = join(REPO, copyDir, f);
          if (UPDATE) writeFileSync(path, want);
          expect(existsSync(path), `${copyDir}/${f} missing (UPDATE_INSTALL=1 regenerates)`).to.equal(true);
          expect(readFileSync(path, 'utf8') === want, `${copyDir}/${f} differs from crds/${f} (UPDATE_INSTALL=1 regenerates)`).to.equal(true);
        }
        const copies = readdirSync(join(REPO, copyDir)).filter((f) => f.startsWith('kubenpm.io_'));
        expect(copies.sort()).to.deep.equal(sources);
      });
    }
    it('config/crd renders exactly the three CRDs', () => {
      const objs = kustomize('config/crd');
      expect(objs.map((o) => `${o.kind}/${o.metadata.name}`).sort()).to.deep.equal([
        'CustomResourceDefinition/npmipsets.kubenpm.io',
        'CustomResourceDefinition/npmnodes.kubenpm.io',
        'CustomResourceDefinition/npmrulesets.kubenpm.io',
      ]);
    });
  });

  describe('agent DaemonSet', () => {
    it('config/agent/daemonset.yaml is agentDaemonSet() (modulo namespace)', () => {
      const path = join(REPO, 'config/agent/daemonset.yaml');
      if (UPDATE) {
        const header =
          '# GENERATED from agentDaemonSet() in operator/src/controller/daemonset.ts (the object the operator\n' +
          '# manages with --manage-agent-daemonset). Do not edit: change the function, then run\n' +
          '#   UPDATE_INSTALL=1 npx mocha test/unit/install/manifests.test.ts\n';
        writeFileSync(path, header + stringify(agentDaemonSet(), { lineWidth: 0 }));
      }
      const rendered = find<V1DaemonSet>(kustomize('config/agent'), 'DaemonSet', 'kube-npm-agent');
      const want = agentDaemonSet({ namespace: rendered.metadata?.namespace ?? 'kube-npm-system' });
      expect(rendered).to.deep.equal(want);
    });
    it('the whole install renders the same DaemonSet in kube-npm-system', () => {
      const ds = find<V1DaemonSet>(kustomize('config/default'), 'DaemonSet', 'kube-npm-agent');
      expect(ds).to.deep.equal(agentDaemonSet({ namespace: 'kube-npm-system', image: DEFAULT_IMAGE }));
    });
    it('runs on every node, on the host network, as root with NET_ADMIN + NET_RAW only', () => {
      const pod = agentDaemonSet().spec!.template.spec!;
      expect(pod.hostNetwork).to.equal(true);
      expect(pod.tolerations).to.deep.equal([{ operator: 'Exists' }]);
      expect(pod.priorityClassName).to.equal('system-node-critical');
      const c = pod.containers[0]!;
      expect(c.securityContext?.capabilities).to.deep.equal({ drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] });
      expect(c.securityContext?.privileged).to.equal(false);
      expect(c.securityContext?.readOnlyRootFilesystem).to.equal(true);
      expect(c.securityContext?.allowPrivilegeEscalation).to.equal(false);
      expect(c.resources?.requests).to.include.keys('cpu', 'memory');
      expect(c.resources?.limits).to.include.keys('memory');
      expect(pod.volumes).to.deep.equal([{ name: 'xtables-lock', hostPath: { path: '/run/xtables.lock', type: 'FileOrCreate' } }]);
      // metrics (HTTPS, authorized) and the kubelet's probes on their own plain-HTTP port
      expect(c.ports).to.deep.equal([{ name: 'metrics', containerPort: 10091, protocol: 'TCP' }, { name: 'health', containerPort: 10092, protocol: 'TCP' }]);
      expect(c.livenessProbe?.httpGet).to.deep.equal({ path: '/healthz', port: 'health' });
      expect(c.readinessProbe?.httpGet).to.deep.equal({ path: '/readyz', port: 'health' });
      expect(c.args?.slice(0, 3)).to.deep.equal(['agent', '--node-name', '$(NODE_NAME)']);
    });
    it('an owner reference is added only when given', () => {
      expect(agentDaemonSet().metadata?.ownerReferences).to.equal(undefined);
      const owner = { apiVersion: 'apps/v1', kind: 'Deployment', name: 'kube-npm-operator', uid: 'u1', controller: true };
      expect(agentDaemonSet({ owner }).metadata?.ownerReferences).to.deep.equal([owner]);
    });
  });

  describe('isSubset (what the DaemonSet manager calls "unchanged")', () => {
    const ds = agentDaemonSet();
    it('ignores fields the API server adds', () => {
      const live = structuredClone(ds) as V1DaemonSet & { status?: Record<string, number> };
      live.metadata!.uid = 'x';
      live.spec!.revisionHistoryLimit = 10;
      live.spec!.template.spec!.containers[0]!.terminationMessagePath = '/dev/termination-log';
      live.status = { numberReady: 1, currentNumberScheduled: 1, desiredNumberScheduled: 1, numberMisscheduled: 0 };
      expect(isSubset(ds, live)).to.equal(true);
    });
    it('sees an edited image, a removed env var and a missing field', () => {
      const edited = structuredClone(ds);
      edited.spec!.template.spec!.containers[0]!.image = 'evil:1';
      expect(isSubset(ds, edited)).to.equal(false);
      const fewer = structuredClone(ds);
      fewer.spec!.template.spec!.containers[0]!.env!.pop();
      expect(isSubset(ds, fewer)).to.equal(false);
      const noTolerations = structuredClone(ds);
      delete noTolerations.spec!.template.spec!.tolerations;
      expect(isSubset(ds, noTolerations)).to.equal(false);
    });
  });

  describe('config/default (the whole install)', () => {
    let objs: K8sObject[];
    before(() => {
      objs = kustomize('config/default');
    });
    it('renders every component into kube-npm-system', () => {
      const names = objs.map((o) => `${o.kind}/${o.metadata.name}`).sort();
      expect(names).to.deep.equal([
        'ClusterRole/kube-npm-agent',
        'ClusterRole/kube-npm-metrics-reader',
        'ClusterRole/kube-npm-operator',
        'ClusterRoleBinding/kube-npm-agent',
        'ClusterRoleBinding/kube-npm-operator',
        'ConfigMap/kube-npm-options',
        'CustomResourceDefinition/npmipsets.kubenpm.io',
        'CustomResourceDefinition/npmnodes.kubenpm.io',
        'CustomResourceDefinition/npmrulesets.kubenpm.io',
        'DaemonSet/kube-npm-agent',
        'Deployment/kube-npm-operator',
        'Namespace/kube-npm-system',
        'Role/kube-npm-agent',
        'Role/kube-npm-operator',
        'RoleBinding/kube-npm-agent',
        'RoleBinding/kube-npm-operator',
        'Service/npm-metrics-cluster-service',
        'Service/npm-metrics-node-service',
        'ServiceAccount/kube-npm-agent',
        'ServiceAccount/kube-npm-operator',
        'ValidatingAdmissionPolicy/kube-npm-agent-owns-its-lease',
        'ValidatingAdmissionPolicy/kube-npm-agent-owns-its-npmnode',
        'ValidatingAdmissionPolicy/kube-npm-operator-owns-rulesets',
        'ValidatingAdmissionPolicyBinding/kube-npm-agent-owns-its-lease',
        'ValidatingAdmissionPolicyBinding/kube-npm-agent-owns-its-npmnode',
        'ValidatingAdmissionPolicyBinding/kube-npm-operator-owns-rulesets',
      ]);
      const clusterScoped = new Set(['ClusterRole', 'ClusterRoleBinding', 'CustomResourceDefinition', 'Namespace']);
      // kustomize's namespace transformer does not know these kinds are cluster-scoped; the API server
      // drops the namespace of a cluster-scoped object (test/e2e/admission.test.ts applies them so).
      const admission = new Set(['ValidatingAdmissionPolicy', 'ValidatingAdmissionPolicyBinding']);
      for (const o of objs.filter((x) => !admission.has(x.kind))) expect(o.metadata.namespace, `${o.kind}/${o.metadata.name}`).to.equal(clusterScoped.has(o.kind) ? undefined : 'kube-npm-system');
      for (const b of objs.filter((o) => o.kind.endsWith('Binding') && !admission.has(o.kind))) {
        for (const s of (b as unknown as { subjects: { namespace: string }[] }).subjects) expect(s.namespace).to.equal('kube-npm-system');
      }
    });
    it('the operator Deployment: 2 replicas, probes on 10092 (metrics on 10091), non-root, read-only, no capabilities', () => {
      const d = find<V1Deployment>(objs, 'Deployment', 'kube-npm-operator');
      expect(d.spec?.replicas).to.equal(2);
      const pod = d.spec!.template.spec!;
      const c = pod.containers[0]!;
      expect(c.args?.slice(0, 2)).to.deep.equal(['operator', '--leader-election-namespace=$(POD_NAMESPACE)']);
      const env = new Map(c.env?.map((e) => [e.name, e]));
      expect(env.get('POD_NAMESPACE')?.valueFrom?.fieldRef?.fieldPath).to.equal('metadata.namespace');
      expect(env.get('POD_NAME')?.valueFrom?.fieldRef?.fieldPath).to.equal('metadata.name');
      expect(c.livenessProbe?.httpGet).to.deep.equal({ path: '/healthz', port: 'health' });
      expect(c.readinessProbe?.httpGet).to.deep.equal({ path: '/readyz', port: 'health' });
      expect(c.ports).to.deep.equal([{ name: 'metrics', containerPort: 10091, protocol: 'TCP' }, { name: 'health', containerPort: 10092, protocol: 'TCP' }]);
      expect(pod.securityContext?.runAsNonRoot).to.equal(true);
      expect(pod.securityContext?.runAsUser).to.equal(65532);
      expect(c.securityContext).to.deep.equal({ allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: { drop: ['ALL'] } });
      expect(c.resources?.requests).to.include.keys('cpu', 'memory');
      expect(c.resources?.limits).to.include.keys('memory');
      expect(pod.serviceAccountName).to.equal('kube-npm-operator');
    });
    it('the metrics Service selects the operator pods (not the agents) on 10091', () => {
      const svc = find(objs, 'Service', 'npm-metrics-cluster-service') as unknown as { spec: { selector: Record<string, string>; ports: { port: number; targetPort: string }[] } };
      const d = find<V1Deployment>(objs, 'Deployment', 'kube-npm-operator');
      expect(isSubset(svc.spec.selector, d.spec!.template.metadata!.labels)).to.equal(true);
      expect(isSubset(svc.spec.selector, agentDaemonSet().spec!.template.metadata!.labels)).to.equal(false);
      expect(svc.spec.ports).to.deep.equal([{ name: 'metrics', port: 10091, targetPort: 'metrics', protocol: 'TCP' }]);
    });
    it('every ConfigMap key a workload references exists, and every key is used', () => {
      const cm = find(objs, 'ConfigMap', 'kube-npm-options') as unknown as { data: Record<string, string> };
      const used = new Set<string>();
      for (const w of [find<V1Deployment>(objs, 'Deployment', 'kube-npm-operator'), find<V1DaemonSet>(objs, 'DaemonSet', 'kube-npm-agent')]) {
        const c = w.spec!.template.spec!.containers[0]!;
        for (const e of c.env ?? []) {
          const ref = e.valueFrom?.configMapKeyRef;
          if (!ref) continue;
          expect(ref.name).to.equal('kube-npm-options');
          expect(cm.data, `${w.kind} env ${e.name}`).to.have.property(ref.key);
          used.add(ref.key);
        }
        // Every $(VAR) in args is a declared env var (else the kubelet passes it literally).
        const names = new Set(c.env?.map((e) => e.name));
        for (const a of c.args ?? []) for (const m of a.matchAll(/\$\(([^)]+)\)/g)) expect(names.has(m[1]!), `${w.kind} arg ${a}`).to.equal(true);
      }
      expect([...used].sort()).to.deep.equal(Object.keys(cm.data).sort());
    });
  });

  describe('RBAC', () => {
    const objs = () => kustomize('config/rbac');
    it('the operator gets exactly what it uses', () => {
      const o = objs();
      expect(grants(find<V1ClusterRole>(o, 'ClusterRole', 'kube-npm-operator').rules)).to.deep.equal(
        [
          ...['get', 'list', 'watch'].flatMap((v) => [`${v} networking.k8s.io/networkpolicies`, `${v} pods`, `${v} namespaces`, `${v} kubenpm.io/npmnodes`]),
          'patch pods/status', // the membership condition on pods that opt in (ADR 0007)
          ...['get', 'list', 'watch', 'create', 'patch', 'update', 'delete'].flatMap((v) => [`${v} kubenpm.io/npmrulesets`, `${v} kubenpm.io/npmipsets`]),
          'patch kubenpm.io/npmrulesets/status',
          'update kubenpm.io/npmrulesets/status',
          'patch kubenpm.io/npmnodes/status', // Ready=False when an agent's Lease expires (#10)
          'create events.k8s.io/events',
          'patch events.k8s.io/events',
          'create authentication.k8s.io/tokenreviews',
          'create authorization.k8s.io/subjectaccessreviews',
        ].sort(),
      );
      // The default install ships the agent DaemonSet (config/agent): no DaemonSet rights (#9 item 9).
      expect(grants(find<V1Role>(o, 'Role', 'kube-npm-operator').rules)).to.deep.equal(
        ['create coordination.k8s.io/leases', 'get coordination.k8s.io/leases[kube-npm-operator]', 'update coordination.k8s.io/leases[kube-npm-operator]', 'list coordination.k8s.io/leases', 'watch coordination.k8s.io/leases'].sort(),
      );
      expect(o.flatMap((x) => (x as { rules?: V1PolicyRule[] }).rules ?? []).some((r) => r.resources?.includes('daemonsets') || r.resources?.includes('deployments'))).to.equal(false);
    });
    it('only the OLM-style install (config/rbac/olm) lets the operator manage the agent DaemonSet', () => {
      expect(grants(find<V1Role>(kustomize('config/rbac/olm'), 'Role', 'kube-npm-operator-daemonset-manager').rules)).to.deep.equal(
        ['create apps/daemonsets', ...['get', 'list', 'watch', 'patch', 'update', 'delete'].map((v) => `${v} apps/daemonsets[kube-npm-agent]`), 'get apps/deployments[kube-npm-operator]'].sort(),
      );
    });
    it('the metrics reader may get the two metrics paths and nothing else', () => {
      expect(find<V1ClusterRole>(objs(), 'ClusterRole', 'kube-npm-metrics-reader').rules).to.deep.equal([{ nonResourceURLs: ['/node-metrics', '/cluster-metrics'], verbs: ['get'] }]);
    });
    it('the agent gets exactly what it uses', () => {
      expect(grants(find<V1ClusterRole>(objs(), 'ClusterRole', 'kube-npm-agent').rules)).to.deep.equal(
        [
          ...['get', 'list', 'watch'].flatMap((v) => [`${v} kubenpm.io/npmrulesets`, `${v} kubenpm.io/npmipsets`, `${v} pods`, `${v} networking.k8s.io/networkpolicies`]),
          'get nodes',
          'get kubenpm.io/npmnodes',
          'list kubenpm.io/npmnodes',
          'watch kubenpm.io/npmnodes',
          'create kubenpm.io/npmnodes',
          'patch kubenpm.io/npmnodes/status',
          'update kubenpm.io/npmnodes/status',
          'create authentication.k8s.io/tokenreviews',
          'create authorization.k8s.io/subjectaccessreviews',
        ].sort(),
      );
      // Its liveness Lease, in its own namespace only (agent/lease.ts).
      expect(grants(find<V1Role>(objs(), 'Role', 'kube-npm-agent').rules)).to.deep.equal(['create coordination.k8s.io/leases', 'get coordination.k8s.io/leases', 'update coordination.k8s.io/leases']);
    });
  });

  describe('OLM bundle (config/olm)', () => {
    const csvFile = () => readdirSync(join(REPO, 'config/olm/manifests')).find((f) => f.endsWith('.clusterserviceversion.yaml'))!;
    const csv = () => parseYaml(readFileSync(join(REPO, 'config/olm/manifests', csvFile()), 'utf8'))[0] as K8sObject & { spec: CsvSpec };
    interface CsvSpec {
      version: string;
      maturity: string;
      keywords: string[];
      icon: { base64data: string; mediatype: string }[];
      installModes: { type: string; supported: boolean }[];
      customresourcedefinitions: { owned: { name: string; kind: string; version: string; description?: string; specDescriptors?: unknown[]; statusDescriptors?: unknown[] }[] };
      install: {
        strategy: string;
        spec: {
          deployments: { name: string; spec: V1Deployment['spec'] }[];
          permissions: { serviceAccountName: string; rules: V1PolicyRule[] }[];
          clusterPermissions: { serviceAccountName: string; rules: V1PolicyRule[] }[];
        };
      };
    }
    it('names version 0.1.0, alpha, AllNamespaces, an icon, keywords', () => {
      const c = csv();
      expect(csvFile()).to.equal('kube-npm.clusterserviceversion.yaml');
      expect(c.metadata.name).to.equal('kube-npm.v0.1.0');
      expect(c.spec.version).to.equal('0.1.0');
      expect(c.spec.maturity).to.equal('alpha');
      expect(c.spec.keywords.length).to.be.greaterThan(0);
      expect(c.spec.installModes.find((m) => m.type === 'AllNamespaces')?.supported).to.equal(true);
      const icon = c.spec.icon[0]!;
      expect(icon.mediatype).to.equal('image/svg+xml');
      expect(Buffer.from(icon.base64data, 'base64').toString('utf8')).to.match(/^<svg [^>]*xmlns="http:\/\/www.w3.org\/2000\/svg"[\s\S]*<\/svg>\s*$/);
    });
    it('owns the three CRDs, with descriptions and spec/status descriptors', () => {
      const owned = csv().spec.customresourcedefinitions.owned;
      expect(owned.map((o) => `${o.kind} ${o.name} ${o.version}`).sort()).to.deep.equal([
        'NpmIPSet npmipsets.kubenpm.io v1alpha1',
        'NpmNode npmnodes.kubenpm.io v1alpha1',
        'NpmRuleSet npmrulesets.kubenpm.io v1alpha1',
      ]);
      for (const o of owned) {
        expect(o.description, o.kind).to.be.a('string').and.not.equal('');
        // Descriptors for what each kind has: NpmNode has no spec, NpmIPSet no status.
        const crd = parseYaml(readFileSync(join(REPO, 'crds', `kubenpm.io_${o.name.split('.')[0]}.yaml`), 'utf8'))[0] as unknown as {
          spec: { versions: { schema: { openAPIV3Schema: { properties: Record<string, { properties?: Record<string, unknown> }> } } }[] };
        };
        const props = crd.spec.versions[0]!.schema.openAPIV3Schema.properties;
        for (const [part, descriptors] of [['spec', o.specDescriptors], ['status', o.statusDescriptors]] as const) {
          const fields = Object.keys(props[part]?.properties ?? {});
          expect((descriptors ?? []).length > 0, `${o.kind} ${part}Descriptors`).to.equal(fields.length > 0);
          // Every descriptor names a real top-level field of that part.
          for (const d of (descriptors ?? []) as { path: string }[]) expect(fields, `${o.kind} ${part} descriptor ${d.path}`).to.include(d.path.split('.')[0]);
        }
      }
    });
    it('permissions and clusterPermissions are config/rbac', () => {
      const rbac = kustomize('config/rbac');
      const { permissions, clusterPermissions } = csv().spec.install.spec;
      const by = (l: { serviceAccountName: string; rules: V1PolicyRule[] }[], sa: string) => l.find((p) => p.serviceAccountName === sa)?.rules;
      expect(clusterPermissions.map((p) => p.serviceAccountName).sort()).to.deep.equal(['kube-npm-agent', 'kube-npm-operator']);
      expect(canonicalRules(by(clusterPermissions, 'kube-npm-operator'))).to.deep.equal(canonicalRules(find<V1ClusterRole>(rbac, 'ClusterRole', 'kube-npm-operator').rules));
      expect(canonicalRules(by(clusterPermissions, 'kube-npm-agent'))).to.deep.equal(canonicalRules(find<V1ClusterRole>(rbac, 'ClusterRole', 'kube-npm-agent').rules));
      expect(permissions.map((p) => p.serviceAccountName)).to.deep.equal(['kube-npm-operator', 'kube-npm-agent']);
      expect(canonicalRules(by(permissions, 'kube-npm-agent'))).to.deep.equal(canonicalRules(find<V1Role>(rbac, 'Role', 'kube-npm-agent').rules));
      // OLM's operator manages the agent DaemonSet: config/rbac's Role plus config/rbac/olm's.
      const olm = find<V1Role>(kustomize('config/rbac/olm'), 'Role', 'kube-npm-operator-daemonset-manager').rules ?? [];
      expect(canonicalRules(by(permissions, 'kube-npm-operator'))).to.deep.equal(canonicalRules([...(find<V1Role>(rbac, 'Role', 'kube-npm-operator').rules ?? []), ...olm]));
    });
    it('its Deployment is config/manager plus the flags that make the operator run the agents', () => {
      const d = csv().spec.install.spec.deployments;
      expect(d.map((x) => x.name)).to.deep.equal(['kube-npm-operator']);
      const mine = find<V1Deployment>(kustomize('config/manager'), 'Deployment', 'kube-npm-operator');
      const want = structuredClone(mine.spec!);
      want.template.spec!.containers[0]!.args!.push('--manage-agent-daemonset', `--agent-image=${DEFAULT_IMAGE}`);
      expect(d[0]!.spec).to.deep.equal(want);
    });
    it('the bundle carries the CRDs, the options ConfigMap and the metrics Service of config/', () => {
      const dir = join(REPO, 'config/olm/manifests');
      const mgr = kustomize('config/manager');
      for (const [file, kind, name] of [
        ['kube-npm-options_v1_configmap.yaml', 'ConfigMap', 'kube-npm-options'],
        ['npm-metrics-cluster-service_v1_service.yaml', 'Service', 'npm-metrics-cluster-service'],
        ['kube-npm-metrics-reader_rbac.authorization.k8s.io_v1_clusterrole.yaml', 'ClusterRole', 'kube-npm-metrics-reader'],
      ] as const) {
        const got = parseYaml(readFileSync(join(dir, file), 'utf8'))[0]!;
        const want = structuredClone(find(kind === 'ClusterRole' ? kustomize('config/rbac') : mgr, kind, name));
        delete want.metadata.namespace; // OLM installs into the OperatorGroup's namespace
        expect(got, file).to.deep.equal(want);
      }
    });
    it('metadata/annotations.yaml and bundle.Dockerfile agree', () => {
      const ann = (parseYaml(readFileSync(join(REPO, 'config/olm/metadata/annotations.yaml'), 'utf8'))[0] as unknown as { annotations: Record<string, string> }).annotations;
      expect(ann['operators.operatorframework.io.bundle.mediatype.v1']).to.equal('registry+v1');
      expect(ann['operators.operatorframework.io.bundle.package.v1']).to.equal('kube-npm');
      const df = readFileSync(join(REPO, 'config/olm/bundle.Dockerfile'), 'utf8');
      for (const [k, v] of Object.entries(ann)) expect(df, k).to.include(`LABEL ${k}=${v}`);
      expect(df).to.match(/^COPY manifests \/manifests\/$/m);
      expect(df).to.match(/^COPY metadata \/metadata\/$/m);
    });
  });

  describe('the CLI accepts the args the manifests pass', () => {
    // Substitute the ConfigMap defaults for $(VAR), run the real CLI with an unreadable kubeconfig:
    // exit 2 is a flag error; anything else means the flags were accepted (it then fails on the
    // kubeconfig, before touching anything).
    const cli = (args: string[]) =>
      spawnSync(process.execPath, ['--import', 'tsx', join(REPO, 'operator/src/cli/main.ts'), ...args, '--kubeconfig', '/nonexistent/kubeconfig'], {
        encoding: 'utf8',
        timeout: 30_000,
        env: { ...process.env, POD_NAMESPACE: 'kube-npm-system', POD_NAME: 'p', NODE_NAME: 'n1' },
      });
    const expand = (objs: K8sObject[], w: V1Deployment | V1DaemonSet) => {
      const cm = (find(objs, 'ConfigMap', 'kube-npm-options') as unknown as { data: Record<string, string> }).data;
      const c = w.spec!.template.spec!.containers[0]!;
      const env = new Map(
        (c.env ?? []).map((e) => [e.name, e.value ?? (e.valueFrom?.configMapKeyRef ? cm[e.valueFrom.configMapKeyRef.key] : e.valueFrom?.fieldRef?.fieldPath === 'spec.nodeName' ? 'n1' : 'x')]),
      );
      return (c.args ?? []).map((a) => a.replace(/\$\(([^)]+)\)/g, (_m, v: string) => env.get(v) ?? `$(${v})`));
    };
    it('kube-npm operator (config/manager)', () => {
      const objs = kustomize('config/default');
      const r = cli(expand(objs, find<V1Deployment>(objs, 'Deployment', 'kube-npm-operator')));
      expect(r.status, r.stderr).to.not.equal(2);
      expect(r.stderr).to.match(/nonexistent/);
    });
    it('kube-npm agent (config/agent)', () => {
      const objs = kustomize('config/default');
      const r = cli(expand(objs, find<V1DaemonSet>(objs, 'DaemonSet', 'kube-npm-agent')));
      expect(r.status, r.stderr).to.not.equal(2);
      expect(r.stderr).to.match(/nonexistent/);
    });
  });
});
