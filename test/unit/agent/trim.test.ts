// What the agent's informers keep (agent/trim.ts), that the agent decides the same on trimmed and
// full objects, and the informer's transform hook (framework/informer.ts) on list and watch events.
import { expect } from 'chai';
import { KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { trimOurs, trimPod, trimPolicy } from '../../../operator/src/agent/trim.js';
import { localPodsOf, policyTargets, notProgrammed, selectionView } from '../../../operator/src/agent/podstartup.js';
import { selectLocal } from '../../../operator/src/agent/select.js';
import { buildDesired } from '../../../operator/src/agent/model.js';
import { matches } from '../../../operator/src/translate/selector.js';
import { translate } from '../../../operator/src/translate/engine.js';
import { Informer } from '../../../operator/src/framework/informer.js';
import { CORE } from '../../../operator/src/framework/kube.js';
import { IPSET_KIND, RULESET_KIND, type NpmIPSet, type NpmRuleSet } from '../../../operator/src/api/types.js';
import type { NetworkPolicy, Pod } from '../../../operator/src/translate/k8s.js';
import { syntheticCluster } from '../../bench/synthetic.js';
import { FakeTransport, flush } from '../framework/fakes.js';

const managed = [{ manager: 'kubelet', operation: 'Update', apiVersion: 'v1', fieldsType: 'FieldsV1', fieldsV1: { 'f:status': { 'f:podIP': {} } }, subresource: 'status' }];

/** A pod as the API server serves it, around the fields the agent reads. */
function fullPod(p: Pod, extra: { hostNetwork?: boolean; phase?: string } = {}): Pod & KubernetesObject {
  return {
    apiVersion: 'v1', kind: 'Pod',
    metadata: { ...p.metadata, resourceVersion: '7', generateName: 'x-', creationTimestamp: '2026-12-01T00:00:00Z', managedFields: managed, annotations: { a: 'b' }, ownerReferences: [] } as Pod['metadata'],
    spec: { ...p.spec, ...(extra.hostNetwork ? { hostNetwork: true } : {}), volumes: [{ name: 'v', emptyDir: {} }], tolerations: [], restartPolicy: 'Always' } as Pod['spec'],
    status: { ...p.status, ...(extra.phase ? { phase: extra.phase } : {}), podIPs: [{ ip: p.status!.podIP!, extra: 1 } as { ip: string }], hostIP: '192.168.250.1', conditions: [{ type: 'Ready', status: 'True' }], containerStatuses: [{ name: 'main' }] } as Pod['status'],
  } as Pod & KubernetesObject;
}

describe('agent/trim', () => {
  it('keeps of a Pod only identity, labels, nodeName/hostNetwork and phase/addresses', () => {
    const p = fullPod({ metadata: { name: 'a', namespace: 'n', uid: 'u', labels: { app: 'x' } }, spec: { nodeName: 'node-1', containers: [{ name: 'c', ports: [{ containerPort: 80 }] }] }, status: { phase: 'Running', podIP: '10.244.0.5' } }, { hostNetwork: true });
    const before = JSON.stringify(p);
    expect(trimPod(p)).to.deep.equal({
      apiVersion: 'v1', kind: 'Pod',
      metadata: { name: 'a', namespace: 'n', uid: 'u', resourceVersion: '7', labels: { app: 'x' } },
      spec: { nodeName: 'node-1', hostNetwork: true },
      status: { phase: 'Running', podIP: '10.244.0.5', podIPs: [{ ip: '10.244.0.5' }] },
    });
    expect(JSON.stringify(p)).to.equal(before); // the input is not modified
    // Absent stays absent (no undefined-valued keys), a pod without status stays without.
    expect(trimPod({ metadata: { name: 'b', resourceVersion: '1' }, spec: {} } as Pod & KubernetesObject)).to.deep.equal({ metadata: { name: 'b', resourceVersion: '1' }, spec: {} });
  });

  it('keeps of a NetworkPolicy only identity and spec.podSelector', () => {
    const np = { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'p', namespace: 'n', uid: 'u', resourceVersion: '3', generation: 2, managedFields: managed, annotations: { x: 'y' } }, spec: { podSelector: { matchExpressions: [{ key: 'a', operator: 'In', values: ['1'] }] }, policyTypes: ['Ingress'], ingress: [{ from: [{ podSelector: {} }] }] } } as unknown as NetworkPolicy & KubernetesObject;
    expect(trimPolicy(np)).to.deep.equal({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'p', namespace: 'n', uid: 'u', resourceVersion: '3' }, spec: { podSelector: { matchExpressions: [{ key: 'a', operator: 'In', values: ['1'] }] } } });
  });

  it('drops managedFields and annotations of our objects, keeps the rest; the same object when there is nothing to drop', () => {
    const o = { apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmIPSet', metadata: { name: 's', resourceVersion: '4', generation: 1, labels: { 'node.kubenpm.io/n1': '' }, managedFields: managed, annotations: { a: 'b' } }, spec: { setName: 'KNPM-X', members: ['10.0.0.1'] } };
    expect(trimOurs(o)).to.deep.equal({ apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmIPSet', metadata: { name: 's', resourceVersion: '4', generation: 1, labels: { 'node.kubenpm.io/n1': '' } }, spec: { setName: 'KNPM-X', members: ['10.0.0.1'] } });
    expect(o.metadata.managedFields).to.equal(managed);
    const bare = { metadata: { name: 'x', resourceVersion: '1' } };
    expect(trimOurs(bare)).to.equal(bare);
  });

  it('the agent selects, admits and programs the same from trimmed objects as from full ones', () => {
    const snap = syntheticCluster({ namespaces: 5, pods: 200, policies: 50, seed: 7 });
    const full = snap.pods.map((p, i) => fullPod(p, { hostNetwork: i % 17 === 0, phase: i % 13 === 0 ? 'Succeeded' : undefined }));
    const trimmed = full.map((p) => trimPod(p));
    const local = localPodsOf(full);
    expect(localPodsOf(trimmed)).to.deep.equal(local);
    expect(local.length).to.be.within(150, 190);

    const fullPolicies = snap.policies.map((np) => ({ ...np, metadata: { ...np.metadata, resourceVersion: '9', managedFields: managed } }) as unknown as NetworkPolicy & KubernetesObject);
    const targets = (ps: NetworkPolicy[]) => policyTargets(ps).map((t) => ({ ...t, selected: local.filter((p) => p.namespace === t.namespace && matches(t.selector, p.labels)).map((p) => p.name) }));
    const a = targets(fullPolicies);
    expect(targets(fullPolicies.map((np) => trimPolicy(np)))).to.deep.equal(a);
    expect(a.some((t) => t.selected.length > 0)).to.equal(true);

    const ours = translate(snap).items.map((o) => ({ ...o, metadata: { ...o.metadata, resourceVersion: '5', managedFields: managed } })) as (NpmRuleSet | NpmIPSet)[];
    const rs = (xs: typeof ours) => xs.filter((o): o is NpmRuleSet => o.kind === RULESET_KIND);
    const sets = (xs: typeof ours) => xs.filter((o): o is NpmIPSet => o.kind === IPSET_KIND);
    const ips = new Set(local.map((p) => p.ip));
    const trimmedOurs = ours.map((o) => trimOurs(o as unknown as KubernetesObject) as unknown as NpmRuleSet | NpmIPSet);
    const selFull = selectLocal(rs(ours), sets(ours), ips, new Map());
    const selTrim = selectLocal(rs(trimmedOurs), sets(trimmedOurs), ips, new Map());
    expect(selTrim.applied).to.deep.equal(selFull.applied);
    expect(selTrim.applied.length).to.be.greaterThan(0);
    const dFull = buildDesired(selFull.objects, { localPods: [...ips] });
    const dTrim = buildDesired(selTrim.objects, { localPods: [...ips] });
    expect([...dTrim.sets.keys()]).to.deep.equal([...dFull.sets.keys()]);
    expect([...dTrim.chains]).to.deep.equal([...dFull.chains]);
    const view = (sel: typeof selFull) => selectionView(sel.objects.filter((o): o is NpmRuleSet => o.kind === RULESET_KIND), sel.objects.filter((o): o is NpmIPSet => o.kind === IPSET_KIND));
    const t = policyTargets(fullPolicies);
    expect(local.map((p) => notProgrammed(p, t, view(selTrim)))).to.deep.equal(local.map((p) => notProgrammed(p, t, view(selFull))));
  });
});

describe('framework/informer transform', () => {
  it('applies to listed objects and to ADDED, MODIFIED and DELETED events, before cache and handlers', async () => {
    const t = new FakeTransport();
    const mk = (name: string, rv: string) => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: 'ns', resourceVersion: rv, managedFields: managed }, data: { big: 'x' } });
    t.lists = [{ items: [mk('a', '1')], resourceVersion: '1' }];
    const slim = (o: KubernetesObject): KubernetesObject => ({ kind: o.kind, metadata: { name: o.metadata!.name, namespace: o.metadata!.namespace, resourceVersion: o.metadata!.resourceVersion } });
    const inf = new Informer<KubernetesObject>({ kc: new KubeConfig(), resource: CORE.configMaps, resyncMs: 0, log: () => undefined, listFn: t.listFn, watchFn: t.watchFn, transform: slim });
    const seen: string[] = [];
    inf.onAdd((o) => seen.push(`add ${JSON.stringify(o)}`));
    inf.onUpdate((o, old) => seen.push(`update ${JSON.stringify(o)} from ${old.metadata!.resourceVersion}`));
    inf.onDelete((o) => seen.push(`delete ${JSON.stringify(o)}`));
    await inf.start();
    try {
      t.current.emit('ADDED', mk('b', '2'));
      t.current.emit('MODIFIED', mk('a', '3'));
      t.current.emit('DELETED', mk('b', '4'));
      await flush();
      const s = (name: string, rv: string) => JSON.stringify({ kind: 'ConfigMap', metadata: { name, namespace: 'ns', resourceVersion: rv } });
      expect(seen).to.deep.equal([`add ${s('a', '1')}`, `add ${s('b', '2')}`, `update ${s('a', '3')} from 1`, `delete ${s('b', '4')}`]);
      expect(inf.list()).to.deep.equal([JSON.parse(s('a', '3'))]);
      expect(inf.lastResourceVersion()).to.equal('4');
    } finally {
      await inf.stop();
    }
  });
});
