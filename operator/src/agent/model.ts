/**
 * Desired kernel state from NpmRuleSet / NpmIPSet objects. Pure.
 *
 *  - Sets: every set a ruleset references (spec.ipsets, plus any name its chains use without a
 *    SetRef, typed by use: a problem is reported). Members: IPBlock refs carry them inline;
 *    pod-derived sets are the union of their NpmIPSet shards' members (no shard: empty set).
 *    NpmIPSet objects of sets no ruleset references are not programmed (nothing would match them).
 *  - Chains: rendered by iptables/render.ts, rulesets ordered by namespace/name.
 *  - Ownership: a DesiredState is immutable once built. The converger keeps references to its
 *    member Maps and rule arrays as its model of the kernel (plan.ts appliedState) and plans later
 *    syncs against them, comparing by identity first; so nothing may change them afterwards (the
 *    types say ReadonlyMap / readonly string[]). Build a new state for every change.
 *  - Cost (issue #10): a sync plans from the informers' caches, which keep an unchanged object as
 *    the same JS object. What follows from one object alone is memoized by identity (WeakMaps:
 *    validation, each ruleset's rendered chains); with a SetCache, what follows from the list of
 *    rulesets (order, chain owners, set drafts), the direction chains, the base chains and
 *    KNPM-LOCAL's Map are reused while their inputs are the same objects, and a set's members while
 *    its shards are (SetCache). A sync where one object changed costs O(objects) identity checks
 *    plus the work for that object; results equal the uncached computation
 *    (test/unit/agent/memo.test.ts). Objects given to buildDesired must therefore never be mutated
 *    (the informers replace them; build new ones).
 *  - Validation guards the one thing that must never happen: touching a kernel object we do not
 *    own. A ruleset naming a chain or set outside KNPM-* (or a reserved name) is skipped whole and
 *    reported. Members the kernel would reject are dropped and reported, so they cannot fail a
 *    restore half-way. Problems never stop the rest of the state from converging.
 */
import { BASE_CHAINS, renderChains } from './iptables/render.js';
import type { DesiredSet } from './ipset/plan.js';
import { compareMembers, markSorted, memberKey, normalizeMember, recordDelta } from './ipset/render.js';
import { CHAIN_EGRESS, CHAIN_INGRESS, LOCAL_PODS_SET, MAX_CHAIN_NAME, MAX_SET_NAME, OWNED_PREFIX, isOwned } from '../api/names.js';
import { API_VERSION, IPSET_KIND, RULESET_KIND, type NpmIPSet, type NpmRuleSet, type SetType } from '../api/types.js';

export interface DesiredState {
  sets: Map<string, DesiredSet>;
  /** Chain name -> rule specs (base chains first, then policy chains). */
  chains: Map<string, readonly string[]>;
  hook: boolean;
  /** Rulesets programmed. */
  policies: number;
  problems: string[];
}

const NAME = /^[A-Za-z0-9_-]+$/;
const SET_TYPES: readonly string[] = ['hash:ip', 'hash:net', 'hash:ip,port'];

function validName(name: unknown, max: number): name is string {
  return typeof name === 'string' && isOwned(name) && name.length <= max && NAME.test(name) && !BASE_CHAINS.includes(name) && !name.startsWith(`${OWNED_PREFIX}T-`);
}

function isObj(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

/** The empty desired state with only the base layout: what `cleanup` is not. */
export function emptyDesired(): DesiredState {
  return buildDesired([]);
}

/** Everything removed: no hook, no chains, no sets. */
export function cleanupDesired(): DesiredState {
  return { sets: new Map(), chains: new Map(), hook: false, policies: 0, problems: [] };
}

/** Why an NpmRuleSet object cannot be programmed (undefined: it can). */
export function rulesetProblem(rs: Record<string, unknown>): string | undefined {
  const spec = rs.spec;
  if (!isObj(spec) || !isObj(spec.policy) || !Array.isArray(spec.chains) || !Array.isArray(spec.ipsets)) return 'spec.policy, spec.chains and spec.ipsets are required';
  if (typeof spec.policy.namespace !== 'string' || typeof spec.policy.name !== 'string') return 'spec.policy needs namespace and name';
  for (const s of spec.ipsets as unknown[]) {
    if (!isObj(s) || !validName(s.name, MAX_SET_NAME)) return `set name ${JSON.stringify(isObj(s) ? s.name : s)} is not an owned kernel set name`;
    if (typeof s.type !== 'string' || !SET_TYPES.includes(s.type)) return `set ${s.name}: unknown type ${JSON.stringify(s.type)}`;
    if (s.family !== 'IPv4') return `set ${s.name}: family ${JSON.stringify(s.family)} is not programmed (IPv4 only)`;
  }
  for (const c of spec.chains as unknown[]) {
    if (!isObj(c) || !validName(c.name, MAX_CHAIN_NAME)) return `chain name ${JSON.stringify(isObj(c) ? c.name : c)} is not an owned kernel chain name`;
    if (c.direction !== 'Ingress' && c.direction !== 'Egress') return `chain ${c.name}: direction must be Ingress or Egress`;
    if (!validName(c.targetSet, MAX_SET_NAME)) return `chain ${c.name}: targetSet ${JSON.stringify(c.targetSet)} is not an owned set name`;
    if (!Array.isArray(c.rules)) return `chain ${c.name}: rules must be a list`;
    for (const r of c.rules as unknown[]) {
      if (!isObj(r) || !isObj(r.match)) return `chain ${c.name}: every rule needs a match`;
      for (const k of ['peerSet', 'namedPortSet'] as const) {
        if (r.match[k] !== undefined && !validName(r.match[k], MAX_SET_NAME)) return `chain ${c.name}: ${k} ${JSON.stringify(r.match[k])} is not an owned set name`;
      }
    }
  }
  return undefined;
}

/** Why an NpmIPSet object cannot be used (undefined: it can). Members are checked one by one later. */
export function ipSetProblem(o: Record<string, unknown>): string | undefined {
  const spec = o.spec;
  if (!isObj(spec) || !validName(spec.setName, MAX_SET_NAME) || !Array.isArray(spec.members)) return 'spec.setName must be an owned set name and spec.members a list';
  if (typeof spec.type !== 'string' || !SET_TYPES.includes(spec.type)) return `set ${spec.setName}: unknown type ${JSON.stringify(spec.type)}`;
  const { shard, shardCount } = spec;
  if (!Number.isInteger(shardCount) || (shardCount as number) < 1 || !Number.isInteger(shard) || (shard as number) < 0 || (shard as number) >= (shardCount as number)) {
    return `set ${spec.setName}: spec.shard must be an integer in 0..spec.shardCount-1`;
  }
  return undefined;
}

/** Builds the desired state from decoded objects (NpmRuleSet and NpmIPSet; anything else is a problem). */
/**
 * Member maps of sets from a previous build, reused when a set's inputs (type, inline members and
 * shard objects, compared by identity) are unchanged: the agent daemon's informer keeps unchanged
 * objects as the same JS objects, so a pod event rebuilds one set's map, and the planner skips every
 * other set by map identity instead of walking its members (O(changed), not O(cluster)).
 */
export type SetCache = Map<string, { inputs: readonly unknown[]; members: Map<string, string> }>;

/**
 * The members of a pod-derived set from its cached Map and only the shards that changed (by object
 * identity): O(changed shards) instead of re-normalising and re-sorting every member. Relies on the
 * sharding invariant of ADR 0001: with an unchanged shard count a member's shard is fixed by its
 * address, so a member is in exactly one shard. Returns undefined (full rebuild) whenever that
 * cannot be assumed (shard count or layout changed) or a changed member does not normalise.
 */
function deriveMembers(
  type: SetType,
  cached: { inputs: readonly unknown[]; members: Map<string, string> },
  inputs: readonly unknown[],
  now: readonly NpmIPSet[],
): Map<string, string> | undefined {
  if (cached.inputs[0] !== type || cached.inputs.length !== inputs.length || !now.length) return undefined;
  const before = new Map<number, NpmIPSet>();
  for (const o of cached.inputs.slice(1) as NpmIPSet[]) before.set(o.spec.shard, o);
  const count = now[0]!.spec.shardCount;
  const adds: string[] = [];
  const dels: string[] = [];
  for (const sh of now) {
    const old = before.get(sh.spec.shard);
    if (!old || old.spec.shardCount !== count || sh.spec.shardCount !== count || sh.spec.type !== type || old.spec.type !== type) return undefined;
    if (old === sh) continue;
    const was = new Set(old.spec.members);
    const is = new Set(sh.spec.members);
    for (const m of sh.spec.members) {
      if (was.has(m)) continue;
      const r = typeof m === 'string' ? normalizeMember(type, m) : { error: 'not a string' };
      if ('error' in r) return undefined;
      adds.push(r.member);
    }
    for (const m of old.spec.members) {
      if (is.has(m)) continue;
      const r = typeof m === 'string' ? normalizeMember(type, m) : { error: 'not a string' };
      if ('error' in r) return undefined;
      dels.push(memberKey(type, r.member));
    }
  }
  // A key both removed and added (it cannot happen with the sharding invariant) stays: never delete
  // what the desired state holds.
  const added = new Set(adds.map((m) => memberKey(type, m)));
  const removed = dels.filter((k) => !added.has(k));
  dels.length = 0;
  dels.push(...removed);
  const members = new Map(cached.members);
  for (const k of dels) members.delete(k);
  for (const m of adds) members.set(memberKey(type, m), m);
  recordDelta(members, { base: cached.members, adds, dels });
  return members;
}

export interface BuildOptions {
  /** Reuse member maps across builds (see SetCache); entries of vanished sets are dropped. */
  cache?: SetCache;
  /**
   * This node's own pod IPs (agent daemon). Given, the direction chains are entered only for local
   * pods (set LOCAL_PODS_SET); absent (agent --once), every packet is judged.
   */
  localPods?: Iterable<string>;
  /**
   * pod-startup=strict (agent daemon, with localPods; docs/adr/0009-pod-startup.md): this node's
   * pod CIDRs, IPv4, canonical (podstartup.ts normalizePodCidrs). An address in them that is not a
   * local pod can neither send nor receive.
   */
  podCidrs?: readonly string[];
}

/** Memoized per object (see the header): validation of one object depends on that object only. */
const RULESET_PROBLEMS = new WeakMap<object, string | null>();
const IPSET_PROBLEMS = new WeakMap<object, string | null>();

function memoProblem(memo: WeakMap<object, string | null>, o: Record<string, unknown>, check: (o: Record<string, unknown>) => string | undefined): string | undefined {
  let p = memo.get(o);
  if (p === undefined) memo.set(o, (p = check(o) ?? null));
  return p ?? undefined;
}

/** What one ruleset contributes to the chains: its policy chains, its direction-chain pairs, render problems. */
interface RenderedRuleset {
  chains: [string, string[]][];
  jumps: Record<'Egress' | 'Ingress', readonly string[]>;
  problems: readonly string[];
}

const RENDERED = new WeakMap<NpmRuleSet, RenderedRuleset>();

/**
 * One ruleset rendered by iptables/render.ts alone, memoized by object: renderChains of a single
 * ruleset holds its policy chains and, in the direction chains, its pairs before the DROP tail.
 * Concatenating these per ruleset, in ruleset order, is exactly renderChains of all of them (the
 * pairs of a ruleset do not depend on the others, nor on the local set or the pod CIDRs).
 */
function renderRuleset(rs: NpmRuleSet): RenderedRuleset {
  let r = RENDERED.get(rs);
  if (r) return r;
  const one = renderChains([rs]);
  const chains: [string, string[]][] = [];
  for (const [name, rules] of one.chains) if (!BASE_CHAINS.includes(name)) chains.push([name, rules]);
  const tailless = (c: string): readonly string[] => (one.chains.get(c) ?? []).slice(0, -1);
  r = { chains, jumps: { Egress: tailless(CHAIN_EGRESS), Ingress: tailless(CHAIN_INGRESS) }, problems: one.problems };
  RENDERED.set(rs, r);
  return r;
}

/**
 * What the previous build with the same SetCache produced, reused when its inputs are the same
 * objects: the direction chains (kept as the same arrays, so the planner skips them by identity),
 * the base chains, and the local pods' member Map.
 */
interface BuildMemo {
  layout: Layout;
  rendered: readonly RenderedRuleset[];
  baseKey: string;
  base: Map<string, string[]>;
  egress: readonly string[];
  ingress: readonly string[];
  localIn?: ReadonlySet<string>;
  local?: { members: Map<string, string>; problems: string[] };
}

const BUILD_MEMO = new WeakMap<SetCache, BuildMemo>();

function sameRefs<T>(a: readonly T[], b: readonly T[]): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}

/** Whether a cached set's inputs are the same objects as [type, ...inline, ...shards]. */
function sameInputs(cached: readonly unknown[], type: SetType, inline: readonly string[] | undefined, shards: readonly NpmIPSet[] | undefined): boolean {
  const n = inline?.length ?? 0;
  if (cached.length !== 1 + n + (shards?.length ?? 0) || cached[0] !== type) return false;
  for (let i = 0; i < n; i++) if (cached[1 + i] !== inline![i]) return false;
  for (let i = 0; i < (shards?.length ?? 0); i++) if (cached[1 + n + i] !== shards![i]) return false;
  return true;
}

/** A set being built: the ref or use that declared it, and its sources. */
interface SetDraft {
  name: string;
  type: SetType;
  meaning: string;
  inline?: string[];
}

/** The valid rulesets (in input order) and what follows from them alone: reused while they are the same objects. */
interface Layout {
  input: readonly NpmRuleSet[];
  /** Programmed, by namespace/name; a ruleset whose chain name another one took first is not. */
  accepted: readonly NpmRuleSet[];
  /** Every set they reference or use, in order: refs first, then names chains use without a ref. */
  drafts: ReadonlyMap<string, SetDraft>;
  problems: readonly string[];
}

const POLICY_KEYS = new WeakMap<NpmRuleSet, string>();

/** "namespace/name" of the ruleset's policy, memoized per object. */
function policyKey(rs: NpmRuleSet): string {
  let k = POLICY_KEYS.get(rs);
  if (k === undefined) POLICY_KEYS.set(rs, (k = `${rs.spec.policy.namespace}/${rs.spec.policy.name}`));
  return k;
}

function rulesetLayout(input: readonly NpmRuleSet[]): Layout {
  const problems: string[] = [];
  // Stable sort (equal keys keep their input order).
  const sorted = input.map((rs) => ({ rs, key: policyKey(rs) })).sort((a, b) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0));

  // Chain names must be unique across rulesets: keep the first (by namespace/name).
  const chainOwner = new Map<string, string>();
  const accepted: { rs: NpmRuleSet; key: string }[] = [];
  for (const r of sorted) {
    const clash = r.rs.spec.chains.find((c) => chainOwner.has(c.name) && chainOwner.get(c.name) !== r.key);
    if (clash) {
      problems.push(`NpmRuleSet ${r.key}: chain ${clash.name} is also written by ${chainOwner.get(clash.name)}; ruleset skipped`);
      continue;
    }
    for (const c of r.rs.spec.chains) chainOwner.set(c.name, r.key);
    accepted.push(r);
  }

  // Sets: refs first, then names used by chains without a ref.
  const drafts = new Map<string, SetDraft>();
  for (const { rs, key } of accepted) {
    for (const ref of rs.spec.ipsets) {
      const have = drafts.get(ref.name);
      if (have && have.type !== ref.type) {
        problems.push(`NpmRuleSet ${key}: set ${ref.name} is ${ref.type} here but ${have.type} elsewhere; keeping ${have.type}`);
        continue;
      }
      if (!have) drafts.set(ref.name, ref.kind === 'IPBlock' ? { name: ref.name, type: ref.type, meaning: ref.meaning, inline: ref.members ?? [] } : { name: ref.name, type: ref.type, meaning: ref.meaning });
    }
  }
  const use = (name: string, type: SetType, rs: string, chain: string): void => {
    if (drafts.has(name)) return;
    problems.push(`NpmRuleSet ${rs} chain ${chain}: set ${name} has no entry in spec.ipsets; created empty as ${type}`);
    drafts.set(name, { name, type, meaning: name });
  };
  for (const { rs, key } of accepted) {
    for (const c of rs.spec.chains) {
      use(c.targetSet, 'hash:ip', key, c.name);
      for (const r of c.rules) {
        if (r.match.peerSet) use(r.match.peerSet, 'hash:ip', key, c.name);
        if (r.match.namedPortSet) use(r.match.namedPortSet, 'hash:ip,port', key, c.name);
      }
    }
  }
  return { input, accepted: accepted.map((a) => a.rs), drafts, problems };
}

export function buildDesired(objects: readonly unknown[], opts: BuildOptions = {}): DesiredState {
  const problems: string[] = [];
  const rulesets: NpmRuleSet[] = [];
  const shards = new Map<string, NpmIPSet[]>();
  const idOf = (o: Record<string, unknown>): string => {
    const meta = isObj(o.metadata) ? o.metadata : {};
    return `${String(o.kind)} ${meta.namespace ? `${String(meta.namespace)}/` : ''}${String(meta.name)}`;
  };
  for (const o of objects) {
    if (!isObj(o) || o.apiVersion !== API_VERSION || (o.kind !== RULESET_KIND && o.kind !== IPSET_KIND)) {
      problems.push(`ignored an object that is not ${API_VERSION} ${RULESET_KIND}/${IPSET_KIND}: ${JSON.stringify(isObj(o) ? { apiVersion: o.apiVersion, kind: o.kind } : o)}`);
      continue;
    }
    if (o.kind === RULESET_KIND) {
      const p = memoProblem(RULESET_PROBLEMS, o, rulesetProblem);
      if (p) problems.push(`${idOf(o)}: ${p}; ruleset skipped`);
      else rulesets.push(o as unknown as NpmRuleSet);
    } else {
      const p = memoProblem(IPSET_PROBLEMS, o, ipSetProblem);
      if (p) {
        problems.push(`${idOf(o)}: ${p}; skipped`);
        continue;
      }
      const set = (o as unknown as NpmIPSet).spec.setName;
      const list = shards.get(set);
      if (list) list.push(o as unknown as NpmIPSet);
      else shards.set(set, [o as unknown as NpmIPSet]);
    }
  }
  const memo = opts.cache ? BUILD_MEMO.get(opts.cache) : undefined;
  const layout = memo && sameRefs(memo.layout.input, rulesets) ? memo.layout : rulesetLayout(rulesets);
  problems.push(...layout.problems);
  const { accepted, drafts } = layout;
  const sets = new Map<string, DesiredSet>();
  for (const s of drafts.values()) {
    const own = shards.get(s.name);
    const cached = opts.cache?.get(s.name);
    const done = (members: Map<string, string>): void => void sets.set(s.name, { name: s.name, type: s.type, meaning: s.meaning, members });
    if (cached && sameInputs(cached.inputs, s.type, s.inline, own)) {
      done(cached.members);
      continue;
    }
    const inputs: unknown[] = [s.type, ...(s.inline ?? []), ...(own ?? [])];
    const derived = cached && !s.inline?.length ? deriveMembers(s.type, cached, inputs, own ?? []) : undefined;
    if (derived) {
      opts.cache?.set(s.name, { inputs, members: derived });
      done(derived);
      continue;
    }
    const raw: { from: string; member: unknown }[] = [];
    if (s.inline) for (const m of s.inline) raw.push({ from: `set ${s.name} (inline)`, member: m });
    for (const sh of own ?? []) {
      if (sh.spec.type !== s.type) {
        problems.push(`NpmIPSet ${sh.metadata.name}: type ${sh.spec.type} differs from the ruleset's ${s.type}; shard skipped`);
        continue;
      }
      for (const m of sh.spec.members) raw.push({ from: `NpmIPSet ${sh.metadata.name}`, member: m });
    }
    const norm: string[] = [];
    for (const { from, member } of raw) {
      const r = typeof member === 'string' ? normalizeMember(s.type, member) : { error: `${JSON.stringify(member)} is not a string` };
      if ('error' in r) problems.push(`${from}: member ${r.error}; dropped`);
      else norm.push(r.member);
    }
    norm.sort(compareMembers);
    const members = new Map<string, string>();
    for (const m of norm) {
      const k = memberKey(s.type, m);
      const prev = members.get(k);
      // Two entries for one CIDR, one of them "nomatch": the exception wins (fail closed).
      if (prev === undefined || m.endsWith(' nomatch')) members.set(k, m);
    }
    markSorted(members);
    opts.cache?.set(s.name, { inputs, members });
    done(members);
  }
  if (opts.cache && opts.cache.size > sets.size) for (const name of [...opts.cache.keys()]) if (!sets.has(name)) opts.cache.delete(name);
  let local: BuildMemo['local'];
  let localIn: ReadonlySet<string> | undefined;
  if (opts.localPods) {
    localIn = new Set(opts.localPods);
    // The same addresses as the previous build: its Map (the planner skips it by identity).
    if (memo?.local && memo.localIn?.size === localIn.size && [...localIn].every((ip) => memo.localIn!.has(ip))) {
      local = memo.local;
      localIn = memo.localIn;
    } else {
      local = { members: new Map<string, string>(), problems: [] };
      for (const ip of [...localIn].sort(compareMembers)) {
        const r = normalizeMember('hash:ip', ip);
        if ('error' in r) local.problems.push(`local pod address ${r.error}; dropped`);
        else local.members.set(memberKey('hash:ip', r.member), r.member);
      }
      markSorted(local.members);
    }
    problems.push(...local.problems);
    sets.set(LOCAL_PODS_SET, { name: LOCAL_PODS_SET, type: 'hash:ip', meaning: "this node's own pods", members: local.members });
  }
  const chains = assembleChains(accepted, opts, memo, problems);
  if (opts.cache) BUILD_MEMO.set(opts.cache, { ...chains.memo, layout, ...(local ? { local, localIn } : {}) });
  return { sets, chains: chains.chains, hook: true, policies: accepted.length, problems };
}

/**
 * renderChains(rulesets, local set, pod CIDRs) from the per-ruleset renderings: the base chains of
 * the local set and pod CIDRs, the direction chains as every ruleset's pairs in order then the DROP
 * tail, then the policy chains. Reuses the previous build's arrays when made of the same parts.
 */
function assembleChains(accepted: readonly NpmRuleSet[], opts: BuildOptions, memo: BuildMemo | undefined, problems: string[]): { chains: Map<string, readonly string[]>; memo: Omit<BuildMemo, 'local' | 'localIn' | 'layout'> } {
  const localSet = opts.localPods ? LOCAL_PODS_SET : undefined;
  const podCidrs = opts.localPods ? (opts.podCidrs ?? []) : [];
  const rendered = accepted.map(renderRuleset);
  for (const r of rendered) problems.push(...r.problems);
  const baseKey = `${localSet ?? ''} ${podCidrs.join(',')}`;
  const base = memo && memo.baseKey === baseKey ? memo.base : renderChains([], localSet, podCidrs).chains;
  let egress: readonly string[];
  let ingress: readonly string[];
  if (memo && memo.base === base && sameRefs(memo.rendered, rendered)) {
    egress = memo.egress;
    ingress = memo.ingress;
  } else {
    const tail = (c: string): string => {
      const rules = base.get(c) ?? [];
      return rules[rules.length - 1] as string;
    };
    const e: string[] = [];
    const i: string[] = [];
    for (const r of rendered) {
      for (const j of r.jumps.Egress) e.push(j);
      for (const j of r.jumps.Ingress) i.push(j);
    }
    e.push(tail(CHAIN_EGRESS));
    i.push(tail(CHAIN_INGRESS));
    egress = e;
    ingress = i;
  }
  const chains = new Map<string, readonly string[]>();
  for (const [name, rules] of base) chains.set(name, name === CHAIN_EGRESS ? egress : name === CHAIN_INGRESS ? ingress : rules);
  for (const r of rendered) for (const [name, rules] of r.chains) chains.set(name, rules);
  return { chains, memo: { rendered, baseKey, base, egress, ingress } };
}
