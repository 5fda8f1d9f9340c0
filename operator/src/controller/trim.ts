/**
 * What the operator's informers keep of each object (Informer `transform`): only the fields the
 * operator reads. At 100,000 pods the cache is most of the operator's memory: a Pod as the API
 * server serves it (managedFields, defaulted spec with volumes and tolerations, kubelet conditions
 * and container statuses) is ~8 KB of heap, of which the operator reads:
 *  - the translation (translate/k8s.ts Pod): identity, labels, spec.nodeName/hostNetwork, the
 *    containers' and init containers' ports (named ports) and the init containers' restartPolicy,
 *    status.phase/podIP/podIPs;
 *  - the membership signal (membership.ts, ADR 0007): spec.readinessGates and status.conditions of
 *    our own condition type only (the kubelet's conditions change often and are not ours).
 * Namespaces are read for their labels; NetworkPolicies for their spec. Our own objects are read
 * whole (the reconciler compares labels, ownerReferences, spec and status) but not managedFields.
 *
 * Pure: the input is not modified; absent fields stay absent. Keeps metadata.resourceVersion (the
 * informer's change detection and the membership signal's positions).
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import type { ContainerPort, Meta, Namespace, NetworkPolicy, Pod } from '../translate/k8s.js';
import { pick } from '../agent/trim.js';
import { POD_CONDITION } from './membership.js';

const IDENTITY = ['name', 'namespace', 'uid', 'resourceVersion', 'generation', 'labels'] as const;

const ports = (ps: ContainerPort[] | undefined): ContainerPort[] | undefined =>
  ps?.map((p) => pick(p, ['name', 'containerPort', 'protocol']) as ContainerPort);

interface PodExtra {
  spec?: { readinessGates?: { conditionType?: string }[] };
  status?: { conditions?: { type: string }[] };
}

/** A Pod reduced to what translation and the membership signal read. */
export function trimOperatorPod<T extends Pod & KubernetesObject>(p: T): T {
  const out: Pod & PodExtra = { ...pick(p, ['apiVersion', 'kind']), metadata: pick(p.metadata as Meta, IDENTITY) };
  const x = p as T & PodExtra;
  if (p.spec) {
    const spec: NonNullable<Pod['spec']> & PodExtra['spec'] = pick(p.spec, ['nodeName', 'hostNetwork']);
    if (p.spec.containers) spec.containers = p.spec.containers.map((c) => ({ ...pick(c, ['name']), ...(c.ports ? { ports: ports(c.ports) } : {}) }));
    if (p.spec.initContainers) {
      spec.initContainers = p.spec.initContainers.map((c) => ({ ...pick(c, ['name', 'restartPolicy']), ...(c.ports ? { ports: ports(c.ports) } : {}) }));
    }
    const gates = x.spec?.readinessGates?.filter((g) => g.conditionType === POD_CONDITION);
    if (gates?.length) spec.readinessGates = gates;
    out.spec = spec;
  }
  if (p.status) {
    const status: NonNullable<Pod['status']> & PodExtra['status'] = pick(p.status, ['phase', 'podIP']);
    if (p.status.podIPs) status.podIPs = p.status.podIPs.map((a) => ({ ip: a.ip }));
    const ours = x.status?.conditions?.filter((c) => c.type === POD_CONDITION);
    if (ours?.length) status.conditions = ours;
    out.status = status;
  }
  return out as T;
}

/** A Namespace reduced to identity and labels. */
export function trimOperatorNamespace<T extends Namespace & KubernetesObject>(n: T): T {
  return { ...pick(n, ['apiVersion', 'kind']), metadata: pick(n.metadata as Meta, IDENTITY) } as T;
}

/** A NetworkPolicy without managedFields (its spec is translated whole; annotations are kept). */
export function trimOperatorPolicy<T extends NetworkPolicy & KubernetesObject>(np: T): T {
  return dropManagedFields(np);
}

/** Any object without metadata.managedFields (the bookkeeping of server-side apply). */
export function dropManagedFields<T extends KubernetesObject>(o: T): T {
  const m = o.metadata as (Record<string, unknown> & { managedFields?: unknown }) | undefined;
  if (!m || m.managedFields === undefined) return o;
  const { managedFields: _mf, ...metadata } = m;
  return { ...o, metadata } as T;
}
