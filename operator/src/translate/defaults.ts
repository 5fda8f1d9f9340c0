/**
 * The API server's defaulting and the object-level checks it would make, for objects read from
 * files a user wrote (the operator receives objects the API server already defaulted; applying the
 * same defaults again is a no-op).
 */
import { NAMESPACE_NAME_LABEL, type Namespace, type NetworkPolicy, type Pod } from './k8s.js';
import { checkLabels, type FieldError } from './selector.js';

const DNS1123_LABEL = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;
const DNS1123_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function isObj(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function checkMeta(obj: { metadata?: unknown }, namespaced: boolean, errors: FieldError[]): void {
  if (!isObj(obj.metadata)) {
    errors.push({ field: 'metadata', message: 'metadata must be an object with a name' });
    return;
  }
  const name = obj.metadata.name;
  if (typeof name !== 'string' || name === '') errors.push({ field: 'metadata.name', message: 'name is required' });
  else if (name.length > 253 || !DNS1123_SUBDOMAIN.test(name)) errors.push({ field: 'metadata.name', message: `"${name}" is not a valid DNS-1123 subdomain` });
  const ns = obj.metadata.namespace;
  if (namespaced && ns !== undefined && (typeof ns !== 'string' || ns.length > 63 || !DNS1123_LABEL.test(ns))) {
    errors.push({ field: 'metadata.namespace', message: `"${String(ns)}" is not a valid namespace name` });
  }
  checkLabels(obj.metadata.labels, 'metadata.labels', errors);
}

/** A list of objects (or absent); anything else is reported and read as absent. */
function objectList(x: unknown, field: string, errors: FieldError[]): Record<string, unknown>[] | undefined {
  if (x === undefined || x === null) return undefined;
  if (!Array.isArray(x)) {
    errors.push({ field, message: 'must be a list' });
    return undefined;
  }
  const bad = x.findIndex((e) => !isObj(e));
  if (bad >= 0) {
    errors.push({ field: `${field}[${bad}]`, message: 'must be an object' });
    return undefined;
  }
  return x as Record<string, unknown>[];
}

export function defaultNamespace(ns: Namespace, errors: FieldError[] = []): Namespace {
  checkMeta(ns, false, errors);
  const name = ns.metadata?.name ?? '';
  return { ...ns, metadata: { ...ns.metadata, labels: { ...(ns.metadata?.labels ?? {}), [NAMESPACE_NAME_LABEL]: name } } };
}

/** The checks defaultPod makes (the shapes the API server would refuse), without the defaulted copy. */
export function checkPod(pod: Pod, errors: FieldError[]): void {
  checkMeta(pod, true, errors);
  // Shapes the API server would refuse, checked so that they are reported, never a TypeError.
  const spec: unknown = pod.spec;
  if (spec !== undefined && spec !== null && !isObj(spec)) errors.push({ field: 'spec', message: 'must be an object' });
  if (isObj(spec)) {
    for (const k of ['containers', 'initContainers'] as const) {
      (objectList(spec[k], `spec.${k}`, errors) ?? []).forEach((c, i) => objectList(c.ports, `spec.${k}[${i}].ports`, errors));
    }
  }
  const status: unknown = pod.status;
  if (status !== undefined && status !== null && !isObj(status)) errors.push({ field: 'status', message: 'must be an object' });
  if (isObj(status)) {
    if (status.podIP !== undefined && status.podIP !== null && typeof status.podIP !== 'string') errors.push({ field: 'status.podIP', message: 'must be a string' });
    objectList(status.podIPs, 'status.podIPs', errors);
  }
}

export function defaultPod(pod: Pod, errors: FieldError[] = []): Pod {
  checkPod(pod, errors);
  if (errors.length) return pod;
  const withProto = (c: { ports?: { protocol?: string; containerPort: number; name?: string }[] }) => ({
    ...c,
    ...(c.ports ? { ports: c.ports.map((p) => ({ ...p, protocol: p.protocol ?? 'TCP' })) } : {}),
  });
  return {
    ...pod,
    metadata: { ...pod.metadata, namespace: pod.metadata?.namespace ?? 'default' },
    spec: pod.spec && {
      ...pod.spec,
      ...(pod.spec.containers ? { containers: pod.spec.containers.map(withProto) } : {}),
      ...(pod.spec.initContainers ? { initContainers: pod.spec.initContainers.map(withProto) } : {}),
    },
  };
}

/**
 * policyTypes: when absent or empty, Ingress, plus Egress when the policy has egress rules.
 * A port's protocol (TCP when absent) is defaulted where it is read (policy.ts compilePort), not
 * in a copy of every rule: this runs for each of 10,000 policies.
 */
export function defaultPolicy(np: NetworkPolicy, errors: FieldError[] = []): NetworkPolicy {
  checkMeta(np, true, errors);
  let spec = np.spec ?? {};
  if (np.spec === undefined) errors.push({ field: 'spec', message: 'spec is required' });
  else if (!isObj(np.spec)) {
    // Fail closed: a spec we cannot read isolates every pod of the namespace in both directions.
    errors.push({ field: 'spec', message: `must be an object, not ${JSON.stringify(np.spec)}` });
    spec = { podSelector: {}, policyTypes: ['Ingress', 'Egress'] };
  }
  let policyTypes = spec.policyTypes;
  if (!Array.isArray(policyTypes) || policyTypes.length === 0) {
    policyTypes = ['Ingress'];
    if (Array.isArray(spec.egress) && spec.egress.length > 0) policyTypes.push('Egress');
  }
  return {
    ...np,
    metadata: { ...np.metadata, namespace: np.metadata?.namespace ?? 'default' },
    spec: {
      ...spec,
      podSelector: spec.podSelector ?? {},
      policyTypes,
    },
  };
}
