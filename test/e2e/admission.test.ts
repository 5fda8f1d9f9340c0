// The API as a trust boundary (issue #9 item 5), against a real kube-apiserver with REAL
// service-account tokens (TokenRequest, bound to a pod scheduled on a node):
//  - config/admission: only the operator writes NpmRuleSets / NpmIPSets; cluster admins, the garbage
//    collector and the namespace controller may still delete them (and change their metadata); each
//    agent writes only its own node's NpmNode.
//  - the operator reverts a hand edit quickly: measured from the edit's watch event to the revert's
//    (figure printed; the check is API-level: the spec is back to what the operator wrote).
// The operator runs in-process (NpmOperator) with a kubeconfig of its service account's token, so
// its writes go through the same admission as in a cluster. No kernel is involved.
import { expect } from 'chai';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { CustomObjectsApi, KubeConfig, PatchStrategy, Watch, setHeaderOptions } from '@kubernetes/client-node';
import { NpmOperator } from '../../operator/src/controller/operator.js';
import type { NpmRuleSet } from '../../operator/src/api/types.js';
import { startControlPlane, type ControlPlane, type RunResult } from '../support/controlplane.js';
import { REPO, kubectlOk, setPodRunning, waitFor } from '../support/e2e.js';

const SYSTEM = 'kube-npm-system';
const AGENT_SA = `system:serviceaccount:${SYSTEM}:kube-npm-agent`;
const OPERATOR_SA = `system:serviceaccount:${SYSTEM}:kube-npm-operator`;

interface WhoAmI {
  status: { userInfo: { username: string; groups?: string[]; extra?: Record<string, string[]> } };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)]!;
}

describe('admission: the API as a trust boundary (real tokens, e2e)', function () {
  this.timeout(0);
  let cp: ControlPlane | undefined;
  let op: NpmOperator | undefined;
  const tokens: Record<string, string> = {};
  const opLog: string[] = [];

  /** kubectl as the holder of `token` (overrides the admin token of the kubeconfig). */
  const as = (who: string, args: string[], input?: string): Promise<RunResult> =>
    cp!.kubectl([`--token=${tokens[who]!}`, ...args], input !== undefined ? { input } : {});
  const denied = (r: RunResult) => r.code !== 0 && /denied|forbidden/i.test(r.stderr);
  const nrs = async (): Promise<NpmRuleSet> => JSON.parse(await kubectlOk(cp!, ['-n', 'demo', 'get', 'nrs', 'deny', '-o', 'json'])) as NpmRuleSet;
  /** The agent's own NpmNode status write (daemon.ts), as the holder of `token`. */
  const patchNodeStatus = async (who: string, name: string, status: object): Promise<RunResult> => {
    const kc = new KubeConfig();
    kc.loadFromOptions({
      clusters: [{ name: 'c', server: cp!.server, caData: Buffer.from(cp!.caPem).toString('base64') }],
      users: [{ name: 'u', token: tokens[who]! }],
      contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
      currentContext: 'x',
    });
    try {
      await kc.makeApiClient(CustomObjectsApi).patchClusterCustomObjectStatus(
        { group: 'kubenpm.io', version: 'v1alpha1', plural: 'npmnodes', name, body: { status } },
        setHeaderOptions('Content-Type', PatchStrategy.MergePatch),
      );
      return { code: 0, stdout: '', stderr: '' };
    } catch (err) {
      const e = err as { code?: number; body?: unknown };
      return { code: e.code ?? 1, stdout: '', stderr: `${e.code === 403 ? 'forbidden: ' : ''}${typeof e.body === 'string' ? e.body : JSON.stringify(e.body)}` };
    }
  };
  const widen = JSON.stringify([{ op: 'add', path: '/spec/chains/0/rules/-', value: { description: 'hand edit: allow any', match: {} } }]);

  before(async function () {
    if (process.getuid?.() !== 0) {
      console.warn('      !!! SKIPPED: e2e needs root (it runs the control plane like the other e2e tests)');
      this.skip();
    }
    cp = await startControlPlane({ log: () => undefined });
    await kubectlOk(cp, ['create', 'namespace', SYSTEM]);
    await kubectlOk(cp, ['apply', '-f', '-'], await kubectlOk(cp, ['kustomize', join(REPO, 'config/rbac')]));
    // Two nodes, one agent pod on each (never started: the test only needs the objects its tokens are
    // bound to), and a cluster-admin that is not in system:masters.
    for (const n of ['n1', 'n2']) {
      await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'Node', metadata: { name: n } }));
      await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify({
        apiVersion: 'v1', kind: 'Pod', metadata: { name: `agent-${n}`, namespace: SYSTEM },
        spec: { nodeName: n, serviceAccountName: 'kube-npm-agent', hostNetwork: true, containers: [{ name: 'agent', image: 'ghcr.io/kube-npm/kube-npm:0.1.0' }] },
      }));
      tokens[`agent-${n}`] = (await kubectlOk(cp, ['-n', SYSTEM, 'create', 'token', 'kube-npm-agent', '--bound-object-kind=Pod', `--bound-object-name=agent-${n}`])).trim();
    }
    tokens['agent-unbound'] = (await kubectlOk(cp, ['-n', SYSTEM, 'create', 'token', 'kube-npm-agent'])).trim();
    tokens.operator = (await kubectlOk(cp, ['-n', SYSTEM, 'create', 'token', 'kube-npm-operator', '--duration=1h'])).trim();
    await kubectlOk(cp, ['-n', 'default', 'create', 'serviceaccount', 'admin']);
    await kubectlOk(cp, ['create', 'clusterrolebinding', 'e2e-admin', '--clusterrole=cluster-admin', '--serviceaccount=default:admin']);
    tokens.admin = (await kubectlOk(cp, ['-n', 'default', 'create', 'token', 'admin'])).trim();

    // A policy for the operator to translate: one pod, default-deny ingress.
    await kubectlOk(cp, ['create', 'namespace', 'demo']);
    await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'v1', kind: 'Pod', metadata: { name: 'web', namespace: 'demo', labels: { app: 'web' } }, spec: { nodeName: 'n1', containers: [{ name: 'c', image: 'registry.k8s.io/pause:3.10' }] } }));
    await setPodRunning(cp, 'demo', 'web', '10.244.1.10');
    await kubectlOk(cp, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny', namespace: 'demo' }, spec: { podSelector: {}, policyTypes: ['Ingress'] } }));

    // The operator, as its service account.
    const path = join(cp.dir, 'operator.kubeconfig');
    await writeFile(path, JSON.stringify({
      apiVersion: 'v1', kind: 'Config', 'current-context': 'op',
      clusters: [{ name: 'c', cluster: { server: cp.server, 'certificate-authority-data': Buffer.from(cp.caPem).toString('base64') } }],
      users: [{ name: 'op', user: { token: tokens.operator } }],
      contexts: [{ name: 'op', context: { cluster: 'c', user: 'op' } }],
    }));
    const kc = new KubeConfig();
    kc.loadFromFile(path);
    op = new NpmOperator({ kc, log: (l) => opLog.push(`${new Date().toISOString()} ${l}`) });
    await op.start();
    await waitFor('the operator wrote demo/deny', async () => (await cp!.kubectl(['-n', 'demo', 'get', 'nrs', 'deny'])).code === 0);
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed') console.log(`----- operator log (last 30 lines)\n${opLog.slice(-30).join('\n')}`);
  });

  after(async () => {
    await op?.stop().catch(() => undefined);
    await cp?.stop();
  });

  it('v1.35.4 puts the node of a pod-bound token in userInfo.extra (authentication.kubernetes.io/node-name)', async () => {
    const who = JSON.parse((await as('agent-n1', ['auth', 'whoami', '-o', 'json'])).stdout) as WhoAmI;
    expect(who.status.userInfo.username).to.equal(AGENT_SA);
    expect(who.status.userInfo.extra?.['authentication.kubernetes.io/node-name']).to.deep.equal(['n1']);
    expect(who.status.userInfo.extra?.['authentication.kubernetes.io/pod-name']).to.deep.equal(['agent-n1']);
    const unbound = JSON.parse((await as('agent-unbound', ['auth', 'whoami', '-o', 'json'])).stdout) as WhoAmI;
    expect(unbound.status.userInfo.extra?.['authentication.kubernetes.io/node-name']).to.equal(undefined);
  });

  it('without the policies a hand edit is believed until the operator reverts it: revert latency from the edit\'s watch event', async () => {
    const original = (await nrs()).spec;
    // Watch the object the way the operator does and time edit -> revert between watch events.
    const samples: number[] = [];
    for (let i = 0; i < 5; i++) {
      let editAt: number | undefined;
      let revertedAt: number | undefined;
      let editRv: string | undefined;
      const kc = new KubeConfig();
      kc.loadFromFile(cp!.kubeconfigPath);
      const w = new Watch(kc);
      const start = (await nrs()).metadata.resourceVersion!;
      const req = await w.watch(
        '/apis/kubenpm.io/v1alpha1/namespaces/demo/npmrulesets',
        { resourceVersion: start, fieldSelector: 'metadata.name=deny' },
        (type: string, obj: NpmRuleSet) => {
          if (type !== 'MODIFIED') return;
          const edited = obj.spec.chains[0]!.rules.length > original.chains[0]!.rules.length;
          if (edited && editAt === undefined) [editAt, editRv] = [performance.now(), obj.metadata.resourceVersion];
          else if (!edited && editAt !== undefined && revertedAt === undefined) revertedAt = performance.now();
        },
        () => undefined,
      );
      await kubectlOk(cp!, ['-n', 'demo', 'patch', 'nrs', 'deny', '--type=json', '-p', widen]);
      await waitFor('the operator reverted the hand edit', async () => revertedAt !== undefined, 10_000, 5);
      req.abort();
      samples.push(revertedAt! - editAt!);
      expect(editRv).to.be.a('string');
      expect((await nrs()).spec, 'the spec is back to what the operator wrote').to.deep.equal(original);
    }
    console.log(`      revert latency (edit watch event -> revert watch event), 5 edits: median ${median(samples).toFixed(0)} ms, max ${Math.max(...samples).toFixed(0)} ms [${samples.map((s) => s.toFixed(0)).join(', ')}]`);
  });

  it('without the policies, a hand edit that drops the managed-by label (the operator\'s informer then sees a delete) is reverted too', async () => {
    const t0 = performance.now();
    await kubectlOk(cp!, ['-n', 'demo', 'label', 'nrs', 'deny', 'app.kubernetes.io/managed-by-']);
    await waitFor('the managed-by label and the spec restored', async () => {
      const o = await nrs();
      return o.metadata.labels?.['app.kubernetes.io/managed-by'] === 'kube-npm';
    }, 10_000, 5);
    console.log(`      label removal reverted after ${(performance.now() - t0).toFixed(0)} ms (kubectl round trips included)`);
  });

  describe('with config/admission applied', () => {
    before(async () => {
      // As the whole install renders them (kustomize sets a namespace on these cluster-scoped kinds,
      // which the API server drops).
      const all = (await kubectlOk(cp!, ['kustomize', join(REPO, 'config/default')])).split(/^---$/m);
      const admission = all.filter((d) => /^kind: ValidatingAdmissionPolicy(Binding)?$/m.test(d));
      expect(admission).to.have.length(6);
      await kubectlOk(cp!, ['apply', '-f', '-'], admission.join('---\n'));
      // Policies become active once the API server has type-checked them and synced its informer.
      await waitFor('the admission policies to be enforced', async () => denied(await as('admin', ['-n', 'demo', 'patch', 'nrs', 'deny', '--type=json', '-p', widen])), 30_000, 250);
    });

    it('NpmRuleSet / NpmIPSet: a cluster-admin (not system:masters) may not edit, create or delete them', async () => {
      const edit = await as('admin', ['-n', 'demo', 'patch', 'nrs', 'deny', '--type=json', '-p', widen]);
      expect(denied(edit), edit.stderr).to.equal(true);
      expect(edit.stderr, edit.stderr).to.contain('only the kube-npm operator writes npmrulesets');
      const status = await as('admin', ['-n', 'demo', 'patch', 'nrs', 'deny', '--subresource=status', '--type=merge', '-p', '{"status":{"nodesProgrammed":"9/9"}}']);
      expect(denied(status), status.stderr).to.equal(true);
      const del = await as('admin', ['-n', 'demo', 'delete', 'nrs', 'deny', '--wait=false']);
      expect(denied(del), del.stderr).to.equal(true);
      const set = JSON.parse(await kubectlOk(cp!, ['get', 'nips', '-o', 'json'])) as { items: { metadata: { name: string } }[] };
      const shard = set.items[0]!.metadata.name;
      const add = await as('admin', ['patch', 'nips', shard, '--type=json', '-p', '[{"op":"add","path":"/spec/members/-","value":"10.244.9.9"}]']);
      expect(denied(add), add.stderr).to.equal(true);
      const create = await as('admin', ['create', '-f', '-'], JSON.stringify({
        apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmIPSet', metadata: { name: 'forged' },
        spec: { setName: 'KNPM-S-AAAAAAAAAAAAAAAAAAAAAAAA', type: 'hash:ip', kind: 'PodSelector', family: 'IPv4', meaning: 'forged', shard: 0, shardCount: 1, members: [] },
      }));
      expect(denied(create), create.stderr).to.equal(true);
      expect(create.stderr).to.contain('only the kube-npm operator writes npmipsets');
    });

    it('system:masters may delete (escape hatch) but not edit; the operator re-creates what a policy still needs', async () => {
      const edit = await cp!.kubectl(['-n', 'demo', 'patch', 'nrs', 'deny', '--type=json', '-p', widen]);
      expect(denied(edit), edit.stderr).to.equal(true);
      const before = (await nrs()).metadata.uid;
      await kubectlOk(cp!, ['-n', 'demo', 'delete', 'nrs', 'deny']);
      const again = await waitFor('the operator re-created demo/deny', async () => {
        const r = await cp!.kubectl(['-n', 'demo', 'get', 'nrs', 'deny', '-o', 'json']);
        return r.code === 0 && (JSON.parse(r.stdout) as NpmRuleSet);
      }, 10_000, 20);
      expect(again.metadata.uid).to.not.equal(before);
    });

    it('the garbage collector and the namespace controller may delete and change metadata (finalizers); not the spec', async () => {
      const shard = (JSON.parse(await kubectlOk(cp!, ['get', 'nips', '-o', 'json'])) as { items: { metadata: { name: string } }[] }).items[0]!.metadata.name;
      const gc = '--as=system:serviceaccount:kube-system:generic-garbage-collector';
      const fin = await cp!.kubectl([gc, '-n', 'demo', 'patch', 'nrs', 'deny', '--type=merge', '-p', '{"metadata":{"finalizers":["e2e/hold"]}}']);
      expect(fin.code, fin.stderr).to.equal(0);
      const unfin = await cp!.kubectl([gc, '-n', 'demo', 'patch', 'nrs', 'deny', '--type=json', '-p', '[{"op":"remove","path":"/metadata/finalizers"}]']);
      expect(unfin.code, unfin.stderr).to.equal(0);
      const spec = await cp!.kubectl([gc, '-n', 'demo', 'patch', 'nrs', 'deny', '--type=json', '-p', widen]);
      expect(denied(spec), spec.stderr).to.equal(true);
      const before = (await nrs()).metadata.uid;
      const del = await cp!.kubectl(['--as=system:serviceaccount:kube-system:namespace-controller', '-n', 'demo', 'delete', 'nrs', 'deny']);
      expect(del.code, del.stderr).to.equal(0);
      await waitFor('demo/deny re-created', async () => {
        const r = await cp!.kubectl(['-n', 'demo', 'get', 'nrs', 'deny', '-o', 'jsonpath={.metadata.uid}']);
        return r.code === 0 && r.stdout !== before;
      }, 10_000, 20);
      const delSet = await cp!.kubectl([gc, 'delete', 'nips', shard]);
      expect(delSet.code, delSet.stderr).to.equal(0);
      await waitFor(`NpmIPSet ${shard} re-created`, async () => (await cp!.kubectl(['get', 'nips', shard])).code === 0, 10_000, 20);
    });

    it('the agent may not write NpmRuleSets (RBAC and admission); the operator may (a policy update reaches the ruleset)', async () => {
      const edit = await as('agent-n1', ['-n', 'demo', 'patch', 'nrs', 'deny', '--type=json', '-p', widen]);
      expect(denied(edit), edit.stderr).to.equal(true);
      await kubectlOk(cp!, ['apply', '-f', '-'], JSON.stringify({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'deny', namespace: 'demo' }, spec: { podSelector: {}, policyTypes: ['Ingress'], ingress: [{ ports: [{ port: 80, protocol: 'TCP' }] }] } }));
      await waitFor('the operator wrote the new generation', async () => (await nrs()).spec.chains[0]!.rules.length === 1, 10_000, 20);
      const who = JSON.parse(await kubectlOk(cp!, ['--token=' + tokens.operator!, 'auth', 'whoami', '-o', 'json'])) as WhoAmI;
      expect(who.status.userInfo.username).to.equal(OPERATOR_SA);
    });

    it('NpmNode: the agent on n1 writes NpmNode n1 (create, status), never n2; an agent token without a node writes nothing', async () => {
      const node = (name: string) => JSON.stringify({ apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name } });
      const own = await as('agent-n1', ['create', '-f', '-'], node('n1'));
      expect(own.code, own.stderr).to.equal(0);
      const ownStatus = await patchNodeStatus('agent-n1', 'n1', { lastError: '' });
      expect(ownStatus.code, ownStatus.stderr).to.equal(0);
      const other = await as('agent-n1', ['create', '-f', '-'], node('n2'));
      expect(denied(other), other.stderr).to.equal(true);
      expect(other.stderr).to.contain('may write only NpmNode n1, not n2');
      expect((await as('agent-n2', ['create', '-f', '-'], node('n2'))).code).to.equal(0);
      const forge = await patchNodeStatus('agent-n1', 'n2', { applied: [{ namespace: 'demo', name: 'deny', generation: 9 }] });
      expect(denied(forge), forge.stderr).to.equal(true);
      const unbound = await patchNodeStatus('agent-unbound', 'n1', { lastError: 'forged' });
      expect(denied(unbound), unbound.stderr).to.equal(true);
      expect(unbound.stderr).to.contain('only with a token bound to a pod on a node');
    });

    it('NpmNode: the operator writes status (Ready=False, AgentNotReporting, when an agent stops renewing its Lease: #10), never creates one', async () => {
      const cond = { type: 'Ready', status: 'False', reason: 'AgentNotReporting', message: 'the kube-npm agent on node n1 is not reporting', lastTransitionTime: new Date().toISOString().replace(/\.\d+Z$/, 'Z') };
      const verdict = await patchNodeStatus('operator', 'n1', { conditions: [cond] });
      expect(verdict.code, verdict.stderr).to.equal(0);
      // n1 has no agent Lease (its agent is not judged): the operator running here puts back the
      // condition the agent computes, with the same rights.
      await waitFor('the operator restored n1 Ready', async () => {
        const n1 = JSON.parse(await kubectlOk(cp!, ['get', 'npmnode', 'n1', '-o', 'json'])) as { status?: { conditions?: { type: string; reason?: string }[] } };
        return n1.status?.conditions?.find((c) => c.type === 'Ready')?.reason === 'Synced';
      }, 10_000, 50);
      const create = await as('operator', ['create', '-f', '-'], JSON.stringify({ apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: 'n9' } }));
      expect(denied(create), create.stderr).to.equal(true);
    });

    it('an agent renews only its own liveness Lease, held as its own node', async () => {
      const lease = (name: string, holder: string) =>
        JSON.stringify({ apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name, namespace: SYSTEM }, spec: { holderIdentity: holder, leaseDurationSeconds: 30, renewTime: new Date().toISOString().replace('Z', '000Z') } });
      const own = await as('agent-n1', ['create', '-f', '-'], lease('kube-npm-agent-n1', 'n1'));
      expect(own.code, own.stderr).to.equal(0);
      // The agent updates (PUT) its Lease, as agent/lease.ts does; RBAC grants no patch.
      const renew = await as('agent-n1', ['replace', '-f', '-'], lease('kube-npm-agent-n1', 'n1'));
      expect(renew.code, renew.stderr).to.equal(0);
      const other = await as('agent-n1', ['create', '-f', '-'], lease('kube-npm-agent-n2', 'n2'));
      expect(denied(other), other.stderr).to.equal(true);
      expect(other.stderr).to.contain('may write only Lease kube-npm-agent-n1');
      const holder = await as('agent-n1', ['replace', '-f', '-'], lease('kube-npm-agent-n1', 'n2'));
      expect(denied(holder), holder.stderr).to.equal(true);
      expect(holder.stderr).to.contain('may hold its Lease only as n1');
    });
  });
});
