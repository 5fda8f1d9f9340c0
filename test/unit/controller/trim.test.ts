import { expect } from 'chai';
import { dropManagedFields, trimOperatorNamespace, trimOperatorPod } from '../../../operator/src/controller/trim.js';
import { POD_CONDITION } from '../../../operator/src/controller/membership.js';
import { TranslationEngine } from '../../../operator/src/translate/engine.js';

/** A Pod as the API server serves it (abridged), with one named port and our readiness gate. */
function served(): Record<string, unknown> {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: {
      name: 'web-1', namespace: 'shop', uid: 'u1', resourceVersion: '42', labels: { app: 'web' },
      annotations: { big: 'x'.repeat(1000) }, managedFields: [{ manager: 'kubelet', fieldsV1: {} }],
    },
    spec: {
      nodeName: 'n1',
      volumes: [{ name: 'token', projected: { sources: [] } }],
      tolerations: [{ key: 'node.kubernetes.io/not-ready', operator: 'Exists' }],
      readinessGates: [{ conditionType: 'other.io/x' }, { conditionType: POD_CONDITION }],
      containers: [{ name: 'c', image: 'img', env: [{ name: 'A', value: 'b' }], ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP', hostPort: 0 }] }],
      initContainers: [{ name: 'side', image: 'img', restartPolicy: 'Always', ports: [{ name: 'metrics', containerPort: 9090 }] }],
    },
    status: {
      phase: 'Running', podIP: '10.244.1.5', podIPs: [{ ip: '10.244.1.5' }], hostIP: '192.168.250.1',
      conditions: [{ type: 'Ready', status: 'True' }, { type: POD_CONDITION, status: 'False', reason: 'Waiting', message: 'm' }],
      containerStatuses: [{ name: 'c', ready: true, image: 'img' }],
    },
  };
}

describe('controller/trim: what the operator caches', () => {
  it('keeps of a Pod exactly what translation and the membership signal read', () => {
    const t = trimOperatorPod(served() as never) as Record<string, unknown>;
    expect(t).to.deep.equal({
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name: 'web-1', namespace: 'shop', uid: 'u1', resourceVersion: '42', labels: { app: 'web' } },
      spec: {
        nodeName: 'n1',
        containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080, protocol: 'TCP' }] }],
        initContainers: [{ name: 'side', restartPolicy: 'Always', ports: [{ name: 'metrics', containerPort: 9090 }] }],
        readinessGates: [{ conditionType: POD_CONDITION }],
      },
      status: {
        phase: 'Running', podIP: '10.244.1.5', podIPs: [{ ip: '10.244.1.5' }],
        conditions: [{ type: POD_CONDITION, status: 'False', reason: 'Waiting', message: 'm' }],
      },
    });
  });

  it('does not modify its input and leaves absent fields absent', () => {
    const p = served();
    const before = JSON.stringify(p);
    trimOperatorPod(p as never);
    expect(JSON.stringify(p)).to.equal(before);
    const bare = trimOperatorPod({ metadata: { name: 'a', namespace: 'b' } } as never) as Record<string, unknown>;
    expect(bare).to.deep.equal({ metadata: { name: 'a', namespace: 'b' } });
  });

  it('translates a trimmed cluster exactly as the served one (named ports, sidecar ports, labels)', () => {
    const ns = { apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'shop', labels: { team: 'a' }, managedFields: [{}] } };
    const np = {
      apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { name: 'p', namespace: 'shop', uid: 'np1' },
      spec: { podSelector: { matchLabels: { app: 'web' } }, ingress: [{ from: [{ namespaceSelector: { matchLabels: { team: 'a' } } }], ports: [{ port: 'http' }, { port: 'metrics' }] }] },
    };
    const full = new TranslationEngine();
    full.upsertNamespace(ns as never);
    full.upsertPolicy(np as never);
    full.upsertPod(served() as never);
    const trimmed = new TranslationEngine();
    trimmed.upsertNamespace(trimOperatorNamespace(ns as never));
    trimmed.upsertPolicy(dropManagedFields(np as never));
    trimmed.upsertPod(trimOperatorPod(served() as never));
    const out = JSON.stringify(trimmed.all());
    expect(out).to.equal(JSON.stringify(full.all()));
    // The case is not vacuous: both named ports resolved to the pod's address and port.
    expect(out).to.include('8080').and.to.include('9090').and.to.include('10.244.1.5');
  });
});
