/**
 * ipset members and headers as the kernel prints them back, so that desired and actual compare as
 * strings. Pure.
 *
 * `ipset list -o save` normalises: hash:net drops "/32" and clears host bits ("10.0.5.7/24" ->
 * "10.0.5.0/24"); hash:ip,port spells the protocol out ("10.0.0.1,80" -> "10.0.0.1,tcp:80").
 * normalizeMember() applies the same rules, so a kernel that holds exactly the desired members
 * reads back equal, and a member the kernel would reject is caught here, with a reason, before it
 * can fail a restore half-way.
 */
import type { SetType } from '../../api/types.js';
import { formatIPv4, parseIPv4 } from '../../translate/cidr.js';

/** The smallest maxelem we create, and the headroom factor over the member count. */
export const MIN_MAXELEM = 65536;
export const MIN_HASHSIZE = 1024;
export const MAX_HASHSIZE = 1 << 20;

function nextPow2(n: number): number {
  let p = 1;
  while (p < n) p *= 2;
  return p;
}

/** maxelem for a set of `members`: at least 65536, else twice the count rounded up to a power of two. */
export function requiredMaxelem(members: number): number {
  return Math.max(MIN_MAXELEM, nextPow2(members * 2));
}

/** Initial hashsize (the kernel grows it later): presizing avoids rehashing while a big set fills. */
export function initialHashsize(members: number): number {
  return Math.min(MAX_HASHSIZE, Math.max(MIN_HASHSIZE, nextPow2(members)));
}

export function createLine(name: string, type: SetType, members: number, maxelem = requiredMaxelem(members)): string {
  return `create ${name} ${type} family inet hashsize ${initialHashsize(members)} maxelem ${maxelem}`;
}

const PROTOS = new Set(['tcp', 'udp', 'sctp']);

/** The member in kernel print form, or an error message. */
export function normalizeMember(type: SetType, raw: string): { member: string } | { error: string } {
  const text = raw.trim().replace(/\s+/g, ' ');
  if (type === 'hash:ip') {
    const n = parseIPv4(text);
    return n === undefined ? { error: `"${raw}" is not an IPv4 address` } : { member: formatIPv4(n) };
  }
  if (type === 'hash:net') {
    const m = /^([0-9.]+)(?:\/(\d{1,2}))?( nomatch)?$/.exec(text);
    const addr = m?.[1] !== undefined ? parseIPv4(m[1]) : undefined;
    const prefix = m?.[2] !== undefined ? Number(m[2]) : 32;
    // hash:net refuses /0 (the translator splits 0.0.0.0/0 into two /1 halves).
    if (!m || addr === undefined || prefix < 1 || prefix > 32) return { error: `"${raw}" is not an IPv4 CIDR (prefix 1..32) with optional " nomatch"` };
    const mask = (0xffffffff << (32 - prefix)) >>> 0;
    const base = formatIPv4((addr & mask) >>> 0);
    return { member: `${prefix === 32 ? base : `${base}/${prefix}`}${m[3] ?? ''}` };
  }
  const m = /^([0-9.]+),(?:([a-zA-Z]+):)?(\d{1,5})$/.exec(text);
  const addr = m?.[1] !== undefined ? parseIPv4(m[1]) : undefined;
  const proto = (m?.[2] ?? 'tcp').toLowerCase();
  const port = Number(m?.[3]);
  if (!m || addr === undefined || !PROTOS.has(proto) || port > 65535) return { error: `"${raw}" is not IPv4,proto:port (tcp, udp or sctp)` };
  return { member: `${formatIPv4(addr)},${proto}:${port}` };
}

/**
 * The element identity the kernel keys on. For hash:net the " nomatch" flag is data, not identity:
 * `add -exist` of "X nomatch" over "X" flips the flag in place, and `del X` would remove both forms,
 * so a flag change must be written as one add, never as a del plus an add.
 */
export function memberKey(type: SetType, member: string): string {
  return type === 'hash:net' && member.endsWith(' nomatch') ? member.slice(0, -' nomatch'.length) : member;
}

/** Sort key of a normalised member: the address numerically, then the rest ("10.0.0.9" before "10.0.0.10"). */
function sortKey(m: string): string {
  const end = m.search(/[,/ ]/);
  const addr = end < 0 ? m : m.slice(0, end);
  const n = parseIPv4(addr);
  return n === undefined ? `z${m}` : `${n.toString(16).padStart(8, '0')}${m.slice(addr.length)}`;
}

export function compareMembers(a: string, b: string): number {
  const ka = sortKey(a);
  const kb = sortKey(b);
  return ka < kb ? -1 : ka > kb ? 1 : 0;
}

const SORTED = new WeakSet<ReadonlyMap<string, string>>();

/**
 * Records that `members` is keyed in compareMembers order of its keys (buildDesired's Maps are), so
 * a planner may diff two such Maps by a merge walk. A Map read from the kernel never is.
 */
export function markSorted(members: ReadonlyMap<string, string>): void {
  SORTED.add(members);
}

export function isSorted(members: ReadonlyMap<string, string>): boolean {
  return SORTED.has(members);
}

/** How a member Map differs from the Map it was derived from (see recordDelta). */
export interface MemberDelta {
  base: ReadonlyMap<string, string>;
  /** Member strings added or changed. */
  adds: readonly string[];
  /** Keys removed. */
  dels: readonly string[];
}

const DELTAS = new WeakMap<ReadonlyMap<string, string>, MemberDelta>();

/**
 * Records that `members` equals `delta.base` plus `adds` minus `dels`: when the kernel holds exactly
 * `base` (the planner sees the same Map object as applied), the planner writes the delta without
 * walking either Map, so a pod event costs O(changed members), not O(set size).
 */
export function recordDelta(members: ReadonlyMap<string, string>, delta: MemberDelta): void {
  // One step is all a planner uses (delta.base === applied). The base's own delta goes, or every Map
  // ever derived stays reachable through base -> base.base -> ...: one copy of the set per pod event,
  // until the agent is OOM-killed (issue #9 item 7; test/unit/agent/memory.test.ts).
  DELTAS.delete(delta.base);
  DELTAS.set(members, delta);
}

export function deltaOf(members: ReadonlyMap<string, string>): MemberDelta | undefined {
  return DELTAS.get(members);
}
