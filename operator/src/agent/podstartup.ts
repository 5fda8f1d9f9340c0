/**
 * Pod startup (docs/adr/0009-pod-startup.md): when a local pod counts as "known" to the node, so
 * that its address may enter KNPM-LOCAL. Pure: the daemon passes times and views.
 *
 * With pod-startup=strict, KNPM-FORWARD drops every packet from or to an address of the node's pod
 * CIDR that is not in KNPM-LOCAL (iptables/render.ts strictRules). A new pod's address is added to
 * KNPM-LOCAL only when the node is programmed for it: every NetworkPolicy of its namespace whose
 * podSelector matches its labels has its NpmRuleSet programmed, with the pod's address in the
 * target set of each of its chains, IN A SYNC THAT ALREADY SUCCEEDED. So the order in the kernel
 * is always: policy chains and target-set membership first, KNPM-LOCAL last, and a pod with a
 * policy is isolated from its first packet; a pod without one is allowed a moment later.
 * Two gaps this closes that "add it to KNPM-LOCAL when the pod is seen" would leave open:
 *  - the operator writes the pod into its policies' target sets (NpmIPSet) after the agent saw the
 *    pod (both watch the same update): admitted on sight, the pod would be judged by the policies
 *    the node knows, without its own, until that write arrives;
 *  - one sync writes ipsets (phase 1) before iptables (phase 2): a pod admitted in the sync that
 *    also adds its first policy chain would be unguarded between the two phases.
 * With pod-startup=open every local pod is in KNPM-LOCAL at once (the old behaviour) and the same
 * check only measures when the node became programmed for it (npm_pod_unprotected_seconds).
 *
 * A pod is keyed by uid and address: a pod that reuses an address of a deleted one starts unknown.
 */
import type { NpmRuleSet } from '../api/types.js';
import { cidrContains, formatCidr, parseCidr, parseIPv4 } from '../translate/cidr.js';
import { podAddresses, type NetworkPolicy, type Pod } from '../translate/k8s.js';
import { compileSelector, matches, type FieldError, type Selector } from '../translate/selector.js';

export type PodStartupMode = 'strict' | 'open';

/**
 * The node's IPv4 pod CIDRs in canonical form (as iptables-save prints them), deduplicated.
 * IPv6 CIDRs are skipped (the dataplane is IPv4); /0 is refused: "every address" is not a pod CIDR.
 */
export function normalizePodCidrs(list: readonly string[]): { cidrs: string[]; errors: string[]; skipped: string[] } {
  const cidrs: string[] = [];
  const errors: string[] = [];
  const skipped: string[] = [];
  for (const raw of list) {
    const s = raw.trim();
    if (!s) continue;
    const c = parseCidr(s);
    if (typeof c === 'string') errors.push(c);
    else if (c.family === 'IPv6') skipped.push(s);
    else if (c.prefix === 0) errors.push(`"${s}" covers every address; a pod CIDR cannot`);
    else if (!cidrs.includes(formatCidr(c))) cidrs.push(formatCidr(c));
  }
  return { cidrs, errors, skipped };
}

export interface LocalPod {
  uid: string;
  namespace: string;
  name: string;
  labels: Readonly<Record<string, string>>;
  /** IPv4 address. */
  ip: string;
}

/**
 * The local pods that hold an address in the pod network: not hostNetwork (their address is the
 * node's), not finished (Succeeded/Failed pods keep status.podIP, but the address is free for reuse:
 * counting it as known would admit the next pod that gets it), with an IPv4 address.
 */
export function localPodsOf(pods: readonly Pod[]): LocalPod[] {
  const out: LocalPod[] = [];
  for (const p of pods) {
    let mine = LOCAL_PODS.get(p);
    if (!mine) LOCAL_PODS.set(p, (mine = localPodOf(p)));
    for (const lp of mine) out.push(lp);
  }
  return out;
}

/** localPodsOf of one pod object, memoized by identity: the informer replaces a pod only when it changes. */
const LOCAL_PODS = new WeakMap<Pod, readonly LocalPod[]>();

function localPodOf(p: Pod): LocalPod[] {
  if (p.spec?.hostNetwork) return [];
  if (p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed') return [];
  const ips = new Set<string>();
  for (const ip of podAddresses(p)) if (parseIPv4(ip) !== undefined) ips.add(ip);
  const out: LocalPod[] = [];
  for (const ip of ips) out.push({ uid: p.metadata.uid ?? '', namespace: p.metadata.namespace ?? '', name: p.metadata.name ?? '', labels: p.metadata.labels ?? {}, ip });
  return out;
}

export interface PolicyTarget {
  namespace: string;
  name: string;
  uid?: string;
  selector: Selector;
}

/**
 * The target selector of each policy. An invalid podSelector selects every pod of its namespace,
 * as the translation does (translate/policy.ts: fail closed, guard every pod).
 */
export function policyTargets(policies: readonly NetworkPolicy[]): PolicyTarget[] {
  return policies.map((np) => {
    let t = TARGETS.get(np);
    if (!t) TARGETS.set(np, (t = policyTarget(np)));
    return t;
  });
}

/** policyTargets of one policy object, memoized by identity (compiling a selector is most of the cost). */
const TARGETS = new WeakMap<NetworkPolicy, PolicyTarget>();

function policyTarget(np: NetworkPolicy): PolicyTarget {
  const errors: FieldError[] = [];
  let selector = compileSelector(np.spec?.podSelector, 'spec.podSelector', errors);
  if (errors.length) selector = compileSelector({}, 'spec.podSelector', []);
  return { namespace: np.metadata.namespace ?? '', name: np.metadata.name ?? '', ...(np.metadata.uid ? { uid: np.metadata.uid } : {}), selector };
}

/** What the kernel holds (after a successful sync) or is about to hold (the selection being written). */
export interface ProgrammedView {
  ruleset(namespace: string, name: string): NpmRuleSet | undefined;
  inSet(set: string, ip: string): boolean;
}

/** Why the node is not yet programmed for `pod` in `view`; undefined when it is. */
export function notProgrammed(pod: LocalPod, policies: readonly PolicyTarget[], view: ProgrammedView): string | undefined {
  for (const p of policies) {
    if (p.namespace !== pod.namespace || !matches(p.selector, pod.labels)) continue;
    const rs = view.ruleset(p.namespace, p.name);
    if (!rs) return `policy ${p.namespace}/${p.name} selects it; its NpmRuleSet is not programmed yet`;
    const uid = rs.spec.policy.uid;
    if (p.uid && uid && uid !== p.uid) return `policy ${p.namespace}/${p.name} selects it; its NpmRuleSet is of an older policy of that name`;
    for (const c of rs.spec.chains) {
      if (!view.inSet(c.targetSet, pod.ip)) return `policy ${p.namespace}/${p.name} selects it; not yet in its target set ${c.targetSet}`;
    }
  }
  return undefined;
}

interface Entry {
  ip: string;
  /** Clock ms when the agent first saw the pod with this address (undefined: present at start). */
  since: number | undefined;
  admitted: boolean;
  programmed: boolean;
  /** Last reason logged for waiting (log once per change). */
  reason?: string;
}

/** Keys of LocalPod objects, memoized: localPodsOf gives an unchanged pod's LocalPod again, and every sync keys every local pod. */
const ENTRY_KEYS = new WeakMap<LocalPod, string>();

function entryKey(p: LocalPod): string {
  let k = ENTRY_KEYS.get(p);
  if (k === undefined) ENTRY_KEYS.set(p, (k = `${p.uid}\u0000${p.ip}`));
  return k;
}

export interface Admission {
  /** Addresses for KNPM-LOCAL in the next sync. */
  ips: string[];
  /** Pods kept out of KNPM-LOCAL (strict) whose reason changed since the last call: "ns/name ip: why". */
  newlyWaiting: string[];
  /** Pods kept out of KNPM-LOCAL (strict). */
  waiting: number;
}

export interface Synced {
  /** Seconds from first sight to programmed, of each pod the node became programmed for. */
  programmedSeconds: number[];
  /** A pod still out of KNPM-LOCAL is ready now: sync again at once to admit it. */
  followUp: boolean;
}

/** Per-pod startup state of one agent. Not re-entrant: the daemon's single sync loop drives it. */
export class PodStartup {
  private readonly entries = new Map<string, Entry>();

  constructor(readonly mode: PodStartupMode) {}

  /**
   * Whether some local pod is not yet programmed (still waiting, or not yet measured): only then
   * can a NetworkPolicy change move its admission or its measurement. A programmed pod keeps its
   * verdict whatever policies come later (they are programmed like any other change).
   */
  hasPending(): boolean {
    for (const e of this.entries.values()) if (!e.programmed) return true;
    return false;
  }

  /**
   * The agent saw `pod` (a watch event). `live` is false for the initial list: pods that were
   * running before this agent started are not measured.
   */
  notice(pod: LocalPod, now: number, live: boolean): void {
    const k = entryKey(pod);
    if (!this.entries.has(k)) this.entries.set(k, { ip: pod.ip, since: live ? now : undefined, admitted: false, programmed: false });
  }

  /**
   * The addresses for KNPM-LOCAL. `programmed` is the state the kernel holds after the last
   * successful sync, or undefined before the first one: then a pod is admitted when the selection
   * about to be written programs it (`next`); after a restart those pods' state is normally in the
   * kernel already (the previous agent wrote it and nothing was flushed).
   */
  admit(pods: readonly LocalPod[], policies: readonly PolicyTarget[], programmed: ProgrammedView | undefined, next: ProgrammedView, now: number): Admission {
    const live = new Set<string>();
    const ips = new Set<string>();
    const newlyWaiting: string[] = [];
    let waiting = 0;
    for (const pod of pods) {
      const k = entryKey(pod);
      live.add(k);
      if (!this.entries.has(k)) this.notice(pod, now, programmed !== undefined);
      const e = this.entries.get(k)!;
      if (this.mode === 'open' || e.admitted) {
        ips.add(pod.ip);
        continue;
      }
      const why = notProgrammed(pod, policies, programmed ?? next);
      if (why === undefined) {
        ips.add(pod.ip);
        continue;
      }
      waiting++;
      if (e.reason !== why) newlyWaiting.push(`${pod.namespace}/${pod.name} ${pod.ip}: ${why}`);
      e.reason = why;
    }
    for (const k of [...this.entries.keys()]) if (!live.has(k)) this.entries.delete(k);
    return { ips: [...ips], newlyWaiting, waiting };
  }

  /** After a successful sync that wrote `ips` into KNPM-LOCAL and left the kernel as `view`. */
  synced(pods: readonly LocalPod[], policies: readonly PolicyTarget[], ips: ReadonlySet<string>, view: ProgrammedView, now: number): Synced {
    const programmedSeconds: number[] = [];
    let followUp = false;
    for (const pod of pods) {
      const e = this.entries.get(entryKey(pod));
      if (!e || e.programmed) continue;
      if (ips.has(pod.ip)) e.admitted = true;
      const ready = notProgrammed(pod, policies, view) === undefined;
      if (this.mode === 'strict' && !e.admitted) {
        if (ready) followUp = true;
        continue;
      }
      if (!ready) continue;
      e.programmed = true;
      delete e.reason;
      if (e.since !== undefined) programmedSeconds.push(Math.max(0, now - e.since) / 1000);
    }
    return { programmedSeconds, followUp };
  }
}

/**
 * A view over rulesets and NpmIPSet shards (the selection being written). A set's members are
 * gathered when first asked for: the daemon asks only before its first sync, or for a pod waiting
 * in strict mode, and gathering every set's members on each sync was most of its planning cost.
 */
export function selectionView(rulesets: readonly NpmRuleSet[], shards: readonly { spec: { setName: string; members: readonly string[] } }[]): ProgrammedView {
  let rs: Map<string, NpmRuleSet> | undefined;
  let bySet: Map<string, (typeof shards)[number][]> | undefined;
  const members = new Map<string, Set<string>>();
  return {
    ruleset: (ns, name) => (rs ??= new Map(rulesets.map((r) => [`${r.metadata.namespace}/${r.metadata.name}`, r]))).get(`${ns}/${name}`),
    inSet: (set, ip) => {
      let m = members.get(set);
      if (!m) {
        if (!bySet) {
          bySet = new Map();
          for (const s of shards) {
            const list = bySet.get(s.spec.setName);
            if (list) list.push(s);
            else bySet.set(s.spec.setName, [s]);
          }
        }
        m = new Set();
        for (const s of bySet.get(set) ?? []) for (const x of s.spec.members) m.add(x);
        members.set(set, m);
      }
      return m.has(ip);
    },
  };
}

/** A view over what a successful sync applied: its rulesets and the desired state's member maps (keyed by address for hash:ip). */
export function appliedView(rulesets: ReadonlyMap<string, NpmRuleSet>, sets: ReadonlyMap<string, { members: ReadonlyMap<string, string> }>): ProgrammedView {
  return { ruleset: (ns, name) => rulesets.get(`${ns}/${name}`), inSet: (set, ip) => sets.get(set)?.members.has(ip) ?? false };
}

export interface PodStartupDecision {
  mode: PodStartupMode;
  cidrs: string[];
  /** What to log at start (always one line saying the mode and why). */
  log: string[];
}

/**
 * The mode the agent runs in. Default (no --pod-startup): strict when the node's pod CIDR is
 * known (--pod-cidr, else the Node's spec.podCIDRs), open otherwise, said loudly: the CNI may
 * allocate pod addresses elsewhere (e.g. AWS VPC CNI, Cilium cluster-pool), and guessing a CIDR
 * would cut off running pods. An explicit --pod-startup=strict without a CIDR is an error.
 * `node` is the Node's spec.podCIDRs, or the error reading it.
 */
export function decidePodStartup(flag: PodStartupMode | undefined, flagCidrs: readonly string[] | undefined, node: readonly string[] | { error: string }): PodStartupDecision | { error: string } {
  const log: string[] = [];
  let cidrs: string[] = [];
  let source = '';
  if (flagCidrs?.length) {
    const n = normalizePodCidrs(flagCidrs);
    if (n.errors.length) return { error: `--pod-cidr: ${n.errors.join('; ')}` };
    if (!n.cidrs.length) return { error: `--pod-cidr: no IPv4 CIDR in ${flagCidrs.join(',')}` };
    cidrs = n.cidrs;
    source = '--pod-cidr';
  } else if (Array.isArray(node)) {
    const n = normalizePodCidrs(node);
    for (const e of n.errors) log.push(`ignoring the Node's spec.podCIDRs entry: ${e}`);
    cidrs = n.cidrs;
    source = 'the Node spec.podCIDRs';
  } else {
    log.push(`could not read the node pod CIDR: ${(node as { error: string }).error}`);
  }
  if (flag === 'open') {
    log.push('pod-startup open: a new pod is reachable, and can reach out, until the node is programmed for it');
    return { mode: 'open', cidrs, log };
  }
  if (!cidrs.length) {
    if (flag === 'strict') return { error: '--pod-startup=strict needs the node pod CIDR: give --pod-cidr or set the Node spec.podCIDRs' };
    log.push(
      'pod-startup open (WARNING: new pods start unprotected until the node is programmed for them): the node pod CIDR is unknown; ' +
        'give --pod-cidr or set the Node spec.podCIDRs for strict (kubenpm_pod_startup_strict 0)',
    );
    return { mode: 'open', cidrs, log };
  }
  log.push(`pod-startup strict: addresses of ${cidrs.join(', ')} (from ${source}) that are not pods the node is programmed for are dropped`);
  return { mode: 'strict', cidrs, log };
}

/** True when `ip` lies in one of `cidrs` (canonical IPv4 CIDRs). */
export function inPodCidrs(ip: string, cidrs: readonly string[]): boolean {
  const addr = parseIPv4(ip);
  if (addr === undefined) return false;
  return cidrs.some((c) => {
    const p = parseCidr(c);
    return typeof p !== 'string' && p.family === 'IPv4' && cidrContains(p, { family: 'IPv4', base: addr, prefix: 32 });
  });
}
