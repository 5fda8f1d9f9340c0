/**
 * Level-based reconcile of kube-npm's own objects: for one key, compare what the translation engine
 * wants with what the API server has (the informer cache), and send the minimal write.
 *
 * Keys: "NpmRuleSet/<ns>/<name>", "NpmIPSet//<name>", "Status/<ns>/<name>", "NodeReady//<node>".
 *
 * Writes are JSON patches computed with fast-json-patch over the fields we own (labels,
 * ownerReferences, spec), guarded by a `test` of metadata.resourceVersion: minimal bytes on the wire
 * (a one-member change is one op) and optimistic concurrency without a read (a stale cache gives 422
 * on the test, the key is retried after the informer catches up). Server-side apply would resend
 * whole objects (up to ~20 KiB shards) on every pod event (docs/adr/0004).
 *
 * Make-before-break across objects: a ruleset is written only after every pod-derived set it
 * references exists (agents treat a missing set as empty, which for a target set would unguard
 * pods), and a set is deleted only once no ruleset the API server holds references it.
 *
 * The same order for node labels (nodelabels.ts, ADR 0011): a ruleset gains a node's label only
 * once every shard of its sets carries it (the agent of that node then sees the sets before the
 * ruleset), and a shard loses a node's label only once no ruleset the API server holds for a set
 * it belongs to carries it.
 */
import jsonpatch, { type Operation } from 'fast-json-patch';
import { agentLeaseName, ipSetObjectName } from '../api/names.js';
import { setCondition } from '../framework/conditions.js';
import { ACK_ANNOTATION, type Condition, type NpmIPSet, type NpmNode, type NpmRuleSet, type NpmRuleSetStatus } from '../api/types.js';
import type { TranslationEngine } from '../translate/engine.js';
import { httpCode, type NpmApi, type OurKind } from './api.js';
import { nodeLabels, withNodeLabels } from './nodelabels.js';
import { REASON, computeStatus, sameJson, sameStatus } from './status.js';

export interface Caches {
  ruleset(namespace: string, name: string): NpmRuleSet | undefined;
  ipset(name: string): NpmIPSet | undefined;
  rulesets(): NpmRuleSet[];
  nodes(): ReadonlyMap<string, NpmNode>;
  /** Nodes whose agent is not reporting (liveness.ts) -> last renewal (ISO). Default: none. */
  notReporting?(): ReadonlyMap<string, string>;
}

/** A write that lost a race (stale cache, conflict): retried with backoff, a failure. */
export class RetryLater extends Error {}

/**
 * How long a key waiting for another object sleeps before it looks again by itself. The arrival of
 * the awaited object wakes it at once (the operator maps `waitFor` back to the key); this is only
 * the fallback when no such event comes (the awaited object could not be created, say).
 */
export const WAIT_FALLBACK_MS = 2_000;

export interface ReconcileResult {
  /**
   * What was sent: 'create' | 'patch' | 'delete' | 'status' | 'none', or 'wait': an expected wait
   * (not a failure: a ruleset waiting for its sets), with what it waits for.
   */
  action: string;
  bytes: number;
  /** With 'wait': the key of the object (ipsetKey / rulesetKey) whose change should wake this key. */
  waitFor?: string;
  /** With 'wait': look again after this delay even if nothing wakes it. */
  requeueAfterMs?: number;
}

export function rulesetKey(namespace: string, name: string): string {
  return `NpmRuleSet/${namespace}/${name}`;
}
export function ipsetKey(name: string): string {
  return `NpmIPSet//${name}`;
}
export function statusKey(namespace: string, name: string): string {
  return `Status/${namespace}/${name}`;
}
export function nodeReadyKey(node: string): string {
  return `NodeReady//${node}`;
}

function owned(o: { metadata: { labels?: object; ownerReferences?: object[] }; spec: object }) {
  return { labels: o.metadata.labels ?? {}, ownerReferences: o.metadata.ownerReferences ?? [], spec: o.spec };
}

/** Patch operations turning `actual` into `desired` on the fields we own, paths rooted at the object. */
export function ownedPatch(actual: NpmRuleSet | NpmIPSet, desired: NpmRuleSet | NpmIPSet): Operation[] {
  // A map or list the API server dropped (a hand edit removed the last label, say) must be added
  // whole: an "add" below a missing parent fails the patch (422), which would look like a stale cache.
  const whole: Operation[] = [];
  const a = owned(actual);
  const d = owned(desired);
  for (const f of ['labels', 'ownerReferences'] as const) {
    if (actual.metadata[f] === undefined && desired.metadata[f] !== undefined) {
      whole.push({ op: 'add', path: `/metadata/${f}`, value: d[f] });
      (a as Record<string, unknown>)[f] = d[f];
    }
  }
  const ops = jsonpatch.compare(a, d);
  return [
    ...whole,
    ...ops.map((op) => {
      const path = op.path.startsWith('/spec') ? op.path : `/metadata${op.path}`;
      return { ...op, path } as Operation;
    }),
  ];
}

export class Reconciler {
  /** Rulesets ("ns/name") referencing a set (kernel name). Default: a scan of the engine's policies. */
  private readonly usersOf: (set: string) => Iterable<string>;
  /**
   * A status that only moves progress (which nodes report which generation, "k/n nodes") is written
   * at most this often per ruleset; a condition that flips (Programmed False -> True, a new reason)
   * is written at once. Every status write goes to every agent that watches the ruleset: with n
   * nodes reporting one after another, one write per report would cost n writes and n x n watch
   * events per policy change (bench:scale, issue #10). 0 writes every change.
   */
  statusProgressMs = 1000;
  /** Per ruleset key: when its status was last written (ms, from `now`). */
  private readonly statusWrittenAt = new Map<string, number>();
  /** Per ruleset key: since when a Programmed=False only for newly concerned nodes is held back (newNodesOnly). */
  private readonly newNodesSince = new Map<string, number>();
  /**
   * Whether a write of this shard must ask its nodes to acknowledge it (ACK_ANNOTATION, ADR 0015):
   * true when it holds, or is about to drop, the address of a pod that waits for its membership
   * condition. Default: never (nobody waits).
   */
  ackWanted: (desired: NpmIPSet, actual: NpmIPSet | undefined) => boolean = () => false;
  /** Shards whose next reconcile asks for an acknowledgment even with nothing else to write. */
  private readonly asks = new Set<string>();
  /** Stamps of this process: unique across restarts (start time) and increasing within one. */
  private readonly stampPrefix = Date.now().toString(36);
  private stampSeq = 0;

  constructor(
    private readonly engine: TranslationEngine,
    private readonly api: NpmApi,
    private readonly caches: Caches,
    private readonly now: () => Date = () => new Date(),
    /** Called for every condition whose status changed (for Events). */
    private readonly onTransition?: (rs: NpmRuleSet, before: Condition | undefined, after: Condition) => void,
    usersOf?: (set: string) => Iterable<string>,
  ) {
    this.usersOf = usersOf ?? ((set) => engine.policyKeys().filter((k) => {
      const [ns, name] = k.split('/') as [string, string];
      return engine.ruleset(ns, name)?.spec.ipsets.some((r) => r.name === set);
    }));
  }

  /** The ruleset the engine wants, labelled for the nodes that must program it. */
  private desiredRuleSet(ns: string, name: string): NpmRuleSet | undefined {
    const rs = this.engine.ruleset(ns, name);
    return rs && withNodeLabels(rs, this.engine.concernedNodes(ns, name));
  }

  /** The shard the engine wants, labelled for the union of the nodes of the rulesets using its set. */
  private desiredShard(objectName: string): NpmIPSet | undefined {
    const shard = this.engine.ipSetObject(objectName);
    if (!shard) return undefined;
    const nodes = new Set<string>();
    for (const k of this.usersOf(shard.spec.setName)) {
      const [ns, name] = k.split('/') as [string, string];
      for (const n of this.engine.concernedNodes(ns, name)) nodes.add(n);
    }
    return withNodeLabels(shard, [...nodes].sort());
  }

  /**
   * The shard's next reconcile asks its nodes to acknowledge its current version even if nothing
   * else changes (the operator restarted while a pod waited, or the write that changed the pod's
   * membership carried no stamp). The caller queues the shard's key.
   */
  ask(shard: string): void {
    this.asks.add(shard);
  }

  private stamp(): string {
    return `${this.stampPrefix}.${++this.stampSeq}`;
  }

  async reconcile(key: string): Promise<ReconcileResult> {
    const [kind, ns, ...rest] = key.split('/');
    const name = rest.join('/');
    if (kind === 'NpmRuleSet') return this.reconcileRuleSet(ns!, name);
    if (kind === 'NpmIPSet') return this.reconcileIPSet(name);
    if (kind === 'Status') return this.reconcileStatus(ns!, name);
    if (kind === 'NodeReady') return this.reconcileNodeReady(name);
    throw new Error(`unknown key ${key}`);
  }

  private async write(kind: OurKind, desired: NpmRuleSet | NpmIPSet, actual: NpmRuleSet | NpmIPSet | undefined, adopt = true): Promise<ReconcileResult> {
    const shard = kind === 'NpmIPSet' ? desired.metadata.name : undefined;
    if (!actual) {
      if (shard !== undefined && (this.asks.has(shard) || this.ackWanted(desired as NpmIPSet, undefined))) {
        desired = { ...desired, metadata: { ...desired.metadata, annotations: { ...desired.metadata.annotations, [ACK_ANNOTATION]: this.stamp() } } } as typeof desired;
      }
      try {
        await this.api.create(kind, desired);
      } catch (err) {
        if (httpCode(err) !== 409) throw err;
        // It exists but our cache does not have it: the cache is behind, or someone removed the
        // managed-by label our informers select on (the object is then invisible to them, and
        // waiting for the cache would leave the edit in force forever). Read it and patch it back,
        // labels included.
        const live = adopt ? await this.api.get(kind, desired.metadata.namespace, desired.metadata.name) : undefined;
        if (live) return this.write(kind, desired, live, false);
        throw new RetryLater(`${kind} ${desired.metadata.name} exists but is not in the cache yet`, { cause: err });
      }
      if (shard !== undefined) this.asks.delete(shard);
      return { action: 'create', bytes: JSON.stringify(desired).length };
    }
    const ops = ownedPatch(actual, desired);
    // The stamp rides on a write that changes members or labels (a change nobody waits for carries
    // the old stamp, which asks nothing), or is the whole write when asked for explicitly.
    if (shard !== undefined && (this.asks.has(shard) || (ops.length && this.ackWanted(desired as NpmIPSet, actual as NpmIPSet)))) {
      const value = this.stamp();
      ops.push(actual.metadata.annotations ? { op: 'add', path: `/metadata/annotations/${ACK_ANNOTATION.replace('/', '~1')}`, value } : { op: 'add', path: '/metadata/annotations', value: { [ACK_ANNOTATION]: value } });
    }
    if (!ops.length) return { action: 'none', bytes: 0 };
    const body: Operation[] = [{ op: 'test', path: '/metadata/resourceVersion', value: actual.metadata.resourceVersion }, ...ops];
    try {
      await this.api.patch(kind, desired.metadata.namespace, desired.metadata.name, body);
    } catch (err) {
      const code = httpCode(err);
      if (code === 422 || code === 409) throw new RetryLater(`${kind} ${desired.metadata.name} changed since it was read (resourceVersion ${actual.metadata.resourceVersion})`, { cause: err });
      throw err;
    }
    if (shard !== undefined) this.asks.delete(shard);
    return { action: 'patch', bytes: JSON.stringify(body).length };
  }

  private async reconcileRuleSet(ns: string, name: string): Promise<ReconcileResult> {
    const desired = this.desiredRuleSet(ns, name);
    const actual = this.caches.ruleset(ns, name);
    if (!desired) {
      if (!actual) return { action: 'none', bytes: 0 };
      await this.api.delete('NpmRuleSet', ns, name);
      return { action: 'delete', bytes: 0 };
    }
    // Every pod-derived set it references must exist first, labelled for every node this ruleset
    // will be labelled for (see the header). Waiting for one is expected, not a failure: no error,
    // no backoff; the shard's next event in the cache wakes us.
    const labels = nodeLabels(desired);
    for (const ref of desired.spec.ipsets) {
      if (ref.kind === 'IPBlock') continue;
      const shards = this.engine.ipSetObject(ipSetObjectName(ref.name, 0))?.spec.shardCount ?? 1;
      for (let i = 0; i < shards; i++) {
        const shard = ipSetObjectName(ref.name, i);
        const cached = this.caches.ipset(shard);
        const has = nodeLabels(cached);
        if (cached && [...labels].every((l) => has.has(l))) continue;
        const want = this.desiredShard(shard);
        let bytes = 0;
        if (want) {
          bytes = await this.write('NpmIPSet', want, cached).then((r) => r.bytes, (err: unknown) => {
            if (!(err instanceof RetryLater)) throw err;
            return 0;
          });
        }
        return { action: 'wait', bytes, waitFor: ipsetKey(shard), requeueAfterMs: WAIT_FALLBACK_MS };
      }
    }
    return this.write('NpmRuleSet', desired, actual);
  }

  private async reconcileIPSet(name: string): Promise<ReconcileResult> {
    const desired = this.desiredShard(name);
    const actual = this.caches.ipset(name);
    if (desired) {
      // A node label goes only once no ruleset the API server holds for this set still has it.
      const keep = nodeLabels(desired);
      const dropping = [...nodeLabels(actual)].filter((l) => !keep.has(l));
      if (dropping.length) {
        const set = desired.spec.setName;
        const holder = this.caches.rulesets().find((rs) => rs.spec.ipsets.some((s) => s.name === set) && dropping.some((l) => rs.metadata.labels?.[l] !== undefined));
        if (holder) {
          // Make what can be made now (members, added labels): only the drop waits.
          const interim = withNodeLabels(desired, []);
          interim.metadata.labels = { ...interim.metadata.labels, ...Object.fromEntries([...keep, ...dropping].map((l) => [l, ''])) };
          const r = await this.write('NpmIPSet', interim, actual);
          return { action: 'wait', bytes: r.bytes, waitFor: rulesetKey(holder.metadata.namespace ?? '', holder.metadata.name), requeueAfterMs: WAIT_FALLBACK_MS };
        }
      }
      return this.write('NpmIPSet', desired, actual);
    }
    if (!actual) return { action: 'none', bytes: 0 };
    const set = actual.spec.setName;
    const user = this.caches.rulesets().find((rs) => rs.spec.ipsets.some((s) => s.name === set));
    // Still referenced: wait (expected) for that ruleset to change or go.
    if (user) return { action: 'wait', bytes: 0, waitFor: rulesetKey(user.metadata.namespace ?? '', user.metadata.name), requeueAfterMs: WAIT_FALLBACK_MS };
    await this.api.delete('NpmIPSet', undefined, name);
    return { action: 'delete', bytes: 0 };
  }

  private async reconcileStatus(ns: string, name: string): Promise<ReconcileResult> {
    const key = `${ns}/${name}`;
    const rs = this.caches.ruleset(ns, name);
    // Gone (its delete event queues this key): nothing to write, and no write time to keep.
    if (!rs) {
      this.statusWrittenAt.delete(key);
      this.newNodesSince.delete(key);
      return { action: 'none', bytes: 0 };
    }
    const now = this.now();
    const status = computeStatus(rs, this.engine.concernedNodes(ns, name), this.caches.nodes(), now, this.caches.notReporting?.(), this.engine.warnings(ns, name));
    if (sameStatus(rs.status, status)) {
      this.newNodesSince.delete(key);
      return { action: 'none', bytes: 0 };
    }
    // A pod of an unchanged policy started on a node the policy did not concern yet: that node has
    // statusProgressMs to report before Programmed turns False. It nearly always does (its agent
    // syncs in tens of ms), and then the flip and its way back (2 writes, 2 Events, each to every
    // watcher of the ruleset) are never written: at 100 nodes most pod adds land on such a node
    // (bench:scale, issue #10). The pod itself is guarded by pod startup (ADR 0009) meanwhile.
    if (newNodesOnly(rs.status, status)) {
      const since = this.newNodesSince.get(key) ?? now.getTime();
      this.newNodesSince.set(key, since);
      const wait = since + this.statusProgressMs - now.getTime();
      if (wait > 0) return { action: 'wait', bytes: 0, requeueAfterMs: wait };
    } else this.newNodesSince.delete(key);
    const last = this.statusWrittenAt.get(key);
    if (last !== undefined && !flips(rs.status, status) && rs.status?.observedGeneration === status.observedGeneration) {
      const wait = last + this.statusProgressMs - now.getTime();
      // An expected wait, not a failure: the queue runs the key again then (or sooner on an event).
      if (wait > 0) return { action: 'wait', bytes: 0, requeueAfterMs: wait };
    }
    try {
      await this.api.patchRuleSetStatus(ns, name, status);
    } catch (err) {
      // Deleted since the cache was read (its policy is gone): there is no status left to write,
      // and the delete event queues whatever follows. Done, not failed.
      if (httpCode(err) === 404) return { action: 'none', bytes: 0 };
      throw err;
    }
    this.statusWrittenAt.set(key, now.getTime());
    this.newNodesSince.delete(key);
    for (const c of status.conditions ?? []) {
      const before = rs.status?.conditions?.find((x) => x.type === c.type);
      if (before?.status !== c.status) this.onTransition?.(rs, before, c);
    }
    return { action: 'status', bytes: JSON.stringify(status).length };
  }

  /**
   * The NpmNode Ready condition while its agent is not reporting: False, AgentNotReporting (the
   * agent cannot say so itself). When the agent reports again, the condition it last wrote is put
   * back as it computes it (daemon.ts): an agent that was only cut off keeps its status unchanged
   * and would not rewrite it.
   */
  private async reconcileNodeReady(node: string): Promise<ReconcileResult> {
    const n = this.caches.nodes().get(node);
    if (!n) return { action: 'none', bytes: 0 };
    const since = this.caches.notReporting?.().get(node);
    const ready = n.status?.conditions?.find((c) => c.type === 'Ready');
    let want: Omit<Condition, 'lastTransitionTime'> | undefined;
    if (since !== undefined) {
      want = { type: 'Ready', status: 'False', reason: REASON.AgentNotReporting, message: `the kube-npm agent on node ${node} is not reporting: its Lease ${agentLeaseName(node)} was last renewed at ${since}` };
    } else if (ready?.reason === REASON.AgentNotReporting) {
      const error = n.status?.lastError;
      want = !error
        ? { type: 'Ready', status: 'True', reason: 'Synced', message: `programmed ${n.status?.applied?.length ?? 0} rulesets` }
        : { type: 'Ready', status: 'False', reason: 'SyncFailed', message: error.slice(0, 1000) };
    }
    if (!want) return { action: 'none', bytes: 0 };
    const conditions = setCondition(n.status?.conditions?.slice(), want, this.now());
    if (sameJson(conditions, n.status?.conditions)) return { action: 'none', bytes: 0 };
    try {
      await this.api.patchNodeConditions(node, conditions, n.metadata.resourceVersion);
    } catch (err) {
      const code = httpCode(err);
      if (code === 404) return { action: 'none', bytes: 0 };
      if (code === 409) throw new RetryLater(`NpmNode ${node} changed since it was read (resourceVersion ${n.metadata.resourceVersion})`, { cause: err });
      throw err;
    }
    return { action: 'status', bytes: JSON.stringify(conditions).length };
  }
}

/**
 * Whether `after` differs from a Programmed=True `before` of the same generation and warnings only in
 * that nodes `before` did not list are pending (no error, no silent agent): a node newly concerned by a pod.
 */
function newNodesOnly(before: NpmRuleSetStatus | undefined, after: NpmRuleSetStatus): boolean {
  const was = before?.conditions?.find((c) => c.type === 'Programmed');
  const now = after.conditions?.find((c) => c.type === 'Programmed');
  if (was?.status !== 'True' || now?.status !== 'False' || now.reason !== REASON.Pending) return false;
  if (before!.observedGeneration !== after.observedGeneration || !sameJson(before!.warnings ?? [], after.warnings ?? [])) return false;
  const known = new Set((before!.nodes ?? []).map((n) => n.node));
  const generation = after.observedGeneration ?? 0;
  return (after.nodes ?? []).every((n) => (known.has(n.node) ? (n.generation ?? 0) >= generation : !n.error));
}

/**
 * Whether some condition appears, goes, or changes its status or reason between two statuses, or the
 * warnings change (one more peer selecting no pod keeps Resolved False with the same reason).
 */
function flips(before: NpmRuleSetStatus | undefined, after: NpmRuleSetStatus): boolean {
  const a = before?.conditions ?? [];
  const b = after.conditions ?? [];
  if (a.length !== b.length) return true;
  if (!sameJson(before?.warnings ?? [], after.warnings ?? [])) return true;
  return b.some((c) => {
    const o = a.find((x) => x.type === c.type);
    return !o || o.status !== c.status || o.reason !== c.reason;
  });
}
