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
 *  - A new set's members are computed lazily (fill), before any output or query: many new sets at
 *    once (a full translation) in one pass over the pods, each pod finding the sets it can join
 *    through a selector index, so a full translation costs O(pods + members + policies), not
 *    O(sets x pods in scope).
 *  - drain() hands back what changed since the previous drain; all() renders everything. Both render
 *    through the same functions, and the property test checks that incremental == full. A rendered
 *    shard is kept until it changes, so all(), drain() and ipSetObject() hand out the same object:
 *    callers must not modify the objects they receive (rulesets were already shared).
 *  - Warnings (a peer selecting no pod, a named port no destination declares, an IPv6 ipBlock:
 *    warnings()) are computed from the sets' members, per policy, from the checks compilePolicy
 *    recorded. drain() recomputes them only for the policies watching a set that changed (a peer
 *    set only when it became empty or stopped being), and names the policies whose list changed.
 *  - Memory is the limit at 10k policies (Antrea's workload: 200 MB): sets, selectors and kernel
 *    names are compiled once and shared between policies (policy.ts CompileCache), strings kept
 *    are flattened and arrays trimmed (strings.ts).
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
  type RuleWarning,
  type SetRef,
} from '../api/types.js';
import { parseIPv4 } from './cidr.js';
import { checkPod, defaultNamespace, defaultPolicy } from './defaults.js';
import { NAMESPACE_NAME_LABEL, type ClusterSnapshot, type Namespace, type NetworkPolicy, type Pod } from './k8s.js';
import { WARNING, compilePolicy, type CompileCache, type CompiledPolicy, type DemandCache, type PodDerivedDemand, type Scope, type WarningCheck } from './policy.js';
import { indexRequirement, matches, type FieldError, type Selector } from './selector.js';
import { addTo, removeFrom } from './multimap.js';
import { flat, trimmed } from './strings.js';

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
  /**
   * Policies whose warnings() changed since the previous drain (a status to recompute): pod events
   * move them without changing any ruleset. A policy added or changed is listed when its warnings
   * differ from none.
   */
  warned: { namespace: string; name: string }[];
}

/** A pod as the engine sees it: only what membership depends on. */
interface PodState {
  key: string;
  ns: string;
  labels: Record<string, string>;
  /** spec.nodeName: which node's agent enforces this pod's policies. */
  node: string | undefined;
  /** IPv4 address, if the pod has one and counts (not hostNetwork, not terminated). */
  ip: string | undefined;
  /**
   * Named container ports as pairs in one flat array: "name/PROTO", port, "name/PROTO", port, ...
   * (one array per pod, not a map of arrays: 100k pods).
   */
  namedPorts: readonly (string | number)[];
}

const NO_PORTS: readonly (string | number)[] = [];

/** The distinct "name/PROTO" keys of a pod's named ports. */
function portKeys(ports: readonly (string | number)[]): string[] {
  const out: string[] = [];
  for (let i = 0; i < ports.length; i += 2) if (!out.includes(ports[i] as string)) out.push(ports[i] as string);
  return out;
}

/** A pod's port numbers under one "name/PROTO" key. */
function portsNamed(ports: readonly (string | number)[], key: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < ports.length; i += 2) if (ports[i] === key) out.push(ports[i + 1] as number);
  return out;
}

/** What one pod contributes to a set: one member (a pod IP), or several (named ports: one per port). */
type PodMembers = string | string[];

function sameMembers(a: PodMembers | undefined, b: PodMembers | undefined): boolean {
  if (a === b) return true;
  if (typeof a !== 'object' || typeof b !== 'object' || a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/**
 * Members of one kernel set, sharded. Member strings are ipset entry syntax. Each shard maps a
 * member to the number of pods contributing it (two pods can briefly share an IP), so that one map
 * per shard is all the member storage (memory is the limit at 10k policies).
 */
class MemberSet {
  /** pod key -> what it contributes (never empty). */
  private readonly byPod = new Map<string, PodMembers>();
  private shards: Map<string, number>[] = [new Map()];
  private count = 0;
  /**
   * Rendered shards, kept until the shard changes: all(), drain() and ipSetObject() hand out the
   * same object, rendered (sorted) once. Callers must not modify it, as for rulesets.
   */
  private rendered: (NpmIPSet | undefined)[] = [];
  readonly dirtyShards = new Set<number>();
  /** Shard count last handed out by drain (0: never written). */
  writtenShards = 0;
  /** Whether the set was empty at the last drain (undefined: not drained yet): see drain's warnings. */
  drainedEmpty: boolean | undefined;

  constructor(readonly ref: SetRef) {}

  get size(): number {
    return this.count;
  }

  has(podKey: string): boolean {
    return this.byPod.has(podKey);
  }

  /** Pods contributing members (size counts distinct members). */
  get pods(): number {
    return this.byPod.size;
  }

  podKeys(): IterableIterator<string> {
    return this.byPod.keys();
  }

  /** Sets a pod's members (undefined: none); returns whether the set changed at all. */
  set(podKey: string, members: PodMembers | undefined): boolean {
    const old = this.byPod.get(podKey);
    if (sameMembers(old, members)) return false;
    if (typeof old === 'string') this.dec(old);
    else if (old) for (const m of old) this.dec(m);
    if (members === undefined) this.byPod.delete(podKey);
    else {
      this.byPod.set(podKey, members);
      if (typeof members === 'string') this.inc(members);
      else for (const m of members) this.inc(m);
    }
    this.reshardIfNeeded();
    return true;
  }

  delete(podKey: string): boolean {
    return this.set(podKey, undefined);
  }

  markAllDirty(): void {
    for (let i = 0; i < this.shards.length; i++) this.dirtyShards.add(i);
  }

  /**
   * Filling a new, empty set (engine.fill): records a pod's members only; build() then shards
   * them all at once, at their final shard count, instead of resharding at every doubling.
   */
  addNew(podKey: string, members: PodMembers): void {
    this.byPod.set(podKey, members);
  }

  build(): void {
    let entries = 0;
    for (const m of this.byPod.values()) entries += typeof m === 'string' ? 1 : m.length;
    // Pods sharing a member make `entries` an overestimate: reshardIfNeeded corrects it.
    const n = shardCountFor(entries);
    const shards = Array.from({ length: n }, () => new Map<string, number>());
    let count = 0;
    const put = (m: string) => {
      const shard = shards[bucket(m, n)]!;
      const c = shard.get(m);
      if (c === undefined) count++;
      shard.set(m, (c ?? 0) + 1);
    };
    for (const m of this.byPod.values()) {
      if (typeof m === 'string') put(m);
      else for (const x of m) put(x);
    }
    this.shards = shards;
    this.count = count;
    this.rendered = [];
    this.reshardIfNeeded();
    this.markAllDirty();
  }

  private inc(m: string): void {
    const i = bucket(m, this.shards.length);
    const shard = this.shards[i]!;
    const c = shard.get(m);
    if (c !== undefined) return void shard.set(m, c + 1);
    shard.set(m, 1);
    this.count++;
    this.changed(i);
  }

  private dec(m: string): void {
    const i = bucket(m, this.shards.length);
    const shard = this.shards[i]!;
    const c = shard.get(m);
    if (c === undefined) return;
    if (c > 1) return void shard.set(m, c - 1);
    shard.delete(m);
    this.count--;
    this.changed(i);
  }

  private changed(shard: number): void {
    this.dirtyShards.add(shard);
    this.rendered[shard] = undefined;
  }

  private reshardIfNeeded(): void {
    const n = shardCountFor(this.count);
    if (n === this.shards.length) return;
    const shards = Array.from({ length: n }, () => new Map<string, number>());
    for (const old of this.shards) for (const [m, c] of old) shards[bucket(m, n)]!.set(m, c);
    this.shards = shards;
    this.rendered = [];
    for (let i = 0; i < n; i++) this.dirtyShards.add(i);
  }

  shardCount(): number {
    return this.shards.length;
  }

  /** The NpmIPSet object of one shard (rendered on first use after a change). */
  object(shard: number): NpmIPSet {
    return (this.rendered[shard] ??= renderIPSet(this.ref, shard, this.shards.length, sortedMembers(this.shards[shard]!)));
  }
}

/**
 * Members in address order, numerically ("10.0.0.9" before "10.0.0.10"), then as text (the same
 * address with several ports); anything that does not start with an IPv4 address sorts last.
 * Each address is parsed once, and the sort is a numeric sort of (address, position) packed in a
 * float64 (exact below 2^53): no comparator call and no object per member (537k members at 100k
 * pods). Runs of one address are then ordered as text.
 */
function sortedMembers(shard: Map<string, number>): string[] {
  const members = [...shard.keys()];
  const n = members.length;
  if (n >= 65536) return members.sort(compareMembers);
  const keys = new Float64Array(n);
  for (let i = 0; i < n; i++) keys[i] = addressOrder(members[i]!) * 65536 + i;
  keys.sort();
  const out = new Array<string>(n);
  for (let i = 0; i < n; i++) out[i] = members[keys[i]! % 65536]!;
  for (let i = 0; i < n; ) {
    const addr = Math.floor(keys[i]! / 65536);
    let j = i + 1;
    while (j < n && Math.floor(keys[j]! / 65536) === addr) j++;
    if (j - i > 1) {
      const run = out.slice(i, j).sort(byText);
      for (let k = i; k < j; k++) out[k] = run[k - i]!;
    }
    i = j;
  }
  return out;
}

function byText(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

function compareMembers(a: string, b: string): number {
  return addressOrder(a) - addressOrder(b) || byText(a, b);
}

/** The member's leading IPv4 address (up to ",", "/" or " ") as a number; 2^32 when there is none. */
function addressOrder(m: string): number {
  let end = m.length;
  for (let i = 0; i < m.length; i++) {
    const c = m.charCodeAt(i);
    if (c === 44 /* , */ || c === 47 /* / */ || c === 32 /* space */) {
      end = i;
      break;
    }
  }
  return parseIPv4(end === m.length ? m : m.slice(0, end)) ?? 2 ** 32;
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
  let h = 0x811c9dc5;
  for (let i = 0; i < member.length; i++) {
    const c = member.charCodeAt(i);
    if (c === 44 /* , */) break;
    h ^= c;
    h = Math.imul(h, 0x01000193);
  }
  return (h >>> 0) & (shards - 1);
}

interface PodSetState {
  kind: 'PodSelector';
  /** Key of the set's entry in the engine's DemandCache. */
  identity: string;
  members: MemberSet;
  scope: Scope;
  pods: Selector;
  refs: number;
}

interface NamedPortSetState {
  kind: 'NamedPort';
  identity: string;
  members: MemberSet;
  /** "name/PROTO" */
  portKey: string;
  /** "tcp", as members spell it. */
  proto: string;
  refs: number;
}

type SetState = PodSetState | NamedPortSetState;

/** Selectors indexed by one positive requirement (see selector.indexRequirement). */
class SelectorIndex {
  /** label key -> label value -> selectors requiring key in (value, ...). */
  private readonly byValue = new Map<string, Map<string, Set<PodSetState>>>();
  /** label key -> selectors requiring the key to exist. */
  private readonly byKey = new Map<string, Set<PodSetState>>();
  private readonly unindexed = new Set<PodSetState>();

  add(s: PodSetState): void {
    const r = indexRequirement(s.pods);
    if (!r) return void this.unindexed.add(s);
    if (!r.values) return void addTo(this.byKey, r.key, s);
    let values = this.byValue.get(r.key);
    if (!values) this.byValue.set(r.key, (values = new Map()));
    for (const v of r.values) addTo(values, v, s);
  }

  remove(s: PodSetState): void {
    const r = indexRequirement(s.pods);
    if (!r) return void this.unindexed.delete(s);
    if (!r.values) return void removeFrom(this.byKey, r.key, s);
    const values = this.byValue.get(r.key);
    if (!values) return;
    for (const v of r.values) removeFrom(values, v, s);
    if (values.size === 0) this.byValue.delete(r.key);
  }

  /**
   * Calls fn for every selector that can match these labels, each once (a selector is indexed
   * under one key; an object has one value per key).
   */
  forEach(labels: Readonly<Record<string, string>>, fn: (s: PodSetState) => void): void {
    for (const s of this.unindexed) fn(s);
    if (this.byKey.size === 0 && this.byValue.size === 0) return;
    for (const k of Object.keys(labels)) {
      const exists = this.byKey.get(k);
      if (exists) for (const s of exists) fn(s);
      const withValue = this.byValue.get(k)?.get(labels[k]!);
      if (withValue) for (const s of withValue) fn(s);
    }
  }

  get empty(): boolean {
    return this.unindexed.size === 0 && this.byKey.size === 0 && this.byValue.size === 0;
  }
}

interface PolicyState {
  /** Names of the sets it acquired (released when the policy changes or goes). */
  sets: string[];
  ruleset: NpmRuleSet;
  checks: readonly WarningCheck[];
  /** warnings() as of the last drain (NO_WARNINGS when none). */
  warned: readonly RuleWarning[];
}

const NO_WARNINGS: readonly RuleWarning[] = [];

function sameWarnings(a: readonly RuleWarning[], b: readonly RuleWarning[]): boolean {
  return a.length === b.length && a.every((w, i) => w.rule === b[i]!.rule && w.reason === b[i]!.reason && w.message === b[i]!.message);
}

function objectName(kind: string, meta: { namespace?: string; name?: string }): string {
  return `${kind} ${meta.namespace ? `${meta.namespace}/` : ''}${meta.name ?? '<unnamed>'}`;
}

export class TranslationEngine {
  private readonly namespaces = new Map<string, Record<string, string>>();
  private readonly pods = new Map<string, PodState>();
  private readonly podsByNs = new Map<string, Set<string>>();
  private readonly policies = new Map<string, PolicyState>();
  private readonly sets = new Map<string, SetState>();
  /** Pod-selector sets scoped to one namespace, by namespace. */
  private readonly nsIndex = new Map<string, SelectorIndex>();
  /** Pod-selector sets scoped by a namespace selector. */
  private readonly clusterIndex = new SelectorIndex();
  private readonly clusterSets = new Set<PodSetState>();
  private readonly namedPortSets = new Map<string, NamedPortSetState>();
  /**
   * Sets acquired whose members are not computed yet. Pod and namespace events skip them (they
   * are empty): fill() computes them from the pods as they are then, before any output or query.
   */
  private readonly unfilled = new Set<SetState>();
  /** The live pod-derived sets' demands by identity, shared with compilePolicy (see DemandCache). */
  private readonly demands: DemandCache = new Map();
  private readonly compileCache: CompileCache = { demands: this.demands, selectors: new Map() };
  /** One string per "name/PROTO" (a few distinct, each named by thousands of pods). */
  private readonly portKeyStrings = new Map<string, string>();
  private readonly internPortKey = (k: string): string => {
    const known = this.portKeyStrings.get(k);
    if (known !== undefined) return known;
    if (this.portKeyStrings.size < 10000) this.portKeyStrings.set(flat(k), k);
    return k;
  };

  /**
   * Policies to recheck for warnings when a set changes, by set name: `emptiness` when the set
   * becomes empty or stops being (peer checks), `members` on any change (named-port checks).
   */
  private readonly emptinessWatchers = new Map<string, Set<string>>();
  private readonly memberWatchers = new Map<string, Set<string>>();

  private readonly dirtyRulesets = new Set<string>();
  /** Rulesets handed out by drain and not deleted since: only these need a delete. */
  private readonly writtenRulesets = new Set<string>();
  private readonly dirtySets = new Set<string>();
  /** Sets removed since the last drain, with the shard count last written. */
  private readonly removedSets = new Map<string, number>();
  /** Policies whose warnings drain() must recompute (changed policies). */
  private readonly recheck = new Set<string>();

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
    // podState applies the API server's pod defaults itself (namespace, port protocol), so the
    // defaulted copy defaultPod would build is not needed: only its checks.
    checkPod(raw, errors);
    if (errors.length) return errors;
    const state = podState(raw, this.internPortKey);
    const old = this.pods.get(state.key);
    this.pods.set(state.key, state);
    if (!old) addTo(this.podsByNs, state.ns, state.key);
    this.podChanged(old, state);
    return [];
  }

  deletePod(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const old = this.pods.get(key);
    if (!old) return;
    this.pods.delete(key);
    removeFrom(this.podsByNs, old.ns, key);
    this.podChanged(old, undefined);
  }

  /** Returns the policy's problems (it is still enforced, fail-closed: see policy.ts). */
  upsertPolicy(raw: NetworkPolicy): Problem[] {
    const objErrors: FieldError[] = [];
    const np = defaultPolicy(raw, objErrors);
    const what = objectName('NetworkPolicy', np.metadata);
    // Without a valid name there is no ruleset to put the problem on; label errors do not matter here.
    if (objErrors.some((e) => e.field.startsWith('metadata') && !e.field.startsWith('metadata.labels'))) return objErrors.map((e) => ({ object: what, ...e }));
    // Selectors no policy uses any more stay cached until there are many.
    if (this.compileCache.selectors.size > 20000) this.compileCache.selectors.clear();
    const compiled = compilePolicy(np, this.compileCache);
    // Object-level problems (a spec that is not an object, ...) are the policy's problems too: the
    // operator reports spec.problems as Accepted=False.
    if (objErrors.length) {
      compiled.errors.unshift(...objErrors);
      compiled.spec.problems = compiled.errors.map((e) => `${e.field}: ${e.message}`);
    }
    const key = flat(`${compiled.namespace}/${compiled.name}`);
    const old = this.policies.get(key);
    const sets: string[] = [];
    for (const d of compiled.demands) {
      if (d.kind === 'IPBlock') continue; // inline in the ruleset
      this.acquire(d);
      sets.push(d.ref.name);
    }
    if (old) {
      for (const name of old.sets) this.release(name);
      this.watch(key, old.checks, removeFrom);
    }
    this.watch(key, compiled.checks, addTo);
    const ruleset = renderRuleSet(np, compiled);
    if (!old || JSON.stringify(old.ruleset) !== JSON.stringify(ruleset)) this.dirtyRulesets.add(key);
    // Rechecked at the next drain (its sets may not be filled yet).
    this.recheck.add(key);
    this.policies.set(key, { sets: trimmed(sets), ruleset, checks: compiled.checks, warned: old?.warned ?? NO_WARNINGS });
    return compiled.errors.map((e) => ({ object: what, ...e }));
  }

  deletePolicy(namespace: string, name: string): void {
    const key = `${namespace}/${name}`;
    const old = this.policies.get(key);
    if (!old) return;
    this.policies.delete(key);
    for (const name of old.sets) this.release(name);
    this.watch(key, old.checks, removeFrom);
    this.recheck.delete(key);
    this.dirtyRulesets.add(key);
  }

  /** Adds (addTo) or removes (removeFrom) a policy from the watchers of the sets its checks read. */
  private watch(key: string, checks: readonly WarningCheck[], op: typeof addTo): void {
    for (const c of checks) {
      if (c.kind === 'peer') op(this.emptinessWatchers, c.set, key);
      else if (c.kind === 'namedPort') {
        op(this.memberWatchers, c.set, key);
        for (const s of c.on ?? []) op(this.memberWatchers, s, key);
      }
    }
  }

  // ---------------------------------------------------------------- output

  /** Everything, as the operator writes it: sets first (so rulesets never reference missing sets), sorted. */
  all(): (NpmRuleSet | NpmIPSet)[] {
    this.fill();
    const sets: NpmIPSet[] = [];
    for (const name of [...this.sets.keys()].sort()) {
      const s = this.sets.get(name)!;
      for (let i = 0; i < s.members.shardCount(); i++) sets.push(s.members.object(i));
    }
    const rulesets = [...this.policies.keys()].sort().map((k) => this.policies.get(k)!.ruleset);
    return [...sets, ...rulesets];
  }

  /** What changed since the previous drain (or since creation). */
  drain(): Changes {
    this.fill();
    const upserts: (NpmRuleSet | NpmIPSet)[] = [];
    const deletes: ObjectRef[] = [];
    const recheck = this.recheck;
    for (const name of [...this.dirtySets].sort()) {
      const s = this.sets.get(name);
      if (!s) continue;
      const ms = s.members;
      const empty = ms.size === 0;
      if (ms.drainedEmpty !== empty) for (const k of this.emptinessWatchers.get(name) ?? []) recheck.add(k);
      ms.drainedEmpty = empty;
      for (const k of this.memberWatchers.get(name) ?? []) recheck.add(k);
      const n = ms.shardCount();
      for (const i of [...ms.dirtyShards].sort((a, b) => a - b)) if (i < n) upserts.push(ms.object(i));
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
    const warned: { namespace: string; name: string }[] = [];
    for (const key of [...recheck].sort()) {
      const p = this.policies.get(key);
      if (!p) continue;
      const w = this.computeWarnings(p.checks);
      if (sameWarnings(w, p.warned)) continue;
      p.warned = w;
      const slash = key.indexOf('/');
      warned.push({ namespace: key.slice(0, slash), name: key.slice(slash + 1) });
    }
    recheck.clear();
    return { upserts, deletes, warned };
  }

  /**
   * What in this policy allows nothing right now (see policy.ts WarningCheck), in rule order; empty
   * when everything can match. Cost: one size check per pod-derived peer; for a named port, a
   * lookup per pod of the smaller side until one pod is found on both.
   */
  warnings(namespace: string, name: string): RuleWarning[] {
    const p = this.policies.get(`${namespace}/${name}`);
    if (!p) return [];
    this.fill();
    return this.computeWarnings(p.checks).slice();
  }

  private computeWarnings(checks: readonly WarningCheck[]): readonly RuleWarning[] {
    let out: RuleWarning[] | undefined;
    for (const c of checks) {
      let w: RuleWarning | undefined;
      if (c.kind === 'static') w = { rule: c.rule, reason: c.reason, message: c.message };
      else if (c.kind === 'peer') {
        const s = this.sets.get(c.set);
        if (s && s.members.size === 0) w = { rule: c.rule, reason: WARNING.NoPeersSelected, message: `selects no pod right now: ${s.members.ref.meaning}` };
      } else {
        const ports = this.sets.get(c.set)?.members;
        if (!ports) continue;
        if (c.on === undefined) {
          if (ports.size === 0) w = { rule: c.rule, reason: WARNING.NamedPortNotDeclared, message: `no pod declares ${c.port}: it matches nothing` };
        } else {
          const on = c.on.map((n) => this.sets.get(n)?.members).filter((m): m is MemberSet => m !== undefined && m.pods > 0);
          // No destination pod at all: nothing to declare it (a peer warning or NoSelectedPods says so).
          if (on.length && !declaredBySome(ports, on)) {
            const who = c.rule.startsWith('ingress') ? 'no pod this policy selects' : 'no pod of this rule\'s peers';
            w = { rule: c.rule, reason: WARNING.NamedPortNotDeclared, message: `${who} declares ${c.port}: it matches nothing` };
          }
        }
      }
      if (w) (out ??= []).push(w);
    }
    return out ?? NO_WARNINGS;
  }

  stats(): { namespaces: number; pods: number; policies: number; sets: number; members: number } {
    this.fill();
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
    this.fill();
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
    this.fill();
    const dash = objectName.lastIndexOf('-');
    const s = this.sets.get(objectName.slice(0, dash).toUpperCase());
    const shard = Number(objectName.slice(dash + 1));
    if (!s || !Number.isInteger(shard) || shard < 0 || shard >= s.members.shardCount()) return undefined;
    return s.members.object(shard);
  }

  /** Names of every NpmIPSet object the engine wants. */
  ipSetObjectNames(): string[] {
    this.fill();
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

  private acquire(d: PodDerivedDemand): void {
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
      const s: PodSetState = { kind: 'PodSelector', identity: d.identity, members, scope: d.scope, pods: d.pods, refs: 1 };
      this.sets.set(d.ref.name, s);
      if ('ns' in s.scope) {
        let idx = this.nsIndex.get(s.scope.ns);
        if (!idx) this.nsIndex.set(s.scope.ns, (idx = new SelectorIndex()));
        idx.add(s);
      } else {
        this.clusterIndex.add(s);
        this.clusterSets.add(s);
      }
    } else {
      const portKey = `${d.portName}/${d.protocol}`;
      const s: NamedPortSetState = { kind: 'NamedPort', identity: d.identity, members, portKey, proto: d.protocol.toLowerCase(), refs: 1 };
      this.sets.set(d.ref.name, s);
      this.namedPortSets.set(portKey, s);
    }
    // Members are computed by fill(), before anything reads them: for many new sets at once (a
    // full translation), in one pass over the pods.
    this.unfilled.add(this.sets.get(d.ref.name)!);
    // Written even if it stays empty: the agent creates the kernel set from it.
    members.markAllDirty();
    this.dirtySets.add(d.ref.name);
  }

  /**
   * Computes the members of the sets acquired since the last fill. A new set is empty, so pods
   * only join. Few new sets (a policy added): each visits the pods in its scope. Many (a full
   * translation: thousands of sets): one pass over the pods, each finding the new sets it can join
   * through a selector index, as a pod event does; the cost is then O(pods + members), not
   * O(sets x pods in scope).
   */
  private fill(): void {
    if (this.unfilled.size === 0) return;
    const sets = [...this.unfilled];
    this.unfilled.clear();
    let visits = 0;
    for (const s of sets) visits += s.kind === 'PodSelector' && 'ns' in s.scope ? (this.podsByNs.get(s.scope.ns)?.size ?? 0) : this.pods.size;
    if (visits <= this.pods.size) {
      for (const s of sets) {
        if (s.kind === 'NamedPort') for (const pod of this.pods.values()) this.joinNewNamedPortSet(s, pod);
        else if ('ns' in s.scope) for (const key of this.podsByNs.get(s.scope.ns) ?? []) this.joinNewSet(s, this.pods.get(key)!);
        else {
          for (const [ns, keys] of this.podsByNs) {
            if (!matches(s.scope.nsSel, this.nsLabels(ns))) continue;
            for (const key of keys) this.joinNewSet(s, this.pods.get(key)!);
          }
        }
      }
    } else {
      const byNs = new Map<string, SelectorIndex>();
      const cluster = new SelectorIndex();
      const clusterSets: PodSetState[] = [];
      const namedPort = new Map<string, NamedPortSetState>();
      for (const s of sets) {
        if (s.kind === 'NamedPort') namedPort.set(s.portKey, s);
        else if (!('ns' in s.scope)) {
          cluster.add(s);
          clusterSets.push(s);
        } else {
          let idx = byNs.get(s.scope.ns);
          if (!idx) byNs.set(s.scope.ns, (idx = new SelectorIndex()));
          idx.add(s);
        }
      }
      // Namespace-selector sets: which namespaces each one covers, computed once per namespace.
      const covers = new Map<string, Set<PodSetState>>();
      const coveredBy = (ns: string): Set<PodSetState> => {
        let c = covers.get(ns);
        if (!c) {
          c = new Set();
          const labels = this.nsLabels(ns);
          for (const s of clusterSets) if (matches((s.scope as { nsSel: Selector }).nsSel, labels)) c.add(s);
          covers.set(ns, c);
        }
        return c;
      };
      let pod: PodState;
      let inScope: Set<PodSetState>;
      const join = (s: PodSetState) => this.joinNewSet(s, pod);
      const joinIfCovered = (s: PodSetState) => void (inScope.has(s) && this.joinNewSet(s, pod));
      // Namespace by namespace: the sets of one namespace are filled together (memory locality:
      // this pass is bound by writes into a few thousand maps).
      for (const [ns, keys] of this.podsByNs) {
        const idx = byNs.get(ns);
        inScope = coveredBy(ns);
        for (const key of keys) {
          pod = this.pods.get(key)!;
          if (pod.ip === undefined) continue;
          idx?.forEach(pod.labels, join);
          if (inScope.size) cluster.forEach(pod.labels, joinIfCovered);
          if (namedPort.size) this.joinNamedPortSets(namedPort, pod);
        }
      }
    }
    // A new set is written whole, empty or not: the agent creates the kernel set from it.
    for (const s of sets) s.members.build();
  }

  /** fill(): a pod joins each new named-port set whose port it names. */
  private joinNamedPortSets(sets: Map<string, NamedPortSetState>, pod: PodState): void {
    const ports = pod.namedPorts;
    for (let i = 0; i < ports.length; i += 2) {
      const s = sets.get(ports[i] as string);
      // A pod naming the same port twice joins once (joinNewNamedPortSet reads all its ports).
      if (s && ports.indexOf(ports[i]!) === i) this.joinNewNamedPortSet(s, pod);
    }
  }


  private release(name: string): void {
    const s = this.sets.get(name);
    if (!s || --s.refs > 0) return;
    this.sets.delete(name);
    this.demands.delete(s.identity);
    this.unfilled.delete(s);
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
    const changed = s.members.set(pod.key, member ? pod.ip : undefined);
    if (changed) this.dirtySets.add(s.members.ref.name);
  }

  /** A pod in the scope of a set being filled (see fill). */
  private joinNewSet(s: PodSetState, pod: PodState): void {
    if (pod.ip !== undefined && matches(s.pods, pod.labels)) s.members.addNew(pod.key, pod.ip);
  }

  private joinNewNamedPortSet(s: NamedPortSetState, pod: PodState): void {
    const members = namedPortMembers(s, pod);
    if (members !== undefined) s.members.addNew(pod.key, members);
  }

  private refreshNamedPortSet(s: NamedPortSetState, pod: PodState): void {
    if (s.members.set(pod.key, namedPortMembers(s, pod))) this.dirtySets.add(s.members.ref.name);
  }

  private podChanged(old: PodState | undefined, now: PodState | undefined): void {
    // Pods loaded before any policy (a full translation): no set to update.
    if (this.sets.size === this.unfilled.size) return;
    const candidates = new Set<PodSetState>();
    const add = (s: PodSetState) => void candidates.add(s);
    const ns = (now ?? old)!.ns;
    const idx = this.nsIndex.get(ns);
    for (const p of old ? (now ? [old, now] : [old]) : [now!]) {
      idx?.forEach(p.labels, add);
      // Namespace-selector sets: refreshPodSet checks the namespace (a few labels, cheap).
      this.clusterIndex.forEach(p.labels, add);
    }
    const key = (now ?? old)!.key;
    for (const s of candidates) {
      if (this.unfilled.has(s)) continue;
      if (now) this.refreshPodSet(s, now);
      else if (s.members.delete(key)) this.dirtySets.add(s.members.ref.name);
    }
    const keys = now ? portKeys(now.namedPorts) : [];
    if (old) for (const k of portKeys(old.namedPorts)) if (!keys.includes(k)) keys.push(k);
    for (const pk of keys) {
      const s = this.namedPortSets.get(pk);
      if (!s || this.unfilled.has(s)) continue;
      if (now) this.refreshNamedPortSet(s, now);
      else if (s.members.delete(key)) this.dirtySets.add(s.members.ref.name);
    }
  }

  private namespaceLabelsChanged(ns: string, before: Record<string, string>): void {
    const labels = this.nsLabels(ns);
    for (const s of this.clusterSets) {
      const sel = (s.scope as { nsSel: Selector }).nsSel;
      if (this.unfilled.has(s) || matches(sel, before) === matches(sel, labels)) continue;
      for (const key of this.podsByNs.get(ns) ?? []) this.refreshPodSet(s, this.pods.get(key)!);
    }
  }
}


/**
 * Which IP of a pod counts: the IPv4 one (from podIPs for dual-stack pods, else podIP). hostNetwork
 * pods share the node's IP and are never members (their traffic does not cross FORWARD and
 * NetworkPolicy does not apply to them); pods that finished may have their IP reused.
 */
function podState(pod: Pod, intern: (s: string) => string): PodState {
  const ns = pod.metadata.namespace ?? 'default';
  const key = flat(`${ns}/${pod.metadata.name}`);
  let namedPorts: (string | number)[] | undefined;
  const addPorts = (containers: { ports?: { name?: string; containerPort: number; protocol?: string }[] }[] | undefined) => {
    for (const c of containers ?? []) {
      for (const p of c.ports ?? []) {
        if (!p.name || !Number.isInteger(p.containerPort)) continue;
        (namedPorts ??= []).push(intern(`${p.name}/${(p.protocol ?? 'TCP').toUpperCase()}`), p.containerPort);
      }
    }
  };
  addPorts(pod.spec?.containers);
  addPorts(pod.spec?.initContainers);
  const phase = pod.status?.phase;
  const counts = !pod.spec?.hostNetwork && phase !== 'Succeeded' && phase !== 'Failed';
  let ip: string | undefined;
  if (counts) {
    // podIPs first (dual-stack), then podIP. An address that parses as IPv4 is not IPv6.
    for (const p of pod.status?.podIPs ?? []) {
      if (isIPv4(p.ip)) {
        ip = p.ip;
        break;
      }
    }
    if (ip === undefined && isIPv4(pod.status?.podIP)) ip = pod.status!.podIP;
  }
  return { key, ns, labels: { ...(pod.metadata.labels ?? {}) }, node: pod.spec?.nodeName || undefined, ip, namedPorts: namedPorts ? trimmed(namedPorts) : NO_PORTS };
}

/** "10.244.0.5,tcp:8080" for each port the pod gives that name (sorted, unique), or undefined. */
function namedPortMembers(s: NamedPortSetState, pod: PodState): PodMembers | undefined {
  if (pod.ip === undefined) return undefined;
  const ports = portsNamed(pod.namedPorts, s.portKey);
  if (ports.length === 0) return undefined;
  if (ports.length === 1) return flat(`${pod.ip},${s.proto}:${ports[0]}`);
  const members = [...new Set(ports)].sort((a, b) => a - b).map((p) => flat(`${pod.ip},${s.proto}:${p}`));
  return members.length === 1 ? members[0] : members;
}

/** Whether some pod of the sets `on` is in the named-port set `ports` (walks the smaller side). */
function declaredBySome(ports: MemberSet, on: readonly MemberSet[]): boolean {
  let total = 0;
  for (const m of on) total += m.pods;
  if (ports.pods <= total) {
    for (const k of ports.podKeys()) if (on.some((m) => m.has(k))) return true;
    return false;
  }
  for (const m of on) for (const k of m.podKeys()) if (ports.has(k)) return true;
  return false;
}

function isIPv4(a: unknown): a is string {
  return typeof a === 'string' && a !== '' && parseIPv4(a) !== undefined;
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

function renderIPSet(ref: SetRef, shard: number, shardCount: number, members: string[]): NpmIPSet {
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
      shardCount,
      memberCount: members.length,
      members,
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
