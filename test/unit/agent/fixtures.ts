/**
 * Desired-state fixtures for agent tests, produced by the real translator from a small synthetic
 * cluster, so the agent is tested on exactly what the operator emits.
 */
import { translate } from '../../../operator/src/translate/engine.js';
import type { ClusterSnapshot, NetworkPolicy, Pod } from '../../../operator/src/translate/k8s.js';

export interface ClusterShape {
  namespaces: number;
  podsPerNamespace: number;
  /** Policies per namespace (each: ingress from a label + ipBlock with except, a named port, egress to a namespace). */
  policiesPerNamespace: number;
  /** Added to every pod IP's last octets, to make membership changes. */
  ipOffset?: number;
}

export function snapshot(shape: ClusterShape): ClusterSnapshot {
  const namespaces = [];
  const pods: Pod[] = [];
  const policies: NetworkPolicy[] = [];
  for (let n = 0; n < shape.namespaces; n++) {
    const ns = `ns${n}`;
    namespaces.push({ metadata: { name: ns, labels: { 'kubernetes.io/metadata.name': ns, team: n % 2 ? 'odd' : 'even' } } });
    for (let p = 0; p < shape.podsPerNamespace; p++) {
      const i = n * shape.podsPerNamespace + p + (shape.ipOffset ?? 0);
      pods.push({
        metadata: { name: `pod${p}`, namespace: ns, labels: { app: `app${p % 3}`, role: p % 2 ? 'db' : 'web' } },
        spec: { nodeName: 'n1', containers: [{ name: 'c', ports: [{ name: 'http', containerPort: 8080 + (p % 2), protocol: 'TCP' }, { name: 'dns', containerPort: 53, protocol: 'UDP' }] }] },
        status: { phase: 'Running', podIP: `10.244.${(i >> 8) & 255}.${i & 255}` },
      });
    }
    for (let k = 0; k < shape.policiesPerNamespace; k++) {
      policies.push({
        metadata: { name: `pol${k}`, namespace: ns },
        spec: {
          podSelector: { matchLabels: { app: `app${k % 3}` } },
          policyTypes: ['Ingress', 'Egress'],
          ingress: [
            { from: [{ podSelector: { matchLabels: { role: 'web' } } }], ports: [{ protocol: 'TCP', port: 80 + k }, { protocol: 'TCP', port: 'http' }] },
            { from: [{ ipBlock: { cidr: `10.${k}.0.0/16`, except: [`10.${k}.5.0/24`] } }], ports: [{ protocol: 'UDP', port: 5000, endPort: 5010 }] },
            { from: [{ namespaceSelector: { matchLabels: { team: 'odd' } }, podSelector: {} }] },
          ],
          egress: [{ to: [{ namespaceSelector: { matchLabels: { team: 'even' } } }], ports: [{ protocol: 'UDP', port: 53 }, { protocol: 'SCTP', port: 9000 }] }],
        },
      });
    }
  }
  return { namespaces, pods, policies };
}

export function objects(shape: ClusterShape): unknown[] {
  const r = translate(snapshot(shape));
  return r.items;
}
