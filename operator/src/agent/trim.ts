/**
 * What the agent's informers keep of each object (informer.ts `transform`): only the fields the agent
 * reads. A Pod as the API server serves it (defaulted spec, volumes, kubelet conditions and
 * container statuses, managedFields) is ~4 KB of JSON; the agent reads its identity, labels, whether
 * it is hostNetwork, its phase and its addresses (podstartup.ts localPodsOf). A NetworkPolicy is read
 * for its target selector only (podstartup.ts policyTargets). NpmRuleSets and NpmIPSets are read
 * whole (model.ts validates and programs their spec) but not their managedFields or annotations
 * (except a shard's acknowledgment request, ADR 0015).
 *
 * Every trimmed object keeps metadata.name, namespace and resourceVersion (the informer's key and
 * change detection). Pure: the input is not modified; fields absent from the input stay absent.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import { ACK_ANNOTATION, POD_CONDITION } from '../api/types.js';
import type { Meta, NetworkPolicy, Pod } from '../translate/k8s.js';

/** The object's fields that are present, in `keys` order (absent ones stay absent, not undefined). */
export function pick<T extends object, K extends keyof T>(o: T | undefined, keys: readonly K[]): Pick<T, K> {
  const out = {} as Pick<T, K>;
  if (!o) return out;
  for (const k of keys) if (o[k] !== undefined) out[k] = o[k];
  return out;
}

const IDENTITY = ['name', 'namespace', 'uid', 'resourceVersion'] as const;

/** A Pod reduced to identity, labels, spec.nodeName/hostNetwork (and the membership gate), status.phase/podIP/podIPs. */
export function trimPod<T extends Pod & KubernetesObject>(p: T): T {
  const out: Pod = { ...pick(p, ['apiVersion', 'kind']), metadata: pick(p.metadata as Meta, [...IDENTITY, 'labels']) };
  if (p.spec) {
    out.spec = pick(p.spec, ['nodeName', 'hostNetwork']);
    // Whether it waits for its membership condition: its node then acknowledges seeing it (ADR 0015).
    if (isGated(p)) (out.spec as GatedSpec).readinessGates = [{ conditionType: POD_CONDITION }];
  }
  if (p.status) {
    out.status = pick(p.status, ['phase', 'podIP']);
    // Only the address of each entry: a cluster may add fields there.
    if (p.status.podIPs) out.status.podIPs = p.status.podIPs.map((x) => ({ ip: x.ip }));
  }
  return out as T;
}

type GatedSpec = { readinessGates?: { conditionType?: string }[] };

/** A pod with the membership readiness gate (kubenpm.io/PolicyProgrammed). */
export function isGated(p: Pod): boolean {
  return (p.spec as GatedSpec | undefined)?.readinessGates?.some((g) => g.conditionType === POD_CONDITION) ?? false;
}

/** A NetworkPolicy reduced to its identity and spec.podSelector. */
export function trimPolicy<T extends NetworkPolicy & KubernetesObject>(np: T): T {
  const spec: NetworkPolicy['spec'] = np.spec ? pick(np.spec, ['podSelector']) : (undefined as unknown as NetworkPolicy['spec']);
  return { ...pick(np, ['apiVersion', 'kind']), metadata: pick(np.metadata as Meta, IDENTITY), ...(np.spec ? { spec } : {}) } as T;
}

/** Our objects without what the API server and clients add for themselves (managedFields, annotations). */
export function trimOurs<T extends KubernetesObject>(o: T): T {
  const m = o.metadata as (Record<string, unknown> & { managedFields?: unknown; annotations?: unknown }) | undefined;
  if (!m || (m.managedFields === undefined && m.annotations === undefined)) return o;
  const { managedFields: _mf, annotations: _an, ...metadata } = m;
  return { ...o, metadata } as T;
}

/**
 * An NpmRuleSet or NpmIPSet as the agent programs it: trimOurs without `status`. The operator's
 * status writes (Accepted, Programmed k/n nodes) are not read by the agent, and without them the
 * cached object does not change when only they do, so such a write wakes no agent (daemon.ts).
 */
export function trimDesired<T extends KubernetesObject>(o: T): T {
  let t = trimOurs(o) as T & { status?: unknown };
  if (t.status !== undefined) {
    const { status: _st, ...rest } = t;
    t = rest as typeof t;
  }
  // The one annotation the agent reads: an acknowledgment request on a shard (ADR 0015).
  const ack = o.metadata?.annotations?.[ACK_ANNOTATION];
  return ack === undefined ? t : { ...t, metadata: { ...t.metadata, annotations: { [ACK_ANNOTATION]: ack } } };
}
