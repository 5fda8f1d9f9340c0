/**
 * `kube-npm debug trace` against a live cluster: what the rule walker (trace.ts) needs, read from
 * the API server. It walks the NpmRuleSets and NpmIPSets the operator wrote (what the agents
 * program), not a fresh translation of the NetworkPolicies, so the verdict is the one the
 * dataplane gives once every node reports the rulesets Programmed; each isolating policy is
 * printed with its Programmed condition so a verdict that is not enforced yet says so.
 *
 * Effects: only the injected KubeApi (GET requests).
 */
import { API_VERSION, IPSET_PLURAL, RULESET_PLURAL, type NpmIPSet, type NpmRuleSet } from '../api/types.js';
import type { KubeApi } from '../framework/client.js';
import { parseIPv4 } from '../translate/cidr.js';
import { podAddresses, type Pod } from '../translate/k8s.js';

/** A pod reference or address as given on the command line, resolved. */
export interface Endpoint {
  ip: string;
  /** "ns/name" when the address is a pod's. */
  pod?: string;
  /** The pod's node, when known. */
  node?: string;
}

/** A bad --from/--to (no such pod, no address yet): the user's input, exit 2. */
export class EndpointError extends Error {}

interface List<T> {
  items: T[];
}

function podEndpoint(p: Pod, ip: string): Endpoint {
  const node = p.spec?.nodeName;
  return { ip, pod: `${p.metadata?.namespace ?? 'default'}/${p.metadata?.name ?? ''}`, ...(node ? { node } : {}) };
}

/**
 * NS/POD (or POD, in namespace default) -> that pod's IPv4 address; an IPv4 address -> the pod
 * holding it if there is one (a running pod; an off-cluster peer has none).
 */
export async function resolveEndpoint(api: KubeApi, who: string): Promise<Endpoint> {
  if (parseIPv4(who) !== undefined) {
    // status.podIP is a field selector the API server supports for pods.
    const list = await api.request<List<Pod>>('GET', '/api/v1/pods', { query: { fieldSelector: `status.podIP=${who}` } });
    const live = list.items.filter((p) => p.status?.phase !== 'Succeeded' && p.status?.phase !== 'Failed' && !p.spec?.hostNetwork);
    return live.length === 1 ? podEndpoint(live[0]!, who) : { ip: who };
  }
  const [ns, name] = who.includes('/') ? (who.split('/', 2) as [string, string]) : ['default', who];
  if (!ns || !name) throw new EndpointError(`"${who}" is neither NS/POD nor an IPv4 address`);
  let pod: Pod;
  try {
    pod = await api.request<Pod>('GET', `/api/v1/namespaces/${encodeURIComponent(ns)}/pods/${encodeURIComponent(name)}`);
  } catch (err) {
    if ((err as { code?: number }).code === 404) throw new EndpointError(`no pod ${ns}/${name}`, { cause: err });
    throw err;
  }
  if (pod.spec?.hostNetwork) throw new EndpointError(`pod ${ns}/${name} uses the host network: NetworkPolicy does not apply to it`);
  const ip = podAddresses(pod).find((x) => parseIPv4(x) !== undefined);
  if (!ip) throw new EndpointError(`pod ${ns}/${name} has no IPv4 address yet (phase ${pod.status?.phase ?? 'unknown'})`);
  return podEndpoint(pod, ip);
}

/** Every NpmRuleSet and NpmIPSet the operator wrote. */
export async function loadPolicyObjects(api: KubeApi): Promise<(NpmRuleSet | NpmIPSet)[]> {
  const base = `/apis/${API_VERSION}`;
  const [rulesets, ipsets] = await Promise.all([
    api.request<List<NpmRuleSet>>('GET', `${base}/${RULESET_PLURAL}`),
    api.request<List<NpmIPSet>>('GET', `${base}/${IPSET_PLURAL}`),
  ]);
  // A list's items carry no kind: the walker tells objects apart by it.
  return [...rulesets.items.map((o) => ({ ...o, kind: 'NpmRuleSet' as const })), ...ipsets.items.map((o) => ({ ...o, kind: 'NpmIPSet' as const }))];
}

/** "ns/name" -> its Programmed condition in words ("Programmed 3/3 nodes", "NOT Programmed: ..."). */
export function programmedNotes(objects: readonly (NpmRuleSet | NpmIPSet)[]): Map<string, string> {
  const out = new Map<string, string>();
  for (const o of objects) {
    if (o.kind !== 'NpmRuleSet') continue;
    const c = o.status?.conditions?.find((x) => x.type === 'Programmed');
    const key = `${o.metadata.namespace}/${o.metadata.name}`;
    if (!c) out.set(key, 'Programmed: unknown yet');
    else out.set(key, c.status === 'True' ? 'Programmed' : `NOT Programmed (${c.reason}: ${c.message})`);
  }
  return out;
}
