/** The sample workload `sandbox up` applies: two namespaces and a few unscheduled pods. */

export const SAMPLE_PODS: readonly { namespace: string; name: string; app: string }[] = [
  { namespace: 'demo', name: 'web', app: 'web' },
  { namespace: 'demo', name: 'db', app: 'db' },
  { namespace: 'demo', name: 'cache', app: 'cache' },
  { namespace: 'other', name: 'client', app: 'client' },
];

export function sampleWorkload(): object {
  const namespaces = ['demo', 'other'].map((name) => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'kubenpm.io/sandbox': 'true' } } }));
  const pods = SAMPLE_PODS.map((p) => ({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name: p.name, namespace: p.namespace, labels: { app: p.app } },
    // No nodeName: the sandbox kubelet binds each pod to a node, round-robin.
    spec: {
      containers: [
        {
          name: p.app,
          image: 'registry.k8s.io/pause:3.10',
          ports: [
            { name: 'http', containerPort: 80, protocol: 'TCP' },
            { name: 'dns', containerPort: 53, protocol: 'UDP' },
          ],
        },
      ],
    },
  }));
  return { apiVersion: 'v1', kind: 'List', items: [...namespaces, ...pods] };
}
