/**
 * The membership signal (docs/adr/0007-membership-signal.md): when is a pod's set membership, as of
 * its last relevant change, enforced on every node that needs it? Pure: caches in, a condition out.
 *
 * A pod's membership lives in the NpmIPSet shards that hold its IP (pod-selector sets: "10.244.1.10";
 * named-port sets: "10.244.1.10,tcp:8080"). For a pod with IP `ip`, the relevant shards are those the
 * engine wants to hold `ip` and those the API server still holds with `ip` (the sets it is leaving).
 * The shards it held when the change was seen (`former`) count too: once written they no longer hold
 * it. The membership is enforced when
 *  (a) written: every relevant shard exists on the API server and holds `ip` exactly when the engine
 *      wants it to;
 *  (b) applied: every node that programs a relevant shard's set reports in its NpmNode
 *      `status.observed.ipsets` >= that shard's resourceVersion. An agent reports the position of
 *      its NpmIPSet watch when it computed the state its kernel now holds (set only by a successful
 *      sync), and a watch delivers events in resourceVersion order, so it has applied that version
 *      of the shard or a later one. A node programs a set if it reports a ruleset that uses it as
 *      applied, or if the engine says the ruleset's policy selects a pod on it (nodes about to
 *      program it);
 *  (c) known locally: the pod's own node reports `status.observed.pods` >= the pod's resourceVersion
 *      at its last change of address, phase or node (its agent has seen the pod with its IP; a
 *      label-only change needs nothing from that node beyond (b)).
 * resourceVersions are compared as integers: etcd revisions, comparable within a resource since
 * Kubernetes 1.35 (KEP-5504); a value that is not an integer never satisfies a check (fail closed).
 */
import { POD_CONDITION, type NpmIPSet, type NpmNode, type NpmRuleSet } from '../api/types.js';

/** Pod condition type (a readiness gate of this type opts a pod in). */
export { POD_CONDITION };

export const MEMBERSHIP_REASON = { Programmed: 'Programmed', Pending: 'Pending' } as const;

export interface MembershipCondition {
  type: typeof POD_CONDITION;
  status: 'True' | 'False';
  reason: string;
  message: string;
}

export interface PodMembership {
  ip: string | undefined;
  node: string | undefined;
  /**
   * The pod's resourceVersion at its last change of what its own node holds of it (address, phase,
   * node); label-only changes keep it.
   */
  podRV: string;
  /** resourceVersion of the change the condition covers (the pod's, or its namespace's relabel). */
  since: string;
  /**
   * Shards that held the pod's IP when the change was seen (before the operator wrote it): the
   * sets it may be leaving. Once written they no longer hold the IP, so they cannot be found from
   * the caches afterwards, and their nodes must still be waited for.
   */
  former?: readonly string[];
  /** No IPv4 address yet, and one will come (not hostNetwork, not finished): nothing is enforced for it yet. */
  awaitingIP?: boolean;
}

/** Written shards (name) that some node has not acknowledged: the shard's resourceVersion and those nodes. */
export type Lagging = Map<string, { rv: string; nodes: Set<string> }>;

/** IP -> shards holding it (pod-derived shards only). */
export type ShardIndex = Map<string, NpmIPSet[]>;

export function indexShards(shards: Iterable<NpmIPSet>): ShardIndex {
  const idx: ShardIndex = new Map();
  for (const s of shards) {
    for (const m of s.spec.members) {
      const ip = m.split(',')[0]!;
      const list = idx.get(ip);
      if (list) {
        if (list[list.length - 1] !== s) list.push(s);
      } else idx.set(ip, [s]);
    }
  }
  return idx;
}

/** Set name -> nodes that program it (see (b) in the header). */
export function setProgrammers(
  rulesets: readonly NpmRuleSet[],
  nodes: ReadonlyMap<string, NpmNode>,
  concernedNodes: (namespace: string, name: string) => readonly string[],
): Map<string, Set<string>> {
  const byRuleSet = new Map<string, Set<string>>();
  const add = (k: string, n: string) => {
    const s = byRuleSet.get(k) ?? new Set<string>();
    s.add(n);
    byRuleSet.set(k, s);
  };
  for (const [name, n] of nodes) for (const a of n.status?.applied ?? []) add(`${a.namespace}/${a.name}`, name);
  const out = new Map<string, Set<string>>();
  for (const rs of rulesets) {
    const ns = rs.metadata.namespace ?? '';
    const who = new Set([...(byRuleSet.get(`${ns}/${rs.metadata.name}`) ?? []), ...concernedNodes(ns, rs.metadata.name)]);
    for (const ref of rs.spec.ipsets) {
      if (ref.kind === 'IPBlock') continue;
      const s = out.get(ref.name) ?? new Set<string>();
      for (const n of who) s.add(n);
      out.set(ref.name, s);
    }
  }
  return out;
}

/** a >= b for resourceVersions; anything that is not a non-negative integer fails. */
export function rvAtLeast(a: string | undefined, b: string | undefined): boolean {
  if (!a || !b || !/^\d+$/.test(a) || !/^\d+$/.test(b)) return false;
  return BigInt(a) >= BigInt(b);
}

export function membershipCondition(
  pod: PodMembership,
  desired: ShardIndex,
  actual: ShardIndex,
  actualShard: (name: string) => NpmIPSet | undefined,
  programmers: ReadonlyMap<string, ReadonlySet<string>>,
  nodes: ReadonlyMap<string, NpmNode>,
  /** Filled with the written shards (name -> resourceVersion) that some node has not acknowledged yet. */
  lagging?: Lagging,
): MembershipCondition {
  const pending = (why: string): MembershipCondition => ({
    type: POD_CONDITION,
    status: 'False',
    reason: MEMBERSHIP_REASON.Pending,
    message: `membership as of resourceVersion ${pod.since} not yet enforced: ${why}`,
  });
  if (!pod.ip && pod.awaitingIP) return pending('the pod has no IPv4 address yet');
  const needed = new Set<string>();
  const waits: string[] = [];
  if (pod.ip) {
    const wanted = new Set((desired.get(pod.ip) ?? []).map((s) => s.metadata.name));
    const held = new Set((actual.get(pod.ip) ?? []).map((s) => s.metadata.name));
    for (const name of new Set([...wanted, ...held, ...(pod.former ?? [])])) {
      // (a) written: the shard holds the IP exactly when it should.
      if (wanted.has(name) !== held.has(name)) return pending(`NpmIPSet ${name} not written yet`);
      const shard = actualShard(name);
      if (!shard) {
        if (wanted.has(name)) return pending(`NpmIPSet ${name} not written yet`);
        continue; // a former shard deleted: its set left every ruleset before (make-before-break)
      }
      // (b) applied by every node programming its set.
      for (const n of programmers.get(shard.spec.setName) ?? []) {
        needed.add(n);
        if (!rvAtLeast(nodes.get(n)?.status?.observed?.ipsets, shard.metadata.resourceVersion)) {
          waits.push(n);
          if (lagging) {
            const l = lagging.get(name) ?? { rv: shard.metadata.resourceVersion ?? '', nodes: new Set<string>() };
            l.nodes.add(n);
            lagging.set(name, l);
          }
        }
      }
    }
  }
  // (c) the pod's own node knows it.
  if (pod.ip && pod.node) {
    needed.add(pod.node);
    if (!rvAtLeast(nodes.get(pod.node)?.status?.observed?.pods, pod.podRV)) waits.push(pod.node);
  }
  if (waits.length) return pending(`waiting for ${[...new Set(waits)].sort().join(', ')}`);
  const list = [...needed].sort();
  return {
    type: POD_CONDITION,
    status: 'True',
    reason: MEMBERSHIP_REASON.Programmed,
    message: pod.ip
      ? `membership as of resourceVersion ${pod.since} enforced on ${list.length ? list.join(', ') : 'no node (no policy concerns it)'}`
      : `membership as of resourceVersion ${pod.since}: no IPv4 address, member of no set`,
  };
}
