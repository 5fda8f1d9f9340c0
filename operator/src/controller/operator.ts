/**
 * `kube-npm operator`: watches NetworkPolicies, Pods and Namespaces (and its own objects), feeds
 * the incremental translation engine, and reconciles NpmRuleSets / NpmIPSets and their status
 * through a keyed work queue. Runs its writers only while it holds the leader Lease.
 *
 * Flow: informer event -> engine update (microseconds) -> a coalescing tick drains the engine's
 * changes into queue keys -> workers reconcile keys level-based (reconciler.ts). Bursts of pod churn
 * collapse into one drain per tick and one write per changed shard; the queue dedupes keys, so a hot
 * key cannot grow the backlog and other keys are not starved (FIFO).
 */
import { dropManagedFields, trimOperatorNamespace, trimOperatorPod, trimOperatorPolicy } from './trim.js';
import { CoreV1Api, EventsV1Api, PatchStrategy, V1MicroTime, setHeaderOptions, type KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { ipSetObjectName } from '../api/names.js';
import {
  GROUP, IPSET_KIND, IPSET_PLURAL, MANAGED_BY_LABEL, MANAGED_BY_VALUE, NODE_KIND, NODE_PLURAL, RULESET_KIND, RULESET_PLURAL, VERSION,
  type Condition, type NpmIPSet, type NpmNode, type NpmRuleSet,
} from '../api/types.js';
import { Informer, type InformerOptions } from '../framework/informer.js';
import { CORE, type ResourceRef } from '../framework/kube.js';
import { WorkQueue } from '../framework/queue.js';
import type { ClusterMetrics } from '../metrics/cluster.js';
import { TranslationEngine } from '../translate/engine.js';
import { podAddresses, type Namespace, type NetworkPolicy, type Pod } from '../translate/k8s.js';
import { httpCode, realNpmApi, type NpmApi } from './api.js';
import { POD_CONDITION, indexShards, membershipCondition, setProgrammers, type Lagging, type MembershipCondition } from './membership.js';
import { NodeIndex, rulesetsMovedByNode } from './fanout.js';
import { SetUsers, nodeLabels } from './nodelabels.js';
import { Liveness, type AgentLease } from './liveness.js';
import { Reconciler, RetryLater, ipsetKey, nodeReadyKey, rulesetKey, statusKey } from './reconciler.js';
import { REASON, sameJson } from './status.js';
import { DEFAULT_LEASE_NAMESPACE } from '../agent/lease.js';
import { realClock, type Clock } from '../framework/backoff.js';
import { errorChain } from '../framework/errors.js';
import { Runner } from '../framework/runner.js';

/** A gated pod's last membership change (ADR 0007): resourceVersions, the shards it held, whether its condition covers it. */
interface MembershipEntry {
  podRV: string;
  since: string;
  former: Set<string>;
  done: boolean;
}

/** Queue keys of scheduled acknowledgment asks (ADR 0015): handled by the operator, not the reconciler. */
const ASK_PREFIX = 'Ask//';
/** First ask for a lagging shard this long after the lag was seen; doubles per ask of one shard, up to ASK_MAX_MS. */
const ASK_GRACE_MS = 5_000;
const ASK_MAX_MS = 60_000;

/** What a ruleset update can change besides status (metadata.generation follows spec). */
const ownedFields = (rs: NpmRuleSet) => [rs.metadata.generation, rs.metadata.labels, rs.metadata.ownerReferences, rs.spec];

const RULESETS: ResourceRef = { group: GROUP, version: VERSION, plural: RULESET_PLURAL, namespaced: true, kind: RULESET_KIND };
const IPSETS: ResourceRef = { group: GROUP, version: VERSION, plural: IPSET_PLURAL, namespaced: false, kind: IPSET_KIND };
const NODES: ResourceRef = { group: GROUP, version: VERSION, plural: NODE_PLURAL, namespaced: false, kind: NODE_KIND };
const LEASES: ResourceRef = { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', namespaced: true, kind: 'Lease' };

type Obj<T> = T & KubernetesObject;

export interface OperatorOptions {
  kc: KubeConfig;
  log: (s: string) => void;
  /** Delay that coalesces bursts of events into one drain. Default 20 ms. */
  coalesceMs?: number;
  /** Periodic relist of every informer (heals missed events). Default 5 min. */
  resyncMs?: number;
  workers?: number;
  metrics?: ClusterMetrics;
  api?: NpmApi;
  /**
   * Writes the membership condition (POD_CONDITION) on pods that opt in with a readiness gate of that
   * type (ADR 0007). Default: the pod status patch of the real API server.
   */
  patchPodCondition?: (namespace: string, name: string, cond: MembershipCondition & { lastTransitionTime: string }) => Promise<void>;
  /** Debounce of the membership evaluation. Default 20 ms. */
  membershipDelayMs?: number;
  /**
   * A shard that a pending gated pod waits on, not acknowledged by a reporting node for this long
   * at one resourceVersion, is asked again (ADR 0015); doubles per ask, up to a minute. Default 5 s.
   */
  askGraceMs?: number;
  /** Namespace of the agents' liveness Leases (agentLeaseName). Default kube-npm-system. */
  agentLeaseNamespace?: string;
  /** Clock of the liveness check (nothing happens when an agent dies). Default: the real clock. */
  clock?: Clock;
  /** Clock of the coalescing delays (drain, membership pass). Default: the real clock. */
  timerClock?: Clock;
  /** Injectable list/watch per resource (unit tests); default: the API server of `kc`. */
  transport?: (resource: ResourceRef) => Pick<InformerOptions<never>, 'listFn' | 'watchFn'>;
}

/** What the membership signal reads of a pod beyond the translation's view. */
interface GatedPod {
  metadata: { namespace?: string; name?: string; resourceVersion?: string };
  spec?: { readinessGates?: { conditionType?: string }[] };
  status?: { conditions?: { type: string; status: string; reason?: string; message?: string; lastTransitionTime?: string }[] };
}

const sinceOf = (message: string | undefined): string | undefined => /^membership as of resourceVersion (\d+)/.exec(message ?? '')?.[1];

/** What the pod's own node's kernel holds of it (its address in KNPM-LOCAL): see membership.ts (c). */
function addressInputs(p: Pod): unknown[] {
  const ips = [p.status?.podIP, ...(p.status?.podIPs ?? []).map((x) => x.ip)];
  return [ips, p.status?.phase, p.spec?.nodeName, p.spec?.hostNetwork ?? false];
}

/** Inputs of a pod's set membership: a change in any of these moves the pod between sets. */
function membershipInputs(p: Pod): unknown[] {
  return [p.metadata.labels ?? {}, p.spec?.containers?.map((c) => c.ports), p.spec?.initContainers?.map((c) => c.ports), addressInputs(p)];
}

export class NpmOperator {
  readonly engine = new TranslationEngine();
  private readonly policies: Informer<Obj<NetworkPolicy>>;
  private readonly pods: Informer<Obj<Pod>>;
  private readonly namespaces: Informer<Obj<Namespace>>;
  private readonly rulesets: Informer<Obj<NpmRuleSet>>;
  private readonly ipsets: Informer<Obj<NpmIPSet>>;
  private readonly nodes: Informer<Obj<NpmNode>>;
  private readonly leases: Informer<Obj<AgentLease>>;
  private readonly liveness = new Liveness();
  private readonly clock: Clock;
  /** Nodes not reporting, as last evaluated (node -> last renewal). */
  private stale = new Map<string, string>();
  private livenessTimer: AbortController | undefined;
  readonly queue: WorkQueue;
  private readonly reconciler: Reconciler;
  private readonly events: EventsV1Api;
  /** engine.drain() soon after an event: a burst of events costs one drain (framework Runner). */
  private readonly drains: Runner;
  private synced = false;
  /** Per gated pod ("ns/name"): resourceVersions of its last membership change (ADR 0007). */
  private readonly membership = new Map<string, MembershipEntry>();
  /** One pass over the gated pods' conditions at a time, debounced (framework Runner). */
  private readonly membershipPasses: Runner;
  /** Addresses of the gated pods whose condition is pending; undefined: recompute (pendingIPs). */
  private pendingIPsCache: Set<string> | undefined;
  /** Written shards some node has not acknowledged for a pending pod, as of the last membership pass. */
  private lagging: Lagging = new Map();
  /** Per lagging shard: the resourceVersion an ask is scheduled for, and the asks made in a row. */
  private readonly askState = new Map<string, { rv: string; asks: number }>();
  private readonly patchPodCondition: NonNullable<OperatorOptions['patchPodCondition']>;
  /** Keys waiting (expected waits) for an object's event: woken by it at once. */
  private readonly waiters = new Waiters();
  /** node -> rulesets whose last status lists it: those a change of that node's report can move. */
  private readonly concerning = new NodeIndex();
  /** Which rulesets use and target which sets (node labels follow them). */
  private readonly users = new SetUsers();
  /** Events of our own objects: a counter, and the last one per object key (ipsetKey/rulesetKey). */
  private eventSeq = 0;
  private readonly lastEvent = new Map<string, number>();

  constructor(private readonly o: OperatorOptions) {
    const log = o.log;
    const resyncMs = o.resyncMs ?? 300_000;
    const ours = `${MANAGED_BY_LABEL}=${MANAGED_BY_VALUE}`;
    const t = (r: ResourceRef) => (o.transport?.(r) ?? {}) as object;
    this.policies = new Informer({ kc: o.kc, resource: CORE.networkPolicies, log, resyncMs, transform: trimOperatorPolicy, ...t(CORE.networkPolicies) });
    this.pods = new Informer({ kc: o.kc, resource: CORE.pods, log, resyncMs, transform: trimOperatorPod, ...t(CORE.pods) });
    this.namespaces = new Informer({ kc: o.kc, resource: CORE.namespaces, log, resyncMs, transform: trimOperatorNamespace, ...t(CORE.namespaces) });
    this.rulesets = new Informer({ kc: o.kc, resource: RULESETS, labelSelector: ours, log, resyncMs, transform: dropManagedFields, ...t(RULESETS) });
    this.ipsets = new Informer({ kc: o.kc, resource: IPSETS, labelSelector: ours, log, resyncMs, transform: dropManagedFields, ...t(IPSETS) });
    this.nodes = new Informer({ kc: o.kc, resource: NODES, log, resyncMs, transform: dropManagedFields, ...t(NODES) });
    this.leases = new Informer({ kc: o.kc, resource: LEASES, namespace: o.agentLeaseNamespace ?? DEFAULT_LEASE_NAMESPACE, log, resyncMs, ...t(LEASES) });
    this.clock = o.clock ?? realClock;
    // Coalescing delays run on `timerClock` (real time by default), apart from the liveness clock:
    // tests drive liveness by whole lease periods and still want drains to happen.
    const timers = o.timerClock ?? realClock;
    this.drains = new Runner({
      name: 'drain',
      clock: timers,
      coalesceMs: o.coalesceMs ?? 20,
      run: async () => this.drain(),
      backoff: { initialMs: 100, maxMs: 10_000 },
      onError: (err, ms) => log(`drain failed, retrying in ${ms} ms: ${errorChain(err)}`),
    });
    this.membershipPasses = new Runner({
      name: 'membership',
      clock: timers,
      coalesceMs: o.membershipDelayMs ?? 20,
      run: () => this.membershipPass(),
      backoff: { initialMs: 500, maxMs: 30_000 },
      onError: (err, ms) => log(`membership conditions failed, retrying in ${ms} ms: ${errorChain(err)}`),
    });
    this.events = o.kc.makeApiClient(EventsV1Api);
    const api = o.api ?? realNpmApi(o.kc);
    const nodeMap = (): ReadonlyMap<string, NpmNode> => new Map(this.nodes.list().map((n) => [n.metadata.name, n]));
    this.reconciler = new Reconciler(this.engine, countingApi(api, o.metrics), {
      ruleset: (ns, name) => this.rulesets.get(`${ns}/${name}`),
      ipset: (name) => this.ipsets.get(name),
      rulesets: () => this.rulesets.list(),
      nodes: nodeMap,
      notReporting: () => this.stale,
    }, () => new Date(this.clock.now()), (rs, before, after) => this.transition(rs, before, after), (set) => this.users.usersOf(set));
    // ADR 0015: a shard write asks its nodes to acknowledge only when a gated pod waits for it.
    this.reconciler.ackWanted = (d, a) => this.holdsPendingIP(d, a);
    this.queue = new WorkQueue({
      name: 'kube-npm',
      concurrency: o.workers ?? 4,
      log,
      worker: async (key) => {
        if (key.startsWith(ASK_PREFIX)) return void this.askIfLagging(key.slice(ASK_PREFIX.length));
        const seq0 = this.eventSeq;
        try {
          const res = await this.reconciler.reconcile(key);
          o.metrics?.reconciles.inc({ result: res.action === 'wait' ? 'wait' : 'ok' });
          if (res.action !== 'wait') return void this.waiters.done(key);
          // An expected wait: no failure, no backoff. The awaited object's next event wakes the
          // key; if one arrived while we were working (our own write's echo, say), run again now.
          if (res.waitFor) {
            this.waiters.wait(res.waitFor, key);
            if ((this.lastEvent.get(res.waitFor) ?? -1) > seq0) this.queue.add(key);
          }
          return { requeueAfterMs: res.requeueAfterMs };
        } catch (err) {
          this.waiters.done(key);
          o.metrics?.reconciles.inc({ result: err instanceof RetryLater ? 'retry' : 'error' });
          throw err;
        }
      },
    });

    // Cluster state -> engine. Problems are reported through the ruleset's Accepted condition.
    this.policies.onAdd((np) => this.touch(() => this.engine.upsertPolicy(np)));
    this.policies.onUpdate((np) => this.touch(() => this.engine.upsertPolicy(np)));
    this.policies.onDelete((np) => this.touch(() => this.engine.deletePolicy(np.metadata.namespace ?? 'default', np.metadata.name ?? '')));
    this.namespaces.onAdd((ns) => this.touch(() => this.engine.upsertNamespace(ns)));
    this.namespaces.onUpdate((ns) => this.touch(() => this.engine.upsertNamespace(ns)));
    this.namespaces.onDelete((ns) => this.touch(() => this.engine.deleteNamespace(ns.metadata.name ?? '')));
    this.pods.onAdd((p) => {
      this.trackMembership(p, undefined);
      this.touch(() => this.engine.upsertPod(p));
    });
    this.pods.onUpdate((p, old) => {
      this.trackMembership(p, old);
      this.touch(() => this.engine.upsertPod(p));
    });
    this.pods.onDelete((p) => {
      this.membership.delete(`${p.metadata.namespace ?? 'default'}/${p.metadata.name ?? ''}`);
      this.pendingIPsCache = undefined;
      this.touch(() => this.engine.deletePod(p.metadata.namespace ?? 'default', p.metadata.name ?? ''));
    });
    // A namespace relabel moves its pods between sets without touching them.
    this.namespaces.onUpdate((ns, old) => {
      if (sameJson(ns.metadata.labels ?? {}, old.metadata.labels ?? {})) return;
      for (const [k, m] of this.membership) {
        if (!k.startsWith(`${ns.metadata.name}/`)) continue;
        m.since = ns.metadata.resourceVersion ?? m.since;
        m.done = false;
        const p = this.pods.get(k);
        if (p) for (const n of this.shardsHolding(p)) m.former.add(n);
      }
      this.evaluateMembership();
    });
    const core = o.kc.makeApiClient(CoreV1Api);
    this.patchPodCondition = o.patchPodCondition ?? (async (namespace, name, cond) => {
      // Strategic merge: pod conditions merge by type, so the kubelet's conditions are left alone.
      await core.patchNamespacedPodStatus({ namespace, name, body: { status: { conditions: [cond] } } }, setHeaderOptions('Content-Type', PatchStrategy.StrategicMergePatch));
    });
    // Our own objects: drift (someone edited or deleted them) and status inputs.
    const ownRuleSet = (rs: NpmRuleSet, deleted = false, old?: NpmRuleSet) => {
      const key = `${rs.metadata.namespace ?? ''}/${rs.metadata.name}`;
      this.concerning.update(key, deleted ? undefined : rs);
      this.seen(rulesetKey(rs.metadata.namespace ?? '', rs.metadata.name), deleted);
      if (!this.synced) return;
      for (const k of this.waiters.wake(rulesetKey(rs.metadata.namespace ?? '', rs.metadata.name))) this.queue.add(k);
      // Its node labels moved (or it went): its sets' shards may now drop a node (make-before-break
      // let them keep it until this ruleset, as the API server holds it, no longer had it).
      if (deleted || !old || !sameJson([...nodeLabels(rs)].sort(), [...nodeLabels(old)].sort())) {
        for (const r of [...rs.spec.ipsets, ...(old?.spec.ipsets ?? [])]) if (r.kind !== 'IPBlock') this.queueShards(r.name);
      }
      this.queue.add(rulesetKey(rs.metadata.namespace ?? '', rs.metadata.name));
      this.queue.add(statusKey(rs.metadata.namespace ?? '', rs.metadata.name));
    };
    this.rulesets.onAdd((rs) => ownRuleSet(rs));
    this.rulesets.onUpdate((rs, old) => {
      // Our own status write coming back (only the operator may write it: config/admission):
      // nothing to reconcile, and recomputing the status we just wrote would double every status pass.
      if (rs.metadata.uid === old.metadata.uid && sameJson(ownedFields(rs), ownedFields(old))) {
        this.concerning.update(`${rs.metadata.namespace ?? ''}/${rs.metadata.name}`, rs);
        return;
      }
      ownRuleSet(rs, false, old);
    });
    this.rulesets.onDelete((rs) => ownRuleSet(rs, true));
    const ownSet = (s: NpmIPSet, deleted = false): void => {
      this.seen(ipsetKey(s.metadata.name), deleted);
      if (this.synced) {
        for (const k of this.waiters.wake(ipsetKey(s.metadata.name))) this.queue.add(k);
        this.queue.add(ipsetKey(s.metadata.name));
      }
      this.evaluateMembership();
    };
    this.ipsets.onAdd((s) => ownSet(s));
    this.ipsets.onUpdate((s) => ownSet(s));
    this.ipsets.onDelete((s) => ownSet(s, true));
    // Only the rulesets whose status this report can move (fanout.ts), not every policy (#10).
    const nodeChanged = (old: NpmNode | undefined, cur: NpmNode | undefined) => {
      if (this.synced) {
        const node = (cur ?? old)!.metadata.name;
        for (const k of rulesetsMovedByNode(old, cur, this.concerning.concerning(node))) {
          const [ns, name] = k.split('/') as [string, string];
          if (this.engine.ruleset(ns, name)) this.queue.add(statusKey(ns, name));
        }
      }
      this.evaluateMembership();
    };
    this.nodes.onAdd((n) => {
      nodeChanged(undefined, n);
      if (this.synced && this.stale.has(n.metadata.name)) this.queue.add(nodeReadyKey(n.metadata.name));
    });
    // The agent's own write may bring Ready back to what it believes (True) while it is not
    // reporting to us: keep the verdict (and put its own back when it reports again).
    this.nodes.onUpdate((n) => {
      if (this.synced && (this.stale.has(n.metadata.name) || n.status?.conditions?.some((c) => c.reason === REASON.AgentNotReporting))) this.queue.add(nodeReadyKey(n.metadata.name));
    });
    this.leases.onAdd((l) => this.leaseChanged(l, false));
    this.leases.onUpdate((l) => this.leaseChanged(l, false));
    this.leases.onDelete((l) => this.leaseChanged(l, true));
    this.nodes.onUpdate((n, old) => nodeChanged(old, n));
    this.nodes.onDelete((n) => nodeChanged(n, undefined));
  }

  /**
   * Record a gated pod's last membership change. Only changes of the pod's membership inputs count:
   * our own condition write also moves its resourceVersion, and must not restart the wait.
   */
  private trackMembership(p: Pod, old: Pod | undefined): void {
    const key = `${p.metadata.namespace ?? 'default'}/${p.metadata.name ?? ''}`;
    const gated = (p as GatedPod).spec?.readinessGates?.some((g) => g.conditionType === POD_CONDITION) ?? false;
    if (!gated) {
      this.membership.delete(key);
      return;
    }
    const rv = p.metadata.resourceVersion ?? '0';
    const known = this.membership.get(key);
    if (!known) {
      // First sight (a new pod, or an operator restart): a condition written before keeps its
      // position, so a restart does not rewrite every gated pod's condition.
      const prev = (p as GatedPod).status?.conditions?.find((c) => c.type === POD_CONDITION);
      const since = old === undefined && prev ? sinceOf(prev.message) : undefined;
      this.membership.set(key, { podRV: since ?? rv, since: since ?? rv, former: new Set(this.shardsHolding(old ?? p)), done: false });
    } else if (!old || !sameJson(membershipInputs(p), membershipInputs(old))) {
      // Its own node must see the pod again only if what that node's kernel holds of it changed: a
      // label change alone changes no kernel there (no NpmNode write would ever follow, #10).
      if (!old || !sameJson(addressInputs(p), addressInputs(old))) known.podRV = rv;
      known.since = rv;
      known.done = false;
      // The sets it may be leaving: what the API server holds for it before our write.
      for (const n of this.shardsHolding(old ?? p)) known.former.add(n);
    }
    this.evaluateMembership();
  }

  /** NpmIPSet shards (API server's view) holding one of the pod's IPs. O(members): gated pods only. */
  private shardsHolding(p: Pod): string[] {
    const ips = new Set(podAddresses(p));
    if (!ips.size) return [];
    return this.ipsets.list().filter((s) => s.spec.members.some((m) => ips.has(m.split(',')[0]!))).map((s) => s.metadata.name);
  }

  /** Addresses of the gated pods whose membership condition is pending (cached until the map changes). */
  private pendingIPs(): Set<string> {
    if (this.pendingIPsCache) return this.pendingIPsCache;
    const ips = new Set<string>();
    for (const [key, m] of this.membership) {
      if (m.done) continue;
      for (const ip of podAddresses(this.pods.get(key))) ips.add(ip);
    }
    return (this.pendingIPsCache = ips);
  }

  /** Whether a shard holds, or is about to drop, a pending gated pod's address (ADR 0015). */
  private holdsPendingIP(desired: NpmIPSet, actual: NpmIPSet | undefined): boolean {
    const ips = this.pendingIPs();
    if (!ips.size) return false;
    for (const s of [desired, actual]) for (const m of s?.spec.members ?? []) if (ips.has(m.split(',')[0]!)) return true;
    return false;
  }

  /**
   * Schedule an ask for every shard that a pending pod waits on and some reporting node has not
   * acknowledged (ADR 0015). Normally the write that changed the pod's membership asked already
   * and the nodes answer within a second; the ask covers what that write could not: an operator
   * restarted while a pod waited, a pod whose gate was seen after its shards were written. A grace
   * per shard (doubling up to a minute) keeps it from racing normal acknowledgments.
   */
  private scheduleAsks(lagging: Lagging): void {
    this.lagging = lagging;
    for (const shard of this.askState.keys()) if (!lagging.has(shard)) this.askState.delete(shard);
    for (const [shard, l] of lagging) {
      // Nodes whose agent is not reporting cannot answer: asking them costs a write for nothing.
      if ([...l.nodes].every((n) => this.stale.has(n))) continue;
      const st = this.askState.get(shard);
      if (st?.rv === l.rv) continue;
      const asks = st?.asks ?? 0;
      this.askState.set(shard, { rv: l.rv, asks });
      this.queue.addAfter(`${ASK_PREFIX}${shard}`, Math.min((this.o.askGraceMs ?? ASK_GRACE_MS) * 2 ** asks, ASK_MAX_MS));
    }
  }

  /** The scheduled ask for a shard: made if the shard still lags at the same version. */
  private askIfLagging(shard: string): void {
    const st = this.askState.get(shard);
    const l = this.lagging.get(shard);
    if (!st || !l || l.rv !== st.rv || this.ipsets.get(shard)?.metadata.resourceVersion !== st.rv) return;
    st.asks++;
    this.o.log(`NpmIPSet ${shard}: asking nodes ${[...l.nodes].sort().join(', ')} to acknowledge resourceVersion ${st.rv} (a gated pod waits)`);
    this.reconciler.ask(shard);
    this.queue.add(ipsetKey(shard));
  }

  /** Re-evaluate the gated pods' conditions soon (debounced; one pass at a time). */
  private evaluateMembership(): void {
    this.pendingIPsCache = undefined;
    // Nothing pending (every gated pod True for its last change): no pass, whatever else moves.
    if (!this.synced || ![...this.membership.values()].some((m) => !m.done)) return;
    this.membershipPasses.run();
  }

  private async membershipPass(): Promise<void> {
    const pending = [...this.membership].filter(([, m]) => !m.done);
    const lagging: Lagging = new Map();
    try {
      await this.membershipConditions(pending, lagging);
    } finally {
      this.pendingIPsCache = undefined;
      this.scheduleAsks(lagging);
    }
  }

  private async membershipConditions(pending: [string, MembershipEntry][], lagging: Lagging): Promise<void> {
    if (!pending.length) return;
    const desired = indexShards(this.engine.ipSetObjectNames().flatMap((n) => this.engine.ipSetObject(n) ?? []));
    const actual = indexShards(this.ipsets.list());
    const nodes = new Map(this.nodes.list().map((n) => [n.metadata.name, n]));
    const programmers = setProgrammers(this.rulesets.list(), nodes, (ns, name) => this.engine.concernedNodes(ns, name));
    for (const [key, m] of pending) {
      const p = this.pods.get(key);
      if (!p) continue;
      const settled = p.spec?.hostNetwork || p.status?.phase === 'Succeeded' || p.status?.phase === 'Failed';
      const ip = settled ? undefined : podAddresses(p).find((x) => /^\d+\.\d+\.\d+\.\d+$/.test(x));
      const cond = membershipCondition({ ip, node: p.spec?.nodeName, podRV: m.podRV, since: m.since, former: [...m.former], awaitingIP: !settled }, desired, actual, (n) => this.ipsets.get(n), programmers, nodes, lagging);
      if (cond.status === 'True') m.former.clear();
      const prev = (p as GatedPod).status?.conditions?.find((c) => c.type === POD_CONDITION);
      // One write per flip (and per new change covered): not one per node that catches up.
      if (prev?.status === cond.status && sinceOf(prev.message) === m.since) {
        m.done = cond.status === 'True';
        continue;
      }
      const [ns, name] = key.split('/') as [string, string];
      try {
        // lastTransitionTime moves only on a flip (a newer change covered at the same status keeps it).
        const at = prev?.status === cond.status && prev.lastTransitionTime;
        const since = m.since;
        await this.patchPodCondition(ns, name, { ...cond, lastTransitionTime: at || new Date().toISOString().replace(/\.\d+Z$/, 'Z') });
        // A change seen while the patch was in flight keeps the pod pending.
        m.done = cond.status === 'True' && m.since === since;
      } catch (err) {
        if (httpCode(err) !== 404) this.o.log(`pod ${key}: writing ${POD_CONDITION} failed: ${String(err)}`);
      }
    }
  }

  private leaseChanged(l: AgentLease, deleted: boolean): void {
    if (deleted) this.liveness.remove(l);
    else this.liveness.update(l);
    this.checkLiveness();
  }

  /**
   * Which agents are not reporting now; for each node that flipped, its NpmNode Ready and the
   * status of the rulesets it concerns. Then sleep until the next Lease can expire.
   */
  private checkLiveness(): void {
    if (!this.synced) return;
    const { stale, nextCheckAt } = this.liveness.evaluate(this.clock.now());
    const flipped = [...stale.keys()].filter((n) => !this.stale.has(n)).concat([...this.stale.keys()].filter((n) => !stale.has(n)));
    this.stale = stale;
    for (const node of flipped) {
      this.o.log(stale.has(node) ? `agent on node ${node} is not reporting (Lease last renewed ${stale.get(node)})` : `agent on node ${node} reports again`);
      this.queue.add(nodeReadyKey(node));
      for (const k of this.concerning.concerning(node)) {
        const [ns, name] = k.split('/') as [string, string];
        this.queue.add(statusKey(ns, name));
      }
    }
    this.livenessTimer?.abort();
    this.livenessTimer = undefined;
    if (nextCheckAt === undefined) return;
    const ac = (this.livenessTimer = new AbortController());
    void this.clock.sleep(Math.max(0, nextCheckAt - this.clock.now()), ac.signal).then(() => {
      if (!ac.signal.aborted) this.checkLiveness();
    });
  }

  /** Note an event of one of our objects (for waits racing with it: see the worker). */
  private seen(objectKey: string, deleted: boolean): void {
    this.eventSeq++;
    if (deleted) this.lastEvent.delete(objectKey);
    else this.lastEvent.set(objectKey, this.eventSeq);
  }

  /** Queue every shard of a set (kernel name) the engine wants. */
  private queueShards(set: string): void {
    const n = this.engine.ipSetObject(ipSetObjectName(set, 0))?.spec.shardCount ?? 1;
    for (let i = 0; i < n; i++) this.queue.add(ipsetKey(ipSetObjectName(set, i)));
  }

  /** Apply an event to the engine, then drain soon (bursts coalesce into one drain). */
  private touch(fn: () => unknown): void {
    // Which nodes must program a policy follows pods: drain() finds the rulesets a pod event moved.
    fn();
    if (this.synced) this.drains.run();
  }

  private drain(): void {
    const ch = this.engine.drain();
    const targets = new Set<string>();
    for (const u of ch.upserts) {
      if (u.kind === RULESET_KIND) {
        const rs = u as NpmRuleSet;
        this.users.update(`${rs.metadata.namespace ?? ''}/${rs.metadata.name}`, rs);
        this.queue.add(rulesetKey(rs.metadata.namespace ?? '', rs.metadata.name));
        this.queue.add(statusKey(rs.metadata.namespace ?? '', rs.metadata.name));
      } else {
        this.queue.add(ipsetKey(u.metadata.name));
        targets.add((u as NpmIPSet).spec.setName);
      }
    }
    // Pods moved a policy's warnings (a peer now selects a pod, or none): only its status changes.
    for (const w of ch.warned) this.queue.add(statusKey(w.namespace, w.name));
    for (const d of ch.deletes) {
      if (d.kind === RULESET_KIND) this.users.update(`${d.namespace ?? ''}/${d.name}`, undefined);
      this.queue.add(d.kind === RULESET_KIND ? rulesetKey(d.namespace ?? '', d.name) : ipsetKey(d.name));
    }
    // A target set's members moved: the nodes its rulesets concern may have changed (their node
    // labels, their status). Only those rulesets, not all. Their sets' shards follow from there: a
    // ruleset gaining a node labels them first itself; one losing a node queues them when its
    // label change comes back (ownRuleSet).
    for (const set of targets) {
      for (const k of this.users.targetingOf(set)) {
        const [ns, name] = k.split('/') as [string, string];
        this.queue.add(rulesetKey(ns, name));
        this.queue.add(statusKey(ns, name));
      }
    }
  }

  /** Events on the NetworkPolicy when a condition flips. */
  private transition(rs: NpmRuleSet, before: Condition | undefined, after: Condition): void {
    if (before?.status === after.status) return;
    // A policy whose peers resolve from the start is the normal case: no Event for it (one per
    // policy create, and one per existing policy on upgrade to a version with this condition).
    if (after.type === 'Resolved' && !before && after.status === 'True') return;
    const ns = rs.metadata.namespace ?? 'default';
    const warning = after.status === 'False' && after.reason !== 'Pending';
    void this.events
      .createNamespacedEvent({
        namespace: ns,
        body: {
          // Named like kubectl's events: <object>.<unique hex> (a generateName may not end in '.').
          metadata: { name: `${rs.metadata.name}.${Date.now().toString(16)}${Math.floor(Math.random() * 0xffff).toString(16)}`, namespace: ns },
          eventTime: new V1MicroTime(),
          reportingController: 'kubenpm.io/operator',
          reportingInstance: process.env.POD_NAME ?? 'kube-npm-operator',
          action: after.type,
          reason: after.reason,
          note: `${after.type}=${after.status}: ${after.message}`.slice(0, 1024),
          type: warning ? 'Warning' : 'Normal',
          // Regarding the NpmRuleSet, so `kubectl describe nrs` lists it; related to the policy.
          regarding: { apiVersion: `${GROUP}/${VERSION}`, kind: RULESET_KIND, namespace: ns, name: rs.metadata.name, ...(rs.metadata.uid ? { uid: rs.metadata.uid } : {}) },
          related: { apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', namespace: ns, name: rs.metadata.name, ...(rs.spec.policy.uid ? { uid: rs.spec.policy.uid } : {}) },
        },
      })
      .catch((err: unknown) => this.o.log(`event for ${ns}/${rs.metadata.name} failed: ${String(err)}`));
  }

  /** Start watching and reconciling; resolves once the caches are synced and everything is queued. */
  async start(): Promise<void> {
    // Namespaces and pods first, so that policies translate against a full view on the first drain.
    await Promise.all([this.namespaces.start(), this.pods.start(), this.rulesets.start(), this.ipsets.start(), this.nodes.start(), this.leases.start()]);
    await this.policies.start();
    this.synced = true;
    this.drains.start();
    this.membershipPasses.start();
    this.engine.drain(); // level-based start: enqueue every key, desired and actual alike
    const keys = new Set<string>();
    for (const k of this.engine.policyKeys()) {
      const [ns, name] = k.split('/') as [string, string];
      this.users.update(k, this.engine.ruleset(ns, name));
      keys.add(rulesetKey(ns, name));
      keys.add(statusKey(ns, name));
    }
    for (const n of this.engine.ipSetObjectNames()) keys.add(ipsetKey(n));
    for (const rs of this.rulesets.list()) keys.add(rulesetKey(rs.metadata.namespace ?? '', rs.metadata.name));
    for (const s of this.ipsets.list()) keys.add(ipsetKey(s.metadata.name));
    // Sets first: rulesets wait for their sets anyway, this just saves retries.
    for (const k of [...keys].sort((a, b) => (a.startsWith('NpmIPSet') ? -1 : 0) - (b.startsWith('NpmIPSet') ? -1 : 0))) this.queue.add(k);
    this.queue.start();
    this.checkLiveness();
    this.evaluateMembership();
  }

  isSynced(): boolean {
    return this.synced;
  }

  counts() {
    const rs = this.rulesets.list();
    const st = this.engine.stats();
    return {
      policies: st.policies,
      rules: this.engine.policyKeys().reduce((a, k) => {
        const [ns, name] = k.split('/') as [string, string];
        return a + (this.engine.ruleset(ns, name)?.spec.chains.reduce((b, c) => b + c.rules.length, 0) ?? 0);
      }, 0),
      ipsets: st.sets,
      ipsetEntries: st.members,
      notProgrammed: rs.filter((r) => r.status?.conditions?.find((c) => c.type === 'Programmed')?.status !== 'True').length,
      invalid: rs.filter((r) => r.status?.conditions?.find((c) => c.type === 'Accepted')?.status === 'False').length,
    };
  }

  async stop(): Promise<void> {
    this.livenessTimer?.abort();
    await Promise.all([this.drains.stop(), this.membershipPasses.stop()]);
    await Promise.all([this.policies, this.pods, this.namespaces, this.rulesets, this.ipsets, this.nodes, this.leases].map((i) => (i as Informer<KubernetesObject>).stop()));
    await this.queue.stop();
  }
}

/**
 * Keys waiting for another object's event (see ReconcileResult.waitFor). A key waits for one object
 * at most (its latest wait), and forgets it when it stops waiting: bounded by the number of keys.
 */
export class Waiters {
  private readonly byObject = new Map<string, Set<string>>();
  private readonly byKey = new Map<string, string>();

  wait(object: string, key: string): void {
    this.done(key);
    let keys = this.byObject.get(object);
    if (!keys) this.byObject.set(object, (keys = new Set()));
    keys.add(key);
    this.byKey.set(key, object);
  }

  /** `key` no longer waits. */
  done(key: string): void {
    const object = this.byKey.get(key);
    if (object === undefined) return;
    this.byKey.delete(key);
    const keys = this.byObject.get(object);
    keys?.delete(key);
    if (keys && !keys.size) this.byObject.delete(object);
  }

  /** The keys waiting for `object`, forgotten: a key that must still wait registers again. */
  wake(object: string): string[] {
    const keys = this.byObject.get(object);
    if (!keys) return [];
    this.byObject.delete(object);
    for (const k of keys) this.byKey.delete(k);
    return [...keys];
  }

  /** Keys waiting. */
  get size(): number {
    return this.byKey.size;
  }
}

function countingApi(api: NpmApi, m: ClusterMetrics | undefined): NpmApi {
  if (!m) return api;
  const count = (kind: string, verb: string, body: unknown) => {
    m.apiWrites.inc({ kind, verb });
    m.apiWriteBytes.inc({ kind }, body === undefined ? 0 : JSON.stringify(body).length);
  };
  return {
    create: async (kind, obj) => (await api.create(kind, obj), count(kind, 'create', obj)),
    patch: async (kind, ns, name, ops) => (await api.patch(kind, ns, name, ops), count(kind, 'patch', ops)),
    delete: async (kind, ns, name) => (await api.delete(kind, ns, name), count(kind, 'delete', undefined)),
    patchRuleSetStatus: async (ns, name, st) => (await api.patchRuleSetStatus(ns, name, st), count('NpmRuleSet', 'status', st)),
    patchNodeConditions: async (name, c, rv) => (await api.patchNodeConditions(name, c, rv), count('NpmNode', 'status', c)),
    get: (kind, ns, name) => api.get(kind, ns, name),
  };
}
