// End-to-end check of the test control plane itself: a real etcd and
// kube-apiserver (hack/controlplane), RBAC on, driven with kubectl.
import { expect } from 'chai';
import { existsSync } from 'node:fs';
import {
  isProcessRunning,
  pinnedKubernetesVersion,
  startControlPlane,
  type ControlPlane,
} from '../support/controlplane.js';

const NS = 'kube-npm-e2e';

const POLICY = `
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata:
  name: allow-web
  namespace: ${NS}
spec:
  podSelector:
    matchLabels: { app: web }
  policyTypes: [Ingress]
  ingress:
  - from:
    - podSelector:
        matchLabels: { role: client }
    ports:
    - { protocol: TCP, port: 8080 }
`;

interface VersionInfo {
  clientVersion?: { gitVersion?: string };
  serverVersion?: { gitVersion?: string; major?: string };
}

describe('test control plane (real etcd + kube-apiserver)', function () {
  let cp: ControlPlane | undefined;

  before(async function () {
    // The first run builds kube-apiserver from source (about 8 minutes cold on 2 cores).
    this.timeout(0);
    cp = await startControlPlane();
  });

  after(async function () {
    this.timeout(120_000);
    await cp?.stop();
  });

  function plane(): ControlPlane {
    if (!cp) throw new Error('control plane not started');
    return cp;
  }

  it('serves the pinned Kubernetes version', async function () {
    const res = await plane().kubectl(['version', '-o', 'json']);
    expect(res.code, res.stderr).to.equal(0);
    const info = JSON.parse(res.stdout) as VersionInfo;
    expect(info.serverVersion?.major).to.equal('1');
    expect(info.serverVersion?.gitVersion).to.match(/^v1\.\d+\.\d+/);
    if (!process.env.KUBE_APISERVER && !process.env.KUBEBUILDER_ASSETS) {
      expect(info.serverVersion?.gitVersion).to.equal(pinnedKubernetesVersion());
      if (!process.env.KUBECTL) expect(info.clientVersion?.gitVersion).to.equal(pinnedKubernetesVersion());
    }
  });

  it('stores a namespace and a NetworkPolicy and reads them back', async function () {
    const kc = plane().kubectl;
    const ns = await kc(['create', 'namespace', NS]);
    expect(ns.code, ns.stderr).to.equal(0);

    const apply = await kc(['apply', '-f', '-'], { input: POLICY });
    expect(apply.code, apply.stderr).to.equal(0);
    expect(apply.stdout).to.contain('networkpolicy.networking.k8s.io/allow-web created');

    const gotNs = await kc(['get', 'namespace', NS, '-o', 'jsonpath={.status.phase}']);
    expect(gotNs.code, gotNs.stderr).to.equal(0);
    expect(gotNs.stdout).to.equal('Active');

    const got = await kc(['get', 'networkpolicy', 'allow-web', '-n', NS, '-o', 'json']);
    expect(got.code, got.stderr).to.equal(0);
    const np = JSON.parse(got.stdout) as {
      metadata: { uid?: string; namespace?: string };
      spec: { podSelector: unknown; policyTypes: string[]; ingress: unknown[] };
    };
    expect(np.metadata.namespace).to.equal(NS);
    expect(np.metadata.uid ?? '').to.have.length.above(0);
    expect(np.spec.podSelector).to.deep.equal({ matchLabels: { app: 'web' } });
    expect(np.spec.policyTypes).to.deep.equal(['Ingress']);
    expect(np.spec.ingress).to.deep.equal([
      {
        from: [{ podSelector: { matchLabels: { role: 'client' } } }],
        ports: [{ protocol: 'TCP', port: 8080 }],
      },
    ]);
  });

  it('accepts pods without a service-account controller', async function () {
    const pod = await plane().kubectl([
      'run', 'web', '-n', NS, '--image=registry.invalid/web:1', '--labels=app=web', '--restart=Never',
    ]);
    expect(pod.code, pod.stderr).to.equal(0);
    const got = await plane().kubectl(['get', 'pod', 'web', '-n', NS, '-o', 'jsonpath={.metadata.labels.app}']);
    expect(got.stdout).to.equal('web');
  });

  it('enforces RBAC', async function () {
    const kc = plane().kubectl;
    const nobody = await kc(['auth', 'can-i', 'get', 'secrets', '--as=system:serviceaccount:default:nobody']);
    expect(nobody.stdout.trim()).to.equal('no');
    expect(nobody.code).to.equal(1);

    const forbidden = await kc(['get', 'secrets', '-n', 'default', '--as=system:serviceaccount:default:nobody']);
    expect(forbidden.code).to.not.equal(0);
    expect(forbidden.stderr).to.match(/forbidden/i);

    const admin = await kc(['auth', 'can-i', '*', '*', '--all-namespaces']);
    expect(admin.stdout.trim()).to.equal('yes');
    expect(admin.code).to.equal(0);

    // Granting a Role through RBAC flips the answer.
    const role = await kc(['create', 'role', 'secret-reader', '-n', NS, '--verb=get', '--resource=secrets']);
    expect(role.code, role.stderr).to.equal(0);
    const binding = await kc([
      'create', 'rolebinding', 'nobody-reads', '-n', NS, '--role=secret-reader',
      '--serviceaccount=default:nobody',
    ]);
    expect(binding.code, binding.stderr).to.equal(0);
    const granted = await kc(['auth', 'can-i', 'get', 'secrets', '-n', NS, '--as=system:serviceaccount:default:nobody']);
    expect(granted.stdout.trim()).to.equal('yes');
  });

  it('stops: processes are gone and the data is removed', async function () {
    this.timeout(120_000);
    const { pids, dir } = plane();
    expect(isProcessRunning(pids.apiserver)).to.equal(true);
    expect(isProcessRunning(pids.etcd)).to.equal(true);
    await plane().stop();
    expect(isProcessRunning(pids.apiserver), 'kube-apiserver still running').to.equal(false);
    expect(isProcessRunning(pids.etcd), 'etcd still running').to.equal(false);
    expect(existsSync(dir)).to.equal(false);
    await plane().stop(); // idempotent
  });
});
