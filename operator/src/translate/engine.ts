/**
 * The incremental translation engine: cluster events in, changed NpmRuleSet / NpmIPSet objects out.
 *
 * Model
 *  - Policies compile independently (policy.ts) into rulesets that reference sets by kernel name.
 *    A ruleset changes only when its policy changes: pod and namespace events never touch rulesets.
 *  - Pod-derived sets (pod selectors within a namespace scope, named ports) are shared by every
 *    policy that names them, reference-counted, and hold members as (pod -> member strings).
 *  - Indexes make one pod event cost O(sets it can join or leave), not O(all sets): pod-selector sets
 *    are indexed by namespace (or "namespace selector") and by one positive label requirement.
 *  - Members are sharded (fixed power-of-two shard counts by member count, bucket by a hash of the
 *    member's IP), so an event rewrites one shard of each set it changes, and no object nears 1 MiB.
 *  - drain() hands back what changed since the previous drain; all() renders everything. Both render
 *    through the same functions, and the property test checks that incremental == full.
 * Pure: no I/O, no clock.
 */
import { ipSetObjectName } from '../api/names.js';
import {
  API_VERSION,
  IPSET_KIND,
  MANAGED_BY_LABEL,
  MANAGED_BY_VALUE,
  RULESET_KIND,
  SET_LABEL,
  type NpmIPSet,
  type NpmRuleSet,
  type SetRef,
} from '../api/types.js';
import { isIPv6, parseIPv4 } from './cidr.js';
import { defaultNamespace, defaultPod, defaultPolicy } from './defaults.js';
import { NAMESPACE_NAME_LABEL, type ClusterSnapshot, type Namespace, type NetworkPolicy, type Pod } from './k8s.js';
import { compilePolicy, type CompiledPolicy, type Scope, type SetDemand } from './policy.js';
import { indexKeys, labelKeys, matches, type FieldError, type Selector } from './selector.js';
import { addTo, removeFrom } from './multimap.js';

/** Members per shard at which a set doubles its shard count (see shardCountFor). */
export const SHARD_TARGET = 1024;

export interface Problem {
  /** "NetworkPolicy prod/web". */
  object: string;
  field: string;
  message: string;
}

export interface ObjectRef {
  kind: typeof RULESET_KIND | typeof IPSET_KIND;
  namespace?: string;
  name: string;
}

export interface Changes {
  upserts: (NpmRuleSet | NpmIPSet)[];
  deletes: ObjectRef[];
}

/** A pod as the engine sees it: only what membership depends on. */
interface PodState {
  key: string;
  ns: string;
  labels: Record<string, string>;
  /** spec.nodeName: which node's agent enforces this pod's policies. */
  node?: string;
  /** IPv4 address, if the pod has one and counts (not hostNetwork, not terminated). */
  ip?: string;
  /** "name/PROTO" -> container port numbers. */
  namedPorts: Map<string, number[]>;
}

/** Members of one kernel set, sharded. Member strings are ipset entry syntax. */
class MemberSet {
  /** pod key -> the member strings it contributes. */
  private readonly byPod = new Map<string, string[]>();
  /** member -> number of pods contributing it (two pods can briefly share an IP). */
  private readonly counts = new Map<string, number>();
  private shards: Map<string, number>[] = [new Map()];
  readonly dirtyShards = new Set<number>();
  /** Shard count last handed out by drain (0: never written). */
  writtenShards = 0;

  constructor(readonly ref: SetRef) {}

  get size(): number {
    return this.counts.size;
  }

  has(podKey: string): boolean {
    return this.byPod.has(podKey);
  }

  podKeys(): IterableIterator<string> {
    return this.byPod.keys();
  }

  /** Sets a pod's members; returns whether the set changed at all. */
  set(podKey: string, members: string[]): boolean {
    const old = this.byPod.get(podKey);
    if (old ? old.length === members.length && old.every((m, i) => m === members[i]) : members.length === 0) return false;
    if (old) for (const m of old) this.dec(m);
    if (members.length) {
      this.byPod.set(podKey, members);
      for (const m of members) this.inc(m);
    } else this.byPod.delete(podKey);
    this.reshardIfNeeded();
    return true;
  }

  delete(podKey: string): boolean {
    return this.set(podKey, []);
  }

  markAllDirty(): void {
    for (let i = 0; i < this.shards.length; i++) this.dirtyShards.add(i);
  }

  private inc(m: string): void {
    const c = this.counts.get(m) ?? 0;
    this.counts.set(m, c + 1);
    if (c === 0) this.shardAdd(m);
  }

  private dec(m: string): void {
    const c = this.counts.get(m) ?? 0;
    if (c <= 1) {
      this.counts.delete(m);
      this.shardRemove(m);
    } else this.counts.set(m, c - 1);
  }

  private shardAdd(m: string): void {
    const i = bucket(m, this.shards.length);
    this.shards[i]!.set(m, 1);
    this.dirtyShards.add(i);
  }

  private shardRemove(m: string): void {
    const i = bucket(m, this.shards.length);
    this.shards[i]!.delete(m);
    this.dirtyShards.add(i);
  }

  private reshardIfNeeded(): void {
    const n = shardCountFor(this.counts.size);
    if (n === this.shards.length) return;
    this.shards = Array.from({ length: n }, () => new Map<string, number>());
    for (const m of this.counts.keys()) this.shards[bucket(m, n)]!.set(m, 1);
    for (let i = 0; i < n; i++) this.dirtyShards.add(i);
  }

  shardCount(): number {
    return this.shards.length;
  }

  shardMembers(i: number): string[] {
    // Decorate-sort: parse each address once, not once per comparison.
    return [...(this.shards[i]?.keys() ?? [])]
      .map((m) => [memberSortKey(m), m] as const)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))
      .map(([, m]) => m);
  }
}

/** Stateless, so a full and an incremental translation always agree on the shard layout. */
export function shardCountFor(members: number): number {
  let n = 1;
  while (members > n * SHARD_TARGET) n *= 2;
  return n;
}

/** FNV-1a of the member's address part: a pod's entries of one set land in one shard. */
function bucket(member: string, shards: number): number {
  if (shards === 1) return 0;
  const end = member.indexOf(',');
  const addr = end < 0 ? member : member.slice(0, end);
  let h = 0x811c9dc5;
  for (let i = 0; i < addr.length; i++) {
    h ^= addr.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) & (shards - 1);
}

/** Orders addresses numerically so that lists read naturally ("10.0.0.9" before "10.0.0.10"). */
function memberSortKey(m: string): string {
  const end = m.search(/[,/ ]/);
  const addr = end < 0 ? m : m.slice(0, end);
  const n = parseIPv4(addr);
  return n === undefined ? `z${m}` : `${n.toString(16).padStart(8, '0')}${m.slice(addr.length)}`;
}

interface PodSetState {
  kind: 'PodSelector';
  members: MemberSet;
  scope: Scope;
  pods: Selector;
  refs: number;
}

interface NamedPortSetState {
  kind: 'NamedPort';
  members: MemberSet;
  /** "name/PROTO" */
  portKey: string;
  refs: number;
}

type SetState = PodSetState | NamedPortSetState;

/** Selectors indexed by one positive requirement (see selector.indexKeys). */
class SelectorIndex {
  private readonly byKey = new Map<string, Set<PodSetState>>();
  private readonly unindexed = new Set<PodSetState>();

  add(s: PodSetState): void {
    const keys = indexKeys(s.pods);
    if (!keys) return void this.unindexed.add(s);
    for (const k of keys) {
      let b = this.byKey.get(k);
      if (!b) this.byKey.set(k, (b = new Set()));
      b.add(s);
    }
  }

  remove(s: PodSetState): void {
    const keys = indexKeys(s.pods);
    if (!keys) return void this.unindexed.delete(s);
    for (const k of keys) {
      const b = this.byKey.get(k);
      b?.delete(s);
      if (b?.size === 0) this.byKey.delete(k);
    }
  }

  collect(labels: Record<string, string>, into: Set<PodSetState>): void {
    for (const s of this.unindexed) into.add(s);
    for (const k of labelKeys(labels)) for (const s of this.byKey.get(k) ?? []) into.add(s);
  }

  get empty(): boolean {
    return this.unindexed.size === 0 && this.byKey.size === 0;
  }
}

interface PolicyState {
  compiled: CompiledPolicy;
  ruleset: NpmRuleSet;
}

function objectName(kind: string, meta: { namespace?: string; name?: string }): string {
  return `${kind} ${meta.namespace ? `${meta.namespace}/` : ''}${meta.name ?? '<unnamed>'}`;
}

export class TranslationEngine {
  private readonly namespaces = new Map<string, Record<string, string>>();
  private readonly pods = new Map<string, PodState>();
  private readonly podsByNs = new Map<string, Set<string>>();
  private readonly podsByNamedPort = new Map<string, Set<string>>();
  private readonly policies = new Map<string, PolicyState>();
  private readonly sets = new Map<string, SetState>();
  /** Pod-selector sets scoped to one namespace, by namespace. */
  private readonly nsIndex = new Map<string, SelectorIndex>();
  /** Pod-selector sets scoped by a namespace selector. */
  private readonly clusterIndex = new SelectorIndex();
  private readonly clusterSets = new Set<PodSetState>();
  private readonly namedPortSets = new Map<string, NamedPortSetState>();

  private readonly dirtyRulesets = new Set<string>();
  /** Rulesets handed out by drain and not deleted since: only these need a delete. */
  private readonly writtenRulesets = new Set<string>();
  private readonly dirtySets = new Set<string>();
  /** Sets removed since the last drain, with the shard count last written. */
  private readonly removedSets = new Map<string, number>();

  // ---------------------------------------------------------------- events

  upsertNamespace(raw: Namespace): FieldError[] {
    const errors: FieldError[] = [];
    const ns = defaultNamespace(raw, errors);
    if (errors.length) return errors;
    const name = ns.metadata.name!;
    const before = this.nsLabels(name);
    this.namespaces.set(name, { ...(ns.metadata.labels ?? {}) });
    this.namespaceLabelsChanged(name, before);
    return [];
  }

  deleteNamespace(name: string): void {
    const before = this.nsLabels(name);
    if (!this.namespaces.delete(name)) return;
    this.namespaceLabelsChanged(name, before);
  }

  upsertPod(raw: Pod): FieldError[] {
    const errors: FieldError[] = [];
    const pod = defaultPod(raw, errors);
    if (errors.length) return errors;
    const state = podState(pod);
    const old = this.pods.get(state.key);
    this.pods.set(state.key, state);
    if (!old) addTo(this.podsByNs, state.ns, state.key);
    for (const k of old?.namedPorts.keys() ?? []) if (!state.namedPorts.has(k)) removeFrom(this.podsByNamedPort, k, state.key);
    for (const k of state.namedPorts.keys()) addTo(this.podsByNamedPort, k, state.key);
    this.podChanged(old, state);
    return [];
  }

  deletePod(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const old = this.pods.get(key);
    if (!old) return;
    this.pods.delete(key);
    removeFrom(this.podsByNs, old.ns, key);
    for (const k of old.namedPorts.keys()) removeFrom(this.podsByNamedPort, k, key);
    this.podChanged(old, undefined);
  }

  /** Returns the policy's problems (it is still enforced, fail-closed: see policy.ts). */
  upsertPolicy(raw: NetworkPolicy): Problem[] {
    const objErrors: FieldError[] = [];
    const np = defaultPolicy(raw, objErrors);
    const what = objectName('NetworkPolicy', np.metadata);
    // Without a valid name there is no ruleset to put the problem on; label errors do not matter here.
    if (objErrors.some((e) => e.field.startsWith('metadata') && !e.field.startsWith('metadata.labels'))) return objErrors.map((e) => ({ object: what, ...e }));
    const compiled = compilePolicy(np);
    // Object-level problems (a spec that is not an object, ...) are the policy's problems too: the
    // operator reports spec.problems as Accepted=False.
    if (objErrors.length) {
      compiled.errors.unshift(...objErrors);
      compiled.spec.problems = compiled.errors.map((e) => `${e.field}: ${e.message}`);
    }
    const key = `${compiled.namespace}/${compiled.name}`;
    const old = this.policies.get(key);
    for (const d of compiled.demands) this.acquire(d);
    if (old) for (const d of old.compiled.demands) this.release(d.ref.name);
    const ruleset = renderRuleSet(np, compiled);
    if (!old || JSON.stringify(old.ruleset) !== JSON.stringify(ruleset)) this.dirtyRulesets.add(key);
    this.policies.set(key, { compiled, ruleset });
    return compiled.errors.map((e) => ({ object: what, ...e }));
  }

  deletePolicy(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const old = this.policies.get(key);
    if (!old) return;
    this.policies.delete(key);
    for (const d of old.compiled.demands) this.release(d.ref.name);
    this.dirtyRulesets.add(key);
  }

  // ---------------------------------------------------------------- output

  /** Everything, as the operator writes it: sets first (so rulesets never reference missing sets), sorted. */
  all(): (NpmRuleSet | NpmIPSet)[] {
    const sets: NpmIPSet[] = [];
    for (const name of [...this.sets.keys()].sort()) {
      const s = this.sets.get(name)!;
      for (let i = 0; i < s.members.shardCount(); i++) sets.push(renderIPSet(s.members, i));
    }
    const rulesets = [...this.policies.keys()].sort().map((k) => this.policies.get(k)!.ruleset);
    return [...sets, ...rulesets];
  }

  /** What changed since the previous drain (or since creation). */
  drain(): Changes {
    const upserts: (NpmRuleSet | NpmIPSet)[] = [];
    const deletes: ObjectRef[] = [];
    for (const name of [...this.dirtySets].sort()) {
      const s = this.sets.get(name);
      if (!s) continue;
      const ms = s.members;
      const n = ms.shardCount();
      for (const i of [...ms.dirtyShards].sort((a, b) => a - b)) if (i < n) upserts.push(renderIPSet(ms, i));
      if (ms.writtenShards > n) {
        for (let i = n; i < ms.writtenShards; i++) deletes.push({ kind: IPSET_KIND, name: ipSetObjectName(name, i) });
      }
      ms.writtenShards = n;
      ms.dirtyShards.clear();
    }
    this.dirtySets.clear();
    for (const key of [...this.dirtyRulesets].sort()) {
      const p = this.policies.get(key);
      if (p) {
        upserts.push(p.ruleset);
        this.writtenRulesets.add(key);
      } else if (this.writtenRulesets.delete(key)) {
        const slash = key.indexOf('/');
        deletes.push({ kind: RULESET_KIND, namespace: key.slice(0, slash), name: key.slice(slash + 1) });
      }
    }
    this.dirtyRulesets.clear();
    // Sets go after rulesets stop referencing them.
    for (const [name, shards] of [...this.removedSets].sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (this.sets.has(name)) continue;
      for (let i = 0; i < shards; i++) deletes.push({ kind: IPSET_KIND, name: ipSetObjectName(name, i) });
    }
    this.removedSets.clear();
    return { upserts, deletes };
  }

  stats(): { namespaces: number; pods: number; policies: number; sets: number; members: number } {
    let members = 0;
    for (const s of this.sets.values()) members += s.members.size;
    return { namespaces: this.namespaces.size, pods: this.pods.size, policies: this.policies.size, sets: this.sets.size, members };
  }

  /**
   * Nodes that must program a policy: those hosting a pod it selects (ingress is enforced at the
   * destination's node, egress at the source's; both are the selected pod's node).
   */
  concernedNodes(namespace: string, name: string): string[] {
    const p = this.policies.get(`${namespace}/${name}`);
    if (!p) return [];
    const nodes = new Set<string>();
    for (const chain of p.ruleset.spec.chains) {
      for (const key of this.sets.get(chain.targetSet)?.members.podKeys() ?? []) {
        const node = this.pods.get(key)?.node;
        if (node) nodes.add(node);
      }
    }
    return [...nodes].sort();
  }

  /** Keys ("ns/name") of every policy. */
  policyKeys(): string[] {
    return [...this.policies.keys()].sort();
  }

  /** The current NpmIPSet object of that name (a shard of a set), if the set and shard exist. */
  ipSetObject(objectName: string): NpmIPSet | undefined {
    const dash = objectName.lastIndexOf('-');
    const s = this.sets.get(objectName.slice(0, dash).toUpperCase());
    const shard = Number(objectName.slice(dash + 1));
    if (!s || !Number.isInteger(shard) || shard < 0 || shard >= s.members.shardCount()) return undefined;
    return renderIPSet(s.members, shard);
  }

  /** Names of every NpmIPSet object the engine wants. */
  ipSetObjectNames(): string[] {
    const out: string[] = [];
    for (const [name, s] of this.sets) for (let i = 0; i < s.members.shardCount(); i++) out.push(ipSetObjectName(name, i));
    return out.sort();
  }

  /** Problems of one policy (empty when it translated cleanly). */
  problems(namespace: string, name: string): string[] {
    return this.policies.get(`${namespace}/${name}`)?.ruleset.spec.problems ?? [];
  }

  /** The ruleset of one policy, if known. */
  ruleset(namespace: string, name: string): NpmRuleSet | undefined {
    return this.policies.get(`${namespace}/${name}`)?.ruleset;
  }

  // ---------------------------------------------------------------- internals

  private nsLabels(ns: string): Record<string, string> {
    // A namespace we have not seen (a file with pods but no Namespace object) still carries the
    // label the API server always sets.
    return this.namespaces.get(ns) ?? { [NAMESPACE_NAME_LABEL]: ns };
  }

  private acquire(d: SetDemand): void {
    if (d.kind === 'IPBlock') return; // inline in the ruleset
    const existing = this.sets.get(d.ref.name);
    if (existing) {
      existing.refs++;
      return;
    }
    const members = new MemberSet(d.ref);
    // Released and acquired again before a drain: its old shards are still written.
    members.writtenShards = this.removedSets.get(d.ref.name) ?? 0;
    this.removedSets.delete(d.ref.name);
    if (d.kind === 'PodSelector') {
      const s: PodSetState = { kind: 'PodSelector', members, scope: d.scope, pods: d.pods, refs: 1 };
      this.sets.set(d.ref.name, s);
      if ('ns' in s.scope) {
        let idx = this.nsIndex.get(s.scope.ns);
        if (!idx) this.nsIndex.set(s.scope.ns, (idx = new SelectorIndex()));
        idx.add(s);
        for (const key of this.podsByNs.get(s.scope.ns) ?? []) this.refreshPodSet(s, this.pods.get(key)!);
      } else {
        this.clusterIndex.add(s);
        this.clusterSets.add(s);
        for (const [ns, keys] of this.podsByNs) {
          if (!matches(s.scope.nsSel, this.nsLabels(ns))) continue;
          for (const key of keys) this.refreshPodSet(s, this.pods.get(key)!);
        }
      }
    } else {
      const portKey = `${d.portName}/${d.protocol}`;
      const s: NamedPortSetState = { kind: 'NamedPort', members, portKey, refs: 1 };
      this.sets.set(d.ref.name, s);
      this.namedPortSets.set(portKey, s);
      for (const key of this.podsByNamedPort.get(portKey) ?? []) this.refreshNamedPortSet(s, this.pods.get(key)!);
    }
    // A new set is written whole, empty or not: the agent creates the kernel set from it.
    members.markAllDirty();
    this.dirtySets.add(d.ref.name);
  }

  private release(name: string): void {
    const s = this.sets.get(name);
    if (!s || --s.refs > 0) return;
    this.sets.delete(name);
    this.dirtySets.delete(name);
    if (s.members.writtenShards > 0) this.removedSets.set(name, s.members.writtenShards);
    if (s.kind === 'PodSelector') {
      if ('ns' in s.scope) {
        const idx = this.nsIndex.get(s.scope.ns);
        idx?.remove(s);
        if (idx?.empty) this.nsIndex.delete(s.scope.ns);
      } else {
        this.clusterIndex.remove(s);
        this.clusterSets.delete(s);
      }
    } else this.namedPortSets.delete(s.portKey);
  }

  private refreshPodSet(s: PodSetState, pod: PodState): void {
    const inScope = 'ns' in s.scope ? s.scope.ns === pod.ns : matches(s.scope.nsSel, this.nsLabels(pod.ns));
    const member = pod.ip !== undefined && inScope && matches(s.pods, pod.labels);
    const changed = member ? s.members.set(pod.key, [pod.ip!]) : s.members.delete(pod.key);
    if (changed) this.dirtySets.add(s.members.ref.name);
  }

  private refreshNamedPortSet(s: NamedPortSetState, pod: PodState): void {
    const ports = pod.ip !== undefined ? (pod.namedPorts.get(s.portKey) ?? []) : [];
    const proto = s.portKey.slice(s.portKey.lastIndexOf('/') + 1).toLowerCase();
    const members = [...new Set(ports)].sort((a, b) => a - b).map((p) => `${pod.ip},${proto}:${p}`);
    if (s.members.set(pod.key, members)) this.dirtySets.add(s.members.ref.name);
  }

  private podChanged(old: PodState | undefined, now: PodState | undefined): void {
    const candidates = new Set<PodSetState>();
    for (const p of [old, now]) {
      if (!p) continue;
      this.nsIndex.get(p.ns)?.collect(p.labels, candidates);
      // Namespace-selector sets: refreshPodSet checks the namespace (a few labels, cheap).
      this.clusterIndex.collect(p.labels, candidates);
    }
    const key = (now ?? old)!.key;
    for (const s of candidates) {
      if (now) this.refreshPodSet(s, now);
      else if (s.members.delete(key)) this.dirtySets.add(s.members.ref.name);
    }
    const portKeys = new Set([...(old?.namedPorts.keys() ?? []), ...(now?.namedPorts.keys() ?? [])]);
    for (const pk of portKeys) {
      const s = this.namedPortSets.get(pk);
      if (!s) continue;
      if (now) this.refreshNamedPortSet(s, now);
      else if (s.members.delete(key)) this.dirtySets.add(s.members.ref.name);
    }
  }

  private namespaceLabelsChanged(ns: string, before: Record<string, string>): void {
    const labels = this.nsLabels(ns);
    for (const s of this.clusterSets) {
      const sel = (s.scope as { nsSel: Selector }).nsSel;
      if (matches(sel, before) === matches(sel, labels)) continue;
      for (const key of this.podsByNs.get(ns) ?? []) this.refreshPodSet(s, this.pods.get(key)!);
    }
  }
}


/**
 * Which IP of a pod counts: the IPv4 one (from podIPs for dual-stack pods, else podIP). hostNetwork
 * pods share the node's IP and are never members (their traffic does not cross FORWARD and
 * NetworkPolicy does not apply to them); pods that finished may have their IP reused.
 */
function podState(pod: Pod): PodState {
  const ns = pod.metadata.namespace ?? 'default';
  const key = `${ns}/${pod.metadata.name}`;
  const namedPorts = new Map<string, number[]>();
  for (const c of [...(pod.spec?.containers ?? []), ...(pod.spec?.initContainers ?? [])]) {
    for (const p of c.ports ?? []) {
      if (!p.name || !Number.isInteger(p.containerPort)) continue;
      const k = `${p.name}/${(p.protocol ?? 'TCP').toUpperCase()}`;
      const list = namedPorts.get(k) ?? [];
      list.push(p.containerPort);
      namedPorts.set(k, list);
    }
  }
  const phase = pod.status?.phase;
  const counts = !pod.spec?.hostNetwork && phase !== 'Succeeded' && phase !== 'Failed';
  const candidates = [...(pod.status?.podIPs ?? []).map((p) => p.ip), pod.status?.podIP].filter((x): x is string => !!x);
  const ip = counts ? candidates.find((a) => parseIPv4(a) !== undefined && !isIPv6(a)) : undefined;
  const node = pod.spec?.nodeName;
  return { key, ns, labels: { ...(pod.metadata.labels ?? {}) }, ...(node ? { node } : {}), ...(ip ? { ip } : {}), namedPorts };
}

function renderRuleSet(np: NetworkPolicy, c: CompiledPolicy): NpmRuleSet {
  return {
    apiVersion: API_VERSION,
    kind: RULESET_KIND,
    metadata: {
      name: c.name,
      namespace: c.namespace,
      labels: { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE },
      ...(np.metadata.uid
        ? {
            ownerReferences: [
              { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', name: c.name, uid: np.metadata.uid, controller: true, blockOwnerDeletion: true },
            ],
          }
        : {}),
    },
    spec: c.spec,
  };
}

function renderIPSet(ms: MemberSet, shard: number): NpmIPSet {
  const ref = ms.ref;
  return {
    apiVersion: API_VERSION,
    kind: IPSET_KIND,
    metadata: {
      name: ipSetObjectName(ref.name, shard),
      labels: { [MANAGED_BY_LABEL]: MANAGED_BY_VALUE, [SET_LABEL]: ref.name },
    },
    spec: {
      setName: ref.name,
      type: ref.type,
      kind: ref.kind,
      family: ref.family,
      meaning: ref.meaning,
      shard,
      shardCount: ms.shardCount(),
      members: ms.shardMembers(shard),
    },
  };
}

export interface TranslateResult {
  items: (NpmRuleSet | NpmIPSet)[];
  problems: Problem[];
}

/** Full translation of a snapshot: the reference the incremental engine is tested against. */
export function translate(snapshot: ClusterSnapshot): TranslateResult {
  const e = new TranslationEngine();
  const problems: Problem[] = [];
  for (const ns of snapshot.namespaces) {
    for (const err of e.upsertNamespace(ns)) problems.push({ object: objectName('Namespace', ns.metadata ?? {}), ...err });
  }
  for (const pod of snapshot.pods) {
    for (const err of e.upsertPod(pod)) problems.push({ object: objectName('Pod', pod.metadata ?? {}), ...err });
  }
  for (const np of snapshot.policies) problems.push(...e.upsertPolicy(np));
  return { items: e.all(), problems };
}
