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
 *  - Validation guards the one thing that must never happen: touching a kernel object we do not
 *    own. A ruleset naming a chain or set outside KNPM-* (or a reserved name) is skipped whole and
 *    reported. Members the kernel would reject are dropped and reported, so they cannot fail a
 *    restore half-way. Problems never stop the rest of the state from converging.
 */
import { BASE_CHAINS, renderChains } from './iptables/render.js';
import type { DesiredSet } from './ipset/plan.js';
import { compareMembers, markSorted, memberKey, normalizeMember, recordDelta } from './ipset/render.js';
import { LOCAL_PODS_SET, MAX_CHAIN_NAME, MAX_SET_NAME, OWNED_PREFIX, isOwned } from '../api/names.js';
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

export function buildDesired(objects: readonly unknown[], opts: BuildOptions = {}): DesiredState {
  const problems: string[] = [];
  const rulesets: NpmRuleSet[] = [];
  const shards = new Map<string, NpmIPSet[]>();
  for (const o of objects) {
    if (!isObj(o) || o.apiVersion !== API_VERSION || (o.kind !== RULESET_KIND && o.kind !== IPSET_KIND)) {
      problems.push(`ignored an object that is not ${API_VERSION} ${RULESET_KIND}/${IPSET_KIND}: ${JSON.stringify(isObj(o) ? { apiVersion: o.apiVersion, kind: o.kind } : o)}`);
      continue;
    }
    const meta = isObj(o.metadata) ? o.metadata : {};
    const id = `${String(o.kind)} ${meta.namespace ? `${String(meta.namespace)}/` : ''}${String(meta.name)}`;
    if (o.kind === RULESET_KIND) {
      const p = rulesetProblem(o);
      if (p) problems.push(`${id}: ${p}; ruleset skipped`);
      else rulesets.push(o as unknown as NpmRuleSet);
    } else {
      const p = ipSetProblem(o);
      if (p) {
        problems.push(`${id}: ${p}; skipped`);
        continue;
      }
      const set = (o as unknown as NpmIPSet).spec.setName;
      const list = shards.get(set) ?? [];
      list.push(o as unknown as NpmIPSet);
      shards.set(set, list);
    }
  }
  const key = (rs: NpmRuleSet): string => `${rs.spec.policy.namespace}/${rs.spec.policy.name}`;
  rulesets.sort((a, b) => (key(a) < key(b) ? -1 : key(a) > key(b) ? 1 : 0));

  // Chain names must be unique across rulesets: keep the first (by namespace/name).
  const chainOwner = new Map<string, string>();
  const accepted: NpmRuleSet[] = [];
  for (const rs of rulesets) {
    const clash = rs.spec.chains.find((c) => chainOwner.has(c.name) && chainOwner.get(c.name) !== key(rs));
    if (clash) {
      problems.push(`NpmRuleSet ${key(rs)}: chain ${clash.name} is also written by ${chainOwner.get(clash.name)}; ruleset skipped`);
      continue;
    }
    for (const c of rs.spec.chains) chainOwner.set(c.name, key(rs));
    accepted.push(rs);
  }

  // Sets: refs first, then names used by chains without a ref.
  const sets = new Map<string, DesiredSet & { members: Map<string, string>; inline?: string[]; kind?: string }>();
  for (const rs of accepted) {
    for (const ref of rs.spec.ipsets) {
      const have = sets.get(ref.name);
      if (have && have.type !== ref.type) {
        problems.push(`NpmRuleSet ${key(rs)}: set ${ref.name} is ${ref.type} here but ${have.type} elsewhere; keeping ${have.type}`);
        continue;
      }
      if (!have) sets.set(ref.name, { name: ref.name, type: ref.type, meaning: ref.meaning, members: new Map(), inline: ref.kind === 'IPBlock' ? (ref.members ?? []) : undefined, kind: ref.kind });
    }
  }
  const use = (name: string, type: SetType, where: string): void => {
    if (sets.has(name)) return;
    problems.push(`${where}: set ${name} has no entry in spec.ipsets; created empty as ${type}`);
    sets.set(name, { name, type, meaning: name, members: new Map() });
  };
  for (const rs of accepted) {
    for (const c of rs.spec.chains) {
      use(c.targetSet, 'hash:ip', `NpmRuleSet ${key(rs)} chain ${c.name}`);
      for (const r of c.rules) {
        if (r.match.peerSet) use(r.match.peerSet, 'hash:ip', `NpmRuleSet ${key(rs)} chain ${c.name}`);
        if (r.match.namedPortSet) use(r.match.namedPortSet, 'hash:ip,port', `NpmRuleSet ${key(rs)} chain ${c.name}`);
      }
    }
  }
  for (const s of sets.values()) {
    const inputs: unknown[] = [s.type, ...(s.inline ?? []), ...(shards.get(s.name) ?? [])];
    const cached = opts.cache?.get(s.name);
    if (cached && cached.inputs.length === inputs.length && cached.inputs.every((x, i) => x === inputs[i])) {
      s.members = cached.members;
      delete s.inline;
      delete s.kind;
      continue;
    }
    const derived = cached && !s.inline?.length ? deriveMembers(s.type, cached, inputs, shards.get(s.name) ?? []) : undefined;
    if (derived) {
      s.members = derived;
      opts.cache?.set(s.name, { inputs, members: derived });
      delete s.inline;
      delete s.kind;
      continue;
    }
    const raw: { from: string; member: unknown }[] = [];
    if (s.inline) for (const m of s.inline) raw.push({ from: `set ${s.name} (inline)`, member: m });
    for (const sh of shards.get(s.name) ?? []) {
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
    for (const m of norm) {
      const k = memberKey(s.type, m);
      const prev = s.members.get(k);
      // Two entries for one CIDR, one of them "nomatch": the exception wins (fail closed).
      if (prev === undefined || m.endsWith(' nomatch')) s.members.set(k, m);
    }
    markSorted(s.members);
    opts.cache?.set(s.name, { inputs, members: s.members });
    delete s.inline;
    delete s.kind;
  }
  if (opts.cache) for (const name of [...opts.cache.keys()]) if (!sets.has(name)) opts.cache.delete(name);
  if (opts.localPods) {
    const members = new Map<string, string>();
    for (const ip of [...opts.localPods].sort(compareMembers)) {
      const r = normalizeMember('hash:ip', ip);
      if ('error' in r) problems.push(`local pod address ${r.error}; dropped`);
      else members.set(memberKey('hash:ip', r.member), r.member);
    }
    markSorted(members);
    sets.set(LOCAL_PODS_SET, { name: LOCAL_PODS_SET, type: 'hash:ip', meaning: "this node's own pods", members });
  }
  const rendered = renderChains(accepted, opts.localPods ? LOCAL_PODS_SET : undefined, opts.localPods ? opts.podCidrs : undefined);
  problems.push(...rendered.problems);
  return { sets, chains: rendered.chains, hook: true, policies: accepted.length, problems };
}
