/**
 * One NetworkPolicy -> the chains and set references of its NpmRuleSet. Pure: reads no pods.
 *
 * Invalid input is enforced fail-closed and reported: an invalid part removes the smallest
 * enclosing allow rule (removing an allow can only deny more), an invalid podSelector guards every
 * pod of the namespace, and an invalid policyTypes entry isolates both directions. The problems are
 * listed in spec.problems (the operator turns them into Accepted=False).
 *
 * Valid parts that cannot allow anything right now are not problems but warnings (status.warnings,
 * computed by the engine from pod state): a peer whose set has no member, a named port no
 * destination pod declares, an IPv6 ipBlock. compilePolicy records, per rule, what to check
 * (WarningCheck): the checks are static, their outcome follows pods.
 */
import { ipBlockSetName, namedPortSetName, podSelectorSetName, policyChainName } from '../api/names.js';
import type { Chain, Direction, NpmRuleSetSpec, Protocol, Rule, RuleMatch, SetRef } from '../api/types.js';
import { cidrContains, formatCidr, hashNetEntries, parseCidr, type Cidr4 } from './cidr.js';
import type { NetworkPolicy, NetworkPolicyPeer, NetworkPolicyPort } from './k8s.js';
import { compileSelector, describeSelector, isEmpty, type FieldError, type Selector } from './selector.js';
import { flat, trimmed } from './strings.js';

/** Namespace scope of a pod-selector set: one namespace, or the namespaces a selector picks. */
export type Scope = { ns: string } | { nsSel: Selector };

/** `identity`: what the set's kernel name is a hash of (the key of a DemandCache). */
export type SetDemand =
  | { kind: 'PodSelector'; identity: string; ref: SetRef; scope: Scope; pods: Selector }
  | { kind: 'NamedPort'; identity: string; ref: SetRef; portName: string; protocol: Protocol }
  | { kind: 'IPBlock'; ref: SetRef };

/**
 * Pod-derived set demands by identity, shared between compilations: a set named by 1,000 policies
 * is hashed (sha256) once, and its SetRef and meaning exist once in memory. The engine keeps one
 * entry per live set (it removes an entry when the set goes). The output does not depend on it:
 * an entry holds exactly what compiling the demand again would give.
 */
export type DemandCache = Map<string, PodDerivedDemand>;

/**
 * What compilations share (see DemandCache): demands, and valid selectors by their JSON (10,000
 * policies repeat a few hundred selectors; each compiles, validates and canonicalises once).
 */
export interface CompileCache {
  demands: DemandCache;
  selectors: Map<string, Selector>;
}

/** A set whose members come from pods (not an ipBlock, which the ruleset carries inline). */
export type PodDerivedDemand = Exclude<SetDemand, { kind: 'IPBlock' }>;

export interface CompiledPolicy {
  namespace: string;
  name: string;
  spec: NpmRuleSetSpec;
  /** Every set the chains reference, with what is needed to compute pod-derived members. */
  demands: SetDemand[];
  errors: FieldError[];
  /** What can make a compiled rule allow nothing (see WarningCheck), in rule order. */
  checks: WarningCheck[];
}

/** Why a rule (or part of it) allows nothing: the `reason` of a status warning. */
export const WARNING = {
  /** A pod-derived peer (podSelector / namespaceSelector) selects no running pod right now. */
  NoPeersSelected: 'NoPeersSelected',
  /** A named port that no pod the rule's traffic goes to declares. */
  NamedPortNotDeclared: 'NamedPortNotDeclared',
  /** An IPv6 ipBlock: the IPv4 dataplane cannot see IPv6 traffic, so the peer allows nothing. */
  IPv6NotEnforced: 'IPv6NotEnforced',
} as const;

/**
 * One thing to check for a warning, named by its place in the policy as `kubectl describe nrs`
 * numbers rules ("ingress[0].from[1]": rule 0 of the ingress rules, its peer 1).
 *  - peer: warn while the pod-derived set `set` has no member.
 *  - namedPort: warn while no pod of the sets `on` (the policy's selected pods for ingress, the
 *    rule's peer sets for egress; undefined: any pod, as for an ipBlock or "any" peer) is in the
 *    named-port set `set`, provided some pod of `on` exists (else another warning or Programmed
 *    NoSelectedPods already says so).
 *  - static: always (an IPv6 ipBlock).
 */
export type WarningCheck =
  | { kind: 'peer'; rule: string; set: string }
  | { kind: 'namedPort'; rule: string; set: string; port: string; on: readonly string[] | undefined }
  | { kind: 'static'; rule: string; reason: string; message: string };

/** Shared by every policy without checks (most default-deny policies). */
const NO_CHECKS: WarningCheck[] = [];

const PROTOCOLS: readonly string[] = ['TCP', 'UDP', 'SCTP'];
/** IANA_SVC_NAME, as the API server validates named ports. */
const SVC_NAME = /^(?=.{1,15}$)(?=.*[a-z])[a-z0-9]([a-z0-9-]*[a-z0-9])?$/;

export function scopeKey(scope: Scope): string {
  return 'ns' in scope ? `ns=${scope.ns}` : `nssel=${scope.nsSel.key}`;
}

export function describePods(scope: Scope, pods: Selector): string {
  const who = isEmpty(pods) ? 'all pods' : `pods with ${describeSelector(pods)}`;
  if ('ns' in scope) return `${who} in namespace ${scope.ns}`;
  return isEmpty(scope.nsSel) ? `${who} in all namespaces` : `${who} in namespaces with ${describeSelector(scope.nsSel)}`;
}

function describeIPBlock(cidr: string, except: string[]): string {
  return except.length ? `${cidr} except ${except.join(', ')}` : cidr;
}

class Builder {
  readonly demands = new Map<string, SetDemand>();
  readonly errors: FieldError[] = [];

  constructor(private readonly cache: CompileCache = { demands: new Map(), selectors: new Map() }) {}

  /** compileSelector, through the cache for selectors that compiled without errors. */
  selector(sel: unknown, field: string): Selector {
    if (sel === undefined || sel === null || typeof sel !== 'object') return compileSelector(sel, field, this.errors);
    let key: string;
    try {
      key = JSON.stringify(sel);
    } catch (e) {
      // A cyclic structure (YAML aliases) has no JSON: compile it uncached, to report it.
      if (e instanceof TypeError) return compileSelector(sel, field, this.errors);
      throw e;
    }
    const hit = this.cache.selectors.get(key);
    if (hit) return hit;
    const before = this.errors.length;
    const compiled = compileSelector(sel, field, this.errors);
    if (this.errors.length === before) this.cache.selectors.set(key, compiled);
    return compiled;
  }

  /** The set of these pods: its name, and its meaning in words. */
  podSet(scope: Scope, pods: Selector): SetRef {
    const sk = scopeKey(scope);
    const identity = `S${sk}\u0000${pods.key}`;
    let d = this.cache.demands.get(identity);
    if (!d) {
      const name = podSelectorSetName(sk, pods.key);
      // The demand stays a PodSelector one (its members come from matching pods either way); the
      // ref says which selector decides, so `kubectl describe nips` names a namespaceSelector peer.
      const kind = 'ns' in scope ? 'PodSelector' : 'NamespaceSelector';
      const ref: SetRef = { name, type: 'hash:ip', kind, family: 'IPv4', meaning: flat(describePods(scope, pods)) };
      this.cache.demands.set(identity, (d = { kind: 'PodSelector', identity, ref, scope, pods }));
    }
    this.demands.set(d.ref.name, d);
    return d.ref;
  }

  namedPortSet(portName: string, protocol: Protocol): string {
    const identity = `P${portName}\u0000${protocol}`;
    let d = this.cache.demands.get(identity);
    if (!d) {
      const name = namedPortSetName(portName, protocol);
      const ref: SetRef = {
        name, type: 'hash:ip,port', kind: 'NamedPort', family: 'IPv4',
        meaning: flat(`pods with a ${protocol} container port named ${portName}, as (pod IP, port)`),
      };
      this.cache.demands.set(identity, (d = { kind: 'NamedPort', identity, ref, portName, protocol }));
    }
    this.demands.set(d.ref.name, d);
    return d.ref.name;
  }

  /** Returns the set name, null when the block has no IPv4 effect, or undefined on error. */
  ipBlockSet(block: { cidr?: unknown; except?: unknown }, field: string): { name: string; meaning: string } | null | undefined {
    if (typeof block !== 'object' || Array.isArray(block)) {
      this.errors.push({ field, message: 'must be an object with cidr and except' });
      return undefined;
    }
    if (typeof block.cidr !== 'string') {
      this.errors.push({ field: `${field}.cidr`, message: 'cidr is required' });
      return undefined;
    }
    const cidr = parseCidr(block.cidr);
    if (typeof cidr === 'string') {
      this.errors.push({ field: `${field}.cidr`, message: cidr });
      return undefined;
    }
    const exceptRaw = block.except ?? [];
    if (!Array.isArray(exceptRaw)) {
      this.errors.push({ field: `${field}.except`, message: 'must be a list of CIDRs' });
      return undefined;
    }
    const excepts: Cidr4[] = [];
    let bad = false;
    exceptRaw.forEach((e: unknown, i: number) => {
      const p = typeof e === 'string' ? parseCidr(e) : 'must be a CIDR string';
      if (typeof p === 'string') {
        this.errors.push({ field: `${field}.except[${i}]`, message: p });
        bad = true;
      } else if (p.family !== cidr.family) {
        this.errors.push({ field: `${field}.except[${i}]`, message: `"${String(e)}" is not the same IP family as cidr ${block.cidr}` });
        bad = true;
      } else if (p.family === 'IPv4' && cidr.family === 'IPv4') {
        // As the API server: an except must be a strict subset of the cidr.
        if (!cidrContains(cidr, p) || p.prefix <= cidr.prefix) {
          this.errors.push({ field: `${field}.except[${i}]`, message: `"${String(e)}" must be a strict subset of cidr ${block.cidr}` });
          bad = true;
        } else excepts.push(p);
      }
    });
    if (bad) return undefined;
    // The IPv4 dataplane cannot see IPv6 traffic: an IPv6 block allows nothing it filters.
    if (cidr.family === 'IPv6') return null;
    const exceptText = [...new Set(excepts.map(formatCidr))].sort();
    const cidrText = formatCidr(cidr);
    const meaning = describeIPBlock(cidrText, exceptText);
    const members = new Set(hashNetEntries(cidr));
    for (const e of exceptText) {
      // ipset keeps one entry per prefix: an except equal to a /0 half removes that half.
      if (members.has(e)) members.delete(e);
      else members.add(`${e} nomatch`);
    }
    const name = ipBlockSetName(cidrText, exceptText);
    if (!this.demands.has(name)) {
      const ref: SetRef = { name, type: 'hash:net', kind: 'IPBlock', family: 'IPv4', meaning: flat(meaning), members: trimmed([...members].sort()) };
      this.demands.set(name, { kind: 'IPBlock', ref });
    }
    return { name, meaning };
  }
}

interface PeerMatch {
  set?: string;
  words: string;
  /** The set is an ipBlock (its members are static: nothing to warn about). */
  ipBlock?: boolean;
}

interface PortMatch {
  match: Omit<RuleMatch, 'peerSet'>;
  words: string;
}

/** A peer's set, or null when it has no IPv4 effect (an IPv6 ipBlock), or undefined on error. */
function compilePeer(b: Builder, peer: NetworkPolicyPeer, policyNs: string, field: string): PeerMatch | null | undefined {
  if (peer === null || typeof peer !== 'object' || Array.isArray(peer)) {
    b.errors.push({ field, message: 'must be an object' });
    return undefined;
  }
  // null is how JSON spells an absent field (the API server decodes it as nil).
  const hasSel = peer.podSelector != null || peer.namespaceSelector != null;
  if (peer.ipBlock != null) {
    if (hasSel) {
      b.errors.push({ field, message: 'ipBlock may not be combined with podSelector or namespaceSelector' });
      return undefined;
    }
    const r = b.ipBlockSet(peer.ipBlock, `${field}.ipBlock`);
    if (!r) return r;
    return { set: r.name, words: r.meaning, ipBlock: true };
  }
  if (!hasSel) {
    b.errors.push({ field, message: 'must specify one of podSelector, namespaceSelector, ipBlock' });
    return undefined;
  }
  const errs = b.errors.length;
  const pods = b.selector(peer.podSelector, `${field}.podSelector`);
  const scope: Scope =
    peer.namespaceSelector == null
      ? { ns: policyNs }
      : { nsSel: b.selector(peer.namespaceSelector, `${field}.namespaceSelector`) };
  if (b.errors.length > errs) return undefined;
  const ref = b.podSet(scope, pods);
  return { set: ref.name, words: ref.meaning };
}

function compilePort(b: Builder, p: NetworkPolicyPort, field: string): PortMatch | undefined {
  if (p === null || typeof p !== 'object' || Array.isArray(p)) {
    b.errors.push({ field, message: 'must be an object' });
    return undefined;
  }
  const protocol = (p.protocol ?? 'TCP') as Protocol;
  if (!PROTOCOLS.includes(protocol)) {
    b.errors.push({ field: `${field}.protocol`, message: `"${String(p.protocol)}" is not one of TCP, UDP, SCTP` });
    return undefined;
  }
  if (p.port === undefined || p.port === null) {
    if (p.endPort !== undefined) {
      b.errors.push({ field: `${field}.endPort`, message: 'endPort requires port' });
      return undefined;
    }
    return { match: { protocol }, words: `${protocol} (any port)` };
  }
  if (typeof p.port === 'string') {
    if (!SVC_NAME.test(p.port)) {
      b.errors.push({ field: `${field}.port`, message: `"${p.port}" is neither a port number nor a valid port name` });
      return undefined;
    }
    if (p.endPort !== undefined) {
      b.errors.push({ field: `${field}.endPort`, message: 'endPort may not be used with a named port' });
      return undefined;
    }
    return { match: { protocol, namedPortSet: b.namedPortSet(p.port, protocol) }, words: `${protocol}/${p.port} (named port)` };
  }
  if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535) {
    b.errors.push({ field: `${field}.port`, message: `${String(p.port)} is not a port number in 1-65535` });
    return undefined;
  }
  if (p.endPort !== undefined && p.endPort !== null) {
    if (!Number.isInteger(p.endPort) || p.endPort < p.port || p.endPort > 65535) {
      b.errors.push({ field: `${field}.endPort`, message: `${String(p.endPort)} must be an integer in ${p.port}-65535` });
      return undefined;
    }
    if (p.endPort > p.port) return { match: { protocol, port: p.port, endPort: p.endPort }, words: `${protocol} ports ${p.port}-${p.endPort}` };
  }
  return { match: { protocol, port: p.port }, words: `${protocol}/${p.port}` };
}

function compileRules(
  b: Builder,
  direction: Direction,
  rules: unknown,
  policyNs: string,
  field: string,
  /** The policy's own pod set: where an ingress rule's named ports must be declared. */
  targetSet: string,
  checks: WarningCheck[],
): Rule[] {
  const out: Rule[] = [];
  if (rules === undefined || rules === null) return out;
  if (!Array.isArray(rules)) {
    b.errors.push({ field, message: 'must be a list of rules' });
    return out;
  }
  const peerKey = direction === 'Ingress' ? 'from' : 'to';
  const fromTo = direction === 'Ingress' ? 'from' : 'to';
  rules.forEach((rule: unknown, i: number) => {
    const rf = `${field}[${i}]`;
    const errs = b.errors.length;
    // A rule that is not an object would read as "no peers, no ports": allow everything. (null is
    // what the API server decodes as an empty rule, so it keeps that meaning.)
    if (rule !== null && (typeof rule !== 'object' || Array.isArray(rule))) {
      b.errors.push({ field: rf, message: 'must be an object (a rule)' });
      return;
    }
    const rawPeers = (rule as Record<string, unknown> | null)?.[peerKey];
    const rawPorts = (rule as Record<string, unknown> | null)?.ports;
    if (rawPeers !== undefined && rawPeers !== null && !Array.isArray(rawPeers)) b.errors.push({ field: `${rf}.${peerKey}`, message: 'must be a list' });
    if (rawPorts !== undefined && rawPorts !== null && !Array.isArray(rawPorts)) b.errors.push({ field: `${rf}.ports`, message: 'must be a list' });
    if (b.errors.length > errs) return;
    const peerList = (rawPeers ?? []) as NetworkPolicyPeer[];
    const portList = (rawPorts ?? []) as NetworkPolicyPort[];
    // Missing or empty peers: every peer. Missing or empty ports: every port.
    const peers: (PeerMatch | null | undefined)[] = peerList.length
      ? peerList.map((p, j) => compilePeer(b, p, policyNs, `${rf}.${peerKey}[${j}]`))
      : [{ words: direction === 'Ingress' ? 'any source' : 'any destination' }];
    const ports: (PortMatch | undefined)[] = portList.length
      ? portList.map((p, k) => compilePort(b, p, `${rf}.ports[${k}]`))
      : [{ match: {}, words: 'any protocol and port' }];
    // Any error inside the rule drops the whole rule: dropping an allow only denies more.
    if (b.errors.length > errs) return;
    addChecks(direction, `${field.slice('spec.'.length)}[${i}]`, peerKey, peerList, peers, portList, ports, targetSet, checks);
    for (const peer of peers) {
      if (!peer) continue; // no IPv4 effect (IPv6 block, or an except covering the block)
      for (const port of ports) {
        // Built field by field (the order of the spreads it replaces: peerSet, then the port's).
        const pm = port!.match;
        const match: RuleMatch = {};
        if (peer.set) match.peerSet = peer.set;
        if (pm.protocol !== undefined) match.protocol = pm.protocol;
        if (pm.namedPortSet !== undefined) match.namedPortSet = pm.namedPortSet;
        if (pm.port !== undefined) match.port = pm.port;
        if (pm.endPort !== undefined) match.endPort = pm.endPort;
        out.push({ description: flat(`rule ${i}: allow ${port!.words} ${fromTo} ${peer.words}`), match });
      }
    }
  });
  return trimmed(out);
}

/**
 * The warning checks of one valid rule (see WarningCheck). `rule` is "ingress[0]"; peers and
 * ports as compiled, index for index with the lists the user wrote.
 */
function addChecks(
  direction: Direction,
  rule: string,
  peerKey: string,
  peerList: readonly NetworkPolicyPeer[],
  peers: readonly (PeerMatch | null | undefined)[],
  portList: readonly NetworkPolicyPort[],
  ports: readonly (PortMatch | undefined)[],
  targetSet: string,
  checks: WarningCheck[],
): void {
  const podPeers: string[] = [];
  let anyPeer = peerList.length === 0;
  peers.forEach((p, j) => {
    if (peerList.length === 0) return;
    const at = `${rule}.${peerKey}[${j}]`;
    if (p === null) {
      const cidr = String((peerList[j]!.ipBlock as { cidr?: unknown }).cidr);
      checks.push({ kind: 'static', rule: flat(at), reason: WARNING.IPv6NotEnforced, message: flat(`ipBlock ${cidr} is IPv6: the IPv4 dataplane cannot enforce it, so this peer allows nothing`) });
    } else if (p?.ipBlock) anyPeer = true;
    else if (p?.set) {
      podPeers.push(p.set);
      checks.push({ kind: 'peer', rule: flat(at), set: p.set });
    }
  });
  ports.forEach((p, k) => {
    const set = p?.match.namedPortSet;
    if (!set) return;
    // A named port resolves on the destination pod: the selected pods for ingress, the peers for
    // egress (any pod when a peer is an ipBlock or any destination).
    const on = direction === 'Ingress' ? [targetSet] : anyPeer ? undefined : podPeers;
    if (on?.length === 0) return; // only IPv6 peers: the rule allows nothing anyway
    const port = flat(`${portList[k]!.protocol ?? 'TCP'} port "${String(portList[k]!.port)}"`);
    checks.push({ kind: 'namedPort', rule: flat(`${rule}.ports[${k}]`), set, port, on: on && trimmed([...new Set(on)]) });
  });
}

/** Translates one policy (already defaulted: see defaults.ts). */
export function compilePolicy(np: NetworkPolicy, cache?: CompileCache): CompiledPolicy {
  const b = new Builder(cache);
  const namespace = np.metadata.namespace ?? 'default';
  const name = np.metadata.name ?? '';
  const spec = np.spec ?? {};
  const selErrs = b.errors.length;
  let target = b.selector(spec.podSelector, 'spec.podSelector');
  if (b.errors.length > selErrs) target = compileSelector({}, 'spec.podSelector', []); // fail closed: guard every pod
  const targetScope: Scope = { ns: namespace };
  const targetRef = b.podSet(targetScope, target);
  const targetSet = targetRef.name;
  const guards = targetRef.meaning;

  let types: Direction[] = [];
  const rawTypes = spec.policyTypes ?? [];
  let badType = false;
  (Array.isArray(rawTypes) ? rawTypes : [rawTypes]).forEach((t, i) => {
    if (t === 'Ingress' || t === 'Egress') {
      if (!types.includes(t)) types.push(t);
    } else {
      b.errors.push({ field: `spec.policyTypes[${i}]`, message: `"${String(t)}" is not one of Ingress, Egress` });
      badType = true;
    }
  });
  if (badType) types = ['Ingress', 'Egress'];
  types.sort(); // Egress before Ingress: a stable order independent of how the user wrote it

  const chains: Chain[] = [];
  const checks: WarningCheck[] = [];
  for (const direction of types) {
    const rules =
      direction === 'Ingress'
        ? compileRules(b, 'Ingress', spec.ingress, namespace, 'spec.ingress', targetSet, checks)
        : compileRules(b, 'Egress', spec.egress, namespace, 'spec.egress', targetSet, checks);
    chains.push({ name: flat(policyChainName(direction, namespace, name)), direction, targetSet, guards, rules });
  }

  // Each ruleset gets its own SetRef objects (their strings are shared): the YAML output writes an
  // object met twice as an alias.
  const ipsets = [...b.demands.values()].map((d) => (d.kind === 'IPBlock' ? d.ref : { ...d.ref })).sort((a, c) => (a.name < c.name ? -1 : a.name > c.name ? 1 : 0));
  const summary = flat(chains.length
    ? `Isolates ${guards} for ${chains
        .map((c) => `${c.direction.toLowerCase()} (${c.rules.length ? `${c.rules.length} allow rule${c.rules.length > 1 ? 's' : ''}` : 'allows nothing'})`)
        .join(' and ')}`
    : `Selects ${guards} but isolates no direction`);
  const out: NpmRuleSetSpec = {
    policy: {
      name,
      namespace,
      ...(np.metadata.uid ? { uid: np.metadata.uid } : {}),
      ...(np.metadata.generation !== undefined ? { generation: np.metadata.generation } : {}),
    },
    policyTypes: trimmed(types),
    policyTypesText: flat(types.join(',')),
    summary,
    ipsets,
    chains: trimmed(chains),
  };
  if (b.errors.length) out.problems = b.errors.map((e) => `${e.field}: ${e.message}`);
  return { namespace, name, spec: out, demands: [...b.demands.values()], errors: b.errors, checks: checks.length ? trimmed(checks) : NO_CHECKS };
}
