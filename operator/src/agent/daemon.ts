/**
 * `kube-npm agent --node-name NODE`: the node agent as a daemon. Watches NpmRuleSets, NpmIPSets and
 * the pods of its own node. Two framework Runners (framework/runner.ts, ADR 0014):
 *  - syncs: coalesced, at most one sync at a time, a minimum interval between syncs, a periodic full
 *    resync that heals drift, and a retry with backoff after a sync the converger gave up on. Every
 *    sync, and every converger attempt within it, plans from the caches as they are then.
 *  - reports: the NpmNode status write trails the syncs by reportDelayMs, one at a time, of the
 *    latest state, retried with backoff; written only when its content changes (an idle node
 *    writes nothing; liveness is the Lease of lease.ts). A membership-only change (a pod joining
 *    sets) is acknowledged only when someone waits for it (ADR 0015): a shard that carries a new
 *    acknowledgment request, or a local pod with the membership readiness gate at a new address.
 *    Otherwise such a change would cost one write per node that programs the set, i.e. O(nodes)
 *    writes per pod event.
 * It never writes NpmRuleSets: N nodes x M rulesets writes would not scale; the operator
 * aggregates NpmNodes instead.
 */
import { isDeepStrictEqual } from 'node:util';
import type { KubernetesObject } from '@kubernetes/client-node';
import { ACK_ANNOTATION, GROUP, IPSET_KIND, IPSET_PLURAL, NODE_KIND, NODE_PLURAL, RULESET_KIND, RULESET_PLURAL, VERSION, API_VERSION, type AppliedRuleSet, type ObservedRevisions, type NpmIPSet, type NpmNodeStatus, type NpmRuleSet, type Condition, type KernelCounts } from '../api/types.js';
import { realClock as abortableClock, type Clock as FrameworkClock } from '../framework/backoff.js';
import { setCondition } from '../framework/conditions.js';
import { errorChain } from '../framework/errors.js';
import { Informer, type ListFn, type WatchFn } from '../framework/informer.js';
import { nodeLabelKey } from '../api/names.js';
import { CORE, PatchStrategy, createObject, formatError, isNotFound, patchObject, type KubeSource, type ResourceRef } from '../framework/kube.js';
import { Runner, type RunReason } from '../framework/runner.js';
import type { NodeMetrics } from '../metrics/node.js';
import type { Backend } from './backend.js';
import type { Converger, SyncResult } from './converge.js';
import { realClock as agentRealClock, type Clock } from './exec.js';
import { buildDesired, type DesiredState, type SetCache } from './model.js';
import { selectLocal } from './select.js';
import { TamperWatcher } from './tamper.js';
import { isGated, trimDesired, trimOurs, trimPod, trimPolicy } from './trim.js';
import type { Pod } from '../translate/k8s.js';
import type { NetworkPolicy } from '../translate/k8s.js';
import { PodStartup, appliedView, inPodCidrs, localPodsOf, policyTargets, selectionView, type Admission, type PodStartupMode, type ProgrammedView } from './podstartup.js';

export interface AgentDaemonOptions {
  /** The API server: the agent's KubeClient (framework/client.ts) or a client-node KubeConfig. */
  kc: KubeSource;
  nodeName: string;
  backend: Backend;
  converger: Converger;
  clock: Clock;
  log: (s: string) => void;
  /** Minimum time between two syncs: bursts of events become one sync. Default 50 ms. */
  minIntervalMs?: number;
  /**
   * A sync after a quiet period waits this long after the first event: the operator's writes for
   * one change (several shards of one pod event, sets then ruleset) arrive a few ms apart, and
   * syncing on the first would cost a second sync, kernel write and NpmNode write for the rest.
   * A pod waiting to enter KNPM-LOCAL does not wait. Default 25 ms.
   */
  coalesceMs?: number;
  /**
   * The NpmNode write trails a sync by this much, so that a burst of syncs costs one write.
   * Default 20 ms: since membership changes are acknowledged only on request (ADR 0015), what
   * writes is a policy change on this node, and this delay is part of its time to Programmed.
   */
  reportDelayMs?: number;
  /** Full kernel re-read and repair at least this often; 0 = never (tests). Default 60 s. */
  resyncMs?: number;
  /**
   * Each resync period is shortened by up to this fraction, drawn anew (framework Runner): agents
   * started together (a rollout, a cluster start) would otherwise resync at the same moments for
   * ever. Default 0.25 (45-60 s at the default period); 0 for exact periods (tests).
   */
  resyncJitter?: number;
  /**
   * First retry delay after a failed sync (the converger already retried with backoff) or a failed
   * NpmNode write; doubles per failure up to max(retryMs, 30 s). Default 2 s.
   */
  retryMs?: number;
  /**
   * Tamper check of the hook and base chains (tamper.ts) this often; a finding forces a full
   * resync, so a flushed chain or a deleted hook is repaired within about a second instead of at
   * the next periodic resync. 0 disables. Default 1 s.
   */
  tamperCheckMs?: number;
  metrics?: NodeMetrics;
  /**
   * strict: an address of `podCidrs` that is not a local pod the node is programmed for is dropped
   * (docs/adr/0009-pod-startup.md); open (default here; the CLI decides the product default): every
   * local pod is judged from the moment it is seen, and unjudged before.
   */
  podStartup?: PodStartupMode;
  /** This node's IPv4 pod CIDRs, canonical (podstartup.ts normalizePodCidrs); required by strict. */
  podCidrs?: readonly string[];
  /** Test seam: the informers' list/watch transport per resource (default: the API server of `kc`). */
  transport?: (r: ResourceRef) => { listFn: ListFn<KubernetesObject>; watchFn: WatchFn };
  /** Test seam: writes this node's NpmNode status (default: status merge patch, NpmNode created on 404). */
  writeStatus?: (status: NpmNodeStatus) => Promise<void>;
}

const RULESETS: ResourceRef = { group: GROUP, version: VERSION, plural: RULESET_PLURAL, namespaced: true, kind: RULESET_KIND };
const IPSETS: ResourceRef = { group: GROUP, version: VERSION, plural: IPSET_PLURAL, namespaced: false, kind: IPSET_KIND };
const NODES: ResourceRef = { group: GROUP, version: VERSION, plural: NODE_PLURAL, namespaced: false, kind: NODE_KIND };

function linesWritten(r: SyncResult): number {
  return r.lines.ipset + r.lines.iptables + r.lines.destroy;
}

/** One plan of a sync: the desired state and what it was computed from. */
interface Planned {
  observed: ObservedRevisions;
  pods: ReturnType<typeof localPodsOf>;
  sel: ReturnType<typeof selectLocal>;
  targets: ReturnType<typeof policyTargets>;
  admission: Admission;
  desired: DesiredState;
}

export class AgentDaemon {
  private readonly rulesets: Informer<NpmRuleSet & KubernetesObject>;
  private readonly ipsets: Informer<NpmIPSet & KubernetesObject>;
  private readonly pods: Informer<Pod & KubernetesObject>;
  /** Its own NpmNode (field selector on its name): a deleted one is written again. */
  private readonly self: Informer<KubernetesObject & { status?: NpmNodeStatus }>;
  /** NetworkPolicies: which policies select a new local pod (podstartup.ts). */
  private readonly policies: Informer<NetworkPolicy & KubernetesObject>;
  private readonly startup: PodStartup;
  /** What the kernel holds after the last successful sync (rulesets and set members). */
  private programmed: ProgrammedView | undefined;
  /** Strict found a local pod outside the pod CIDR: the strict rules are off until restart. */
  private strictSuspended = false;
  private readonly lastApplied = new Map<string, NpmRuleSet>();
  /** Sets (kernel names) that some cached ruleset references; undefined: recompute. */
  private referenced: Set<string> | undefined;
  private readonly setCache: SetCache = new Map();
  private forceFull = true;
  private started = false;
  private readonly syncs: Runner;
  /** The NpmNode write: trails the syncs, one at a time (two patches in flight could land out of order). */
  private readonly reports: Runner;
  private tamper: TamperWatcher | undefined;
  /** The next sync re-reads iptables: the tamper check found something. */
  private rereadIptables = false;
  /** The outcome of the latest sync: what the next report writes. */
  private reportError: string | undefined;
  /** The NpmNode status this process last wrote successfully (nothing is written while equal). */
  private written: NpmNodeStatus | undefined;
  /** Kernel counts and rulesets of the last successful sync. */
  private kernel: KernelCounts | undefined;
  private applied: AppliedRuleSet[] = [];
  /** selectLocal's applied list that `applied` was sorted from. */
  private selApplied: readonly AppliedRuleSet[] | undefined;
  private readyCondition: Condition[] = [];
  /** Watch positions of the last successful sync's input (NpmNode status.observed, ADR 0007). */
  private observed: ObservedRevisions | undefined;
  /**
   * Acknowledgments (ADR 0015): what the node has acknowledged or will with its next report
   * (shard -> request stamp; gated local pod -> address), and how many syncs asked for one
   * (`ackWanted`) against the count the last successful report covered (`ackDone`).
   */
  private ackedStamps = new Map<string, string>();
  private ackedPods = new Map<string, string>();
  private ackWanted = 0;
  private ackDone = 0;
  /** Resolves after the first successful sync: /readyz. */
  ready = false;

  constructor(private readonly o: AgentDaemonOptions) {
    const log = (s: string) => o.log(s);
    // The runners wait through the clock and abandon waits through an AbortSignal; the agent's real
    // clock (exec.ts) ignores the signal, and a pending 60 s resync timer would then hold the process
    // for up to a minute after SIGTERM. Same time source, abortable sleep.
    const clock: FrameworkClock = o.clock === agentRealClock ? { now: agentRealClock.now, sleep: abortableClock.sleep } : o.clock;
    const retryMs = o.retryMs ?? 2000;
    const backoff = { initialMs: retryMs, maxMs: Math.max(retryMs, 30_000) };
    this.syncs = new Runner({
      name: 'sync',
      run: (reason) => this.syncNow(reason),
      clock,
      minIntervalMs: o.minIntervalMs ?? 50,
      coalesceMs: o.coalesceMs ?? 25,
      maxIntervalMs: o.resyncMs ?? 60_000,
      periodJitter: o.resyncJitter ?? 0.25,
      backoff,
      // With its causes: the failing command and the kernel tool's message, not only "sync failed".
      onError: (err, delay) => log(`sync failed, kernel keeps its last good state, retrying in ${delay} ms: ${errorChain(err)}`),
    });
    // The report trails the first sync it covers by reportDelayMs and the previous report by as
    // much: the syncs of one change that arrived in pieces (shards written one after another by a
    // busy operator) are reported by one write of the latest state.
    const reportDelay = o.reportDelayMs ?? 20;
    this.reports = new Runner({
      name: 'report',
      run: () => this.report(this.reportError),
      clock,
      minIntervalMs: reportDelay,
      coalesceMs: reportDelay,
      backoff,
      // Retried by the runner: nothing else would wake us up (an idle node does not sync).
      onError: (err, delay) => log(`reporting NpmNode ${o.nodeName} failed, retrying in ${delay} ms: ${formatError(err)}`),
    });
    const via = <T extends KubernetesObject>(r: ResourceRef) => (o.transport ? (o.transport(r) as { listFn: ListFn<T>; watchFn: WatchFn }) : {});
    // Only the rulesets and sets the operator labelled for this node (ADR 0011): an agent neither
    // caches nor wakes up for the rest of the cluster, so a pod event costs the nodes it concerns.
    // select.ts still holds a ruleset back until its sets are complete (the operator labels the
    // sets before the ruleset, but a watch may deliver them in any order).
    const concernsUs = nodeLabelKey(o.nodeName);
    // The caches keep only what the agent reads (trim.ts): a cached Pod is ~10x smaller without its
    // managedFields, volumes and kubelet statuses, and at 10,000 pods that is most of the heap.
    this.rulesets = new Informer({ kc: o.kc, resource: RULESETS, labelSelector: concernsUs, log, resyncMs: 0, transform: trimDesired, ...via(RULESETS) });
    this.ipsets = new Informer({ kc: o.kc, resource: IPSETS, labelSelector: concernsUs, log, resyncMs: 0, transform: trimDesired, ...via(IPSETS) });
    this.pods = new Informer({ kc: o.kc, resource: CORE.pods, fieldSelector: `spec.nodeName=${o.nodeName}`, log, resyncMs: 0, transform: trimPod, ...via(CORE.pods) });
    this.policies = new Informer({ kc: o.kc, resource: CORE.networkPolicies, log, resyncMs: 0, transform: trimPolicy, ...via(CORE.networkPolicies) });
    this.self = new Informer({ kc: o.kc, resource: NODES, fieldSelector: `metadata.name=${o.nodeName}`, log, resyncMs: 0, transform: trimOurs, ...via(NODES) });
    // Deleted (the system:masters escape hatch, a cleanup script): written again at once, since an
    // idle node would otherwise never write it. Edits are not fought: the operator may write
    // conditions of its own there (AgentNotReporting), and two writers reacting to each other loop.
    this.self.onDelete(() => {
      this.written = undefined;
      this.request();
    });
    if (o.podStartup === 'strict' && !o.podCidrs?.length) throw new Error('pod-startup strict needs the node pod CIDR');
    this.startup = new PodStartup(o.podStartup ?? 'open');
    // The moment a pod's address is first seen (npm_pod_unprotected_seconds starts here), taken at
    // the watch event rather than at the next sync.
    const notice = (p: Pod): void => {
      if (this.started) for (const lp of localPodsOf([p])) this.startup.notice(lp, o.clock.now(), true);
    };
    this.pods.onAdd(notice);
    this.pods.onUpdate(notice);
    // An update that changes nothing the agent reads is no reason to sync (issue #10: at 100 nodes
    // these syncs were most of the agents' CPU). The transforms keep only what the agent reads
    // (trim.ts: no status of our objects, a pod's identity, labels and addresses), so two cached
    // versions equal but for resourceVersion mean nothing changed for this node: the operator's
    // status writes on a ruleset (Programmed k/n) and a pod's kubelet conditions wake no agent.
    for (const inf of [this.rulesets, this.pods] as Informer<KubernetesObject>[]) {
      inf.onAdd(() => this.request());
      inf.onUpdate((now, old) => {
        if (!sameButVersion(now, old)) this.request();
      });
      inf.onDelete(() => this.request());
    }
    this.rulesets.onAdd(() => (this.referenced = undefined));
    this.rulesets.onUpdate(() => (this.referenced = undefined));
    this.rulesets.onDelete(() => (this.referenced = undefined));
    // A shard of a set no cached ruleset references changes nothing in the kernel (only referenced
    // sets are programmed): the operator labels a new policy's shards for this node before its
    // ruleset (make-before-break), and syncing for them would cost every such node a second sync
    // per policy create. The ruleset's own event syncs both.
    const concerns = (s: NpmIPSet) => this.referencedSets().has(s.spec.setName);
    this.ipsets.onAdd((s) => {
      if (concerns(s)) this.request();
    });
    this.ipsets.onUpdate((now, old) => {
      if (!sameButVersion(now, old) && (concerns(now) || concerns(old))) this.request();
    });
    this.ipsets.onDelete((s) => {
      if (concerns(s)) this.request();
    });
    // A NetworkPolicy is read only for which local pods it targets (pod startup, ADR 0009): one in
    // a namespace without a local pod cannot change this node's admission, and every agent watches
    // every policy, so syncing for each would wake all N agents per policy change. Nor can one
    // when every local pod is programmed already (the usual case): the policy's NpmRuleSet brings
    // its own sync, and syncing for the policy too cost each of its nodes a second sync per create.
    const hasLocalPodIn = (np: KubernetesObject): boolean => this.startup.hasPending() && this.pods.list().some((p) => p.metadata?.namespace === np.metadata?.namespace);
    this.policies.onAdd((np) => {
      if (hasLocalPodIn(np)) this.request();
    });
    this.policies.onUpdate((np, old) => {
      if (!sameButVersion(np, old) && hasLocalPodIn(np)) this.request();
    });
    this.policies.onDelete((np) => {
      if (hasLocalPodIn(np)) this.request();
    });
  }

  async start(): Promise<void> {
    // Events during the initial lists must not trigger a sync: a sync that sees rulesets but not yet
    // the pods or sets would remove rules the kernel holds (an unprotected window after a restart).
    await Promise.all([this.rulesets.start(), this.ipsets.start(), this.pods.start(), this.policies.start(), this.self.start()]);
    this.started = true;
    this.syncs.start();
    this.reports.start();
    const tamperMs = this.o.tamperCheckMs ?? 1000;
    if (tamperMs > 0) {
      this.tamper = new TamperWatcher({
        check: () => this.o.converger.checkTamper(),
        clock: this.o.clock,
        intervalMs: tamperMs,
        log: (s) => this.o.log(s),
        // Only iptables is re-read for the repair: the check looks at iptables only, and reading
        // every set (most of a full sync's cost at scale) would delay the repair.
        onTamper: () => {
          this.rereadIptables = true;
          this.request();
        },
      });
      this.tamper.start();
    }
    this.request();
  }

  /** Stops the syncs (waiting for a running one) and drops a report not yet started. The kernel keeps its state. */
  async stop(): Promise<void> {
    // No sync starts from here on (the runner stops taking requests at once); a running one ends.
    const syncs = this.syncs.stop();
    await this.tamper?.stop();
    await Promise.all([this.rulesets.stop(), this.ipsets.stop(), this.pods.stop(), this.policies.stop(), this.self.stop()]);
    await syncs;
    await this.reports.stop();
  }

  /**
   * Resolves when no sync or report is running or waiting to run (tests; the CLI before its first
   * Lease renewal). A retry scheduled after a failure does not count: the failure was reported.
   */
  async settled(): Promise<void> {
    while (!this.syncs.isSettled() || !this.reports.isSettled()) {
      await this.syncs.settled();
      await this.reports.settled();
    }
  }

  /** Sets referenced by the cached rulesets (recomputed after a ruleset event). */
  private referencedSets(): Set<string> {
    if (!this.referenced) {
      this.referenced = new Set();
      for (const rs of this.rulesets.list()) for (const ref of rs.spec?.ipsets ?? []) this.referenced.add(ref.name);
    }
    return this.referenced;
  }

  /** Ask for a sync; bursts coalesce into one. */
  request(): void {
    if (this.started) this.syncs.run();
  }

  /**
   * One sync. Throws when the converger gave up (the runner retries later, from the newest state);
   * every outcome is reported.
   */
  private async syncNow(reason: RunReason): Promise<void> {
    const full = this.forceFull || reason === 'periodic';
    this.forceFull = false;
    const rereadIptables = this.rereadIptables;
    this.rereadIptables = false;
    let planned: Planned | undefined;
    let result: SyncResult;
    try {
      // A function, not a state: each attempt of the converger plans from the caches as they are
      // then, so a retry after a failed attempt applies the newest desired state, not this one.
      result = await this.o.converger.sync(() => (planned = this.plan()).desired, { forceFull: full, rereadIptables });
    } catch (err) {
      this.forceFull = true;
      this.scheduleReport(errorChain(err));
      throw err;
    }
    const { pods, sel, targets, admission, observed, desired } = planned!;
    // What each kernel set means (npm_ipset_counts{set_name}), as applied.
    this.o.metrics?.applied(desired.sets);
    this.lastApplied.clear();
    for (const o of sel.objects) if (o.kind === RULESET_KIND) this.lastApplied.set(`${o.metadata.namespace}/${o.metadata.name}`, o);
    this.programmed = appliedView(new Map(this.lastApplied), desired.sets);
    const done = this.startup.synced(pods, targets, new Set(admission.ips), this.programmed, this.o.clock.now());
    for (const sec of done.programmedSeconds) this.o.metrics?.podStartup?.programmed(sec);
    // A waiting pod became ready to enter KNPM-LOCAL: sync again at once, without the minimum interval.
    if (done.followUp) this.syncs.run({ urgent: true });
    this.ready = true;
    for (const d of result.drift) this.o.log(`repaired drift: ${d.kind} ${JSON.stringify(d).slice(0, 200)}`);
    const wrote = linesWritten(result);
    if (wrote) this.o.log(`synced (${full ? 'full' : 'incremental'}): ${sel.applied.length} rulesets, wrote ${wrote} lines in ${result.durationMs.toFixed(0)} ms`);
    // The watch positions move on every event and bookmark; recording them only when the kernel
    // changed keeps NpmNode writes to syncs that changed something, and keeps ADR 0007's
    // guarantee: an older position the kernel state reflects is still true (it proves less), and
    // every change a node must apply is a kernel change there, which moves the position.
    if (wrote + result.drift.length > 0 || !this.observed) this.observed = observed;
    if (this.needsAck(sel.objects, pods)) {
      this.observed = observed;
      this.ackWanted++;
    }
    this.kernel = AgentDaemon.counts(desired, sel.applied.length);
    // selectLocal returns the same array while no entry changed (select.ts): no re-sort, and the
    // report's structural comparison then returns at the identical array.
    if (sel.applied !== this.selApplied) {
      this.selApplied = sel.applied;
      this.applied = [...sel.applied].sort((a, b) => (a.namespace === b.namespace ? (a.name < b.name ? -1 : a.name > b.name ? 1 : 0) : a.namespace < b.namespace ? -1 : 1));
    }
    this.scheduleReport(undefined);
  }

  /** The desired state from the caches as they are now, and what it was computed from. */
  private plan(): Planned {
    const t0 = this.o.clock.now();
    // Read in the same tick as the caches below: an informer updates its cache and its position
    // together, so the state computed here reflects every event up to these resourceVersions.
    const observed: ObservedRevisions = { ipsets: this.ipsets.lastResourceVersion(), pods: this.pods.lastResourceVersion() };
    const pods = localPodsOf(this.pods.list());
    const local = new Set(pods.map((p) => p.ip));
    // Policies of every local pod (admitted or not) are selected: they must be programmed before
    // a new pod enters KNPM-LOCAL.
    const sel = selectLocal(this.rulesets.list(), this.ipsets.list(), local, this.lastApplied);
    for (const h of sel.heldBack) this.o.log(`held back: ${h}`);
    const targets = policyTargets(this.policies.list());
    const next = selectionView(sel.objects.filter((o): o is NpmRuleSet => o.kind === RULESET_KIND), sel.objects.filter((o): o is NpmIPSet => o.kind === IPSET_KIND));
    const admission = this.startup.admit(pods, targets, this.programmed, next, t0);
    for (const w of admission.newlyWaiting) this.o.log(`pod startup: ${w}; its traffic is dropped until then`);
    this.o.metrics?.podStartup?.waiting(admission.waiting);
    // A local pod outside the pod CIDR means the CNI does not allocate from it (e.g. Calico IPAM
    // next to controller-manager CIDRs): other nodes' pods may then hold addresses of "our" CIDR,
    // and dropping them would cut running traffic. Strict is suspended for good, loudly.
    const outside = this.startup.mode === 'strict' && !this.strictSuspended ? pods.find((p) => !inPodCidrs(p.ip, this.o.podCidrs ?? [])) : undefined;
    if (outside) {
      this.strictSuspended = true;
      this.o.log(
        `pod-startup strict SUSPENDED (new pods start unprotected, as with open): pod ${outside.namespace}/${outside.name} has address ${outside.ip} outside the pod CIDR ` +
          `${(this.o.podCidrs ?? []).join(',')}, so the CNI does not allocate from it; give --pod-cidr with the CNI's per-node block, or --pod-startup=open`,
      );
      this.o.metrics?.podStartup?.strict(false);
    }
    const strict = this.startup.mode === 'strict' && !this.strictSuspended;
    const desired = buildDesired(sel.objects, { localPods: strict || this.startup.mode === 'open' ? admission.ips : [...local], cache: this.setCache, ...(strict ? { podCidrs: this.o.podCidrs } : {}) });
    for (const p of desired.problems) this.o.log(`problem: ${p}`);
    return { observed, pods, sel, targets, admission, desired };
  }

  /**
   * Whether the state just applied answers an acknowledgment request: a shard whose request stamp
   * this node has not acknowledged, or a gated local pod at an address it has not (ADR 0015,
   * membership.ts (b) and (c)). Remembers them as acknowledged: the next report writes `observed`,
   * which covers them (a failed report is retried with the newest position, which covers them too).
   */
  private needsAck(objects: readonly (NpmRuleSet | NpmIPSet)[], pods: ReturnType<typeof localPodsOf>): boolean {
    const stamps = new Map<string, string>();
    for (const o of objects) {
      const stamp = o.kind === IPSET_KIND ? o.metadata.annotations?.[ACK_ANNOTATION] : undefined;
      if (stamp !== undefined) stamps.set(o.metadata.name, stamp);
    }
    const gated = new Map<string, string>();
    const local = new Map(pods.map((p) => [`${p.namespace}/${p.name}`, p.ip]));
    for (const p of this.pods.list()) {
      const key = `${p.metadata?.namespace}/${p.metadata?.name}`;
      const ip = local.get(key);
      if (ip !== undefined && isGated(p)) gated.set(key, ip);
    }
    const asked = [...stamps].some(([k, v]) => this.ackedStamps.get(k) !== v) || [...gated].some(([k, v]) => this.ackedPods.get(k) !== v);
    this.ackedStamps = stamps;
    this.ackedPods = gated;
    return asked;
  }

  /**
   * The NpmNode write trails the sync (reports runner): the kernel is programmed at once, the
   * write of the latest outcome follows. A report running now is followed by one more: the state
   * it built may already be old.
   */
  private scheduleReport(error: string | undefined): void {
    this.reportError = error;
    this.reports.run();
  }

  /**
   * Kernel counts of the state just applied. After a successful sync the kernel holds exactly the
   * desired state (full resyncs re-read it and repair any difference), so counting the desired state
   * costs nothing; re-reading the kernel here (iptables-save + ipset list: ~0.3 s at 100k members)
   * would make every incremental sync O(cluster). /node-metrics still reads the kernel itself.
   */
  private static counts(d: DesiredState, policies: number): KernelCounts {
    let rules = d.hook ? 1 : 0;
    for (const r of d.chains.values()) rules += r.length;
    return { ipsets: d.sets.size, chains: policies, rules };
  }

  /**
   * Writes NpmNode status when its content differs from what this process last wrote: compared
   * structurally (key order never matters), so N syncs that change nothing cost no write. Per-sync
   * figures (count, duration, failures, drift repairs) are on /node-metrics, not here: they would
   * make every sync a write. The watch positions (`observed`) alone are a reason to write only when
   * a sync answered an acknowledgment request (needsAck); otherwise they ride along with the next
   * write for another reason.
   */
  private async report(error: string | undefined): Promise<void> {
    const applied = this.applied;
    this.readyCondition = setCondition(
      this.readyCondition,
      !error
        ? { type: 'Ready', status: 'True', reason: 'Synced', message: `programmed ${applied.length} rulesets` }
        : { type: 'Ready', status: 'False', reason: 'SyncFailed', message: error.slice(0, 1000) },
      new Date(),
    );
    const status: NpmNodeStatus = {
      backend: this.o.backend,
      lastError: error ? error.slice(0, 2000) : '',
      // After a failed sync: the kernel kept the last successful sync's state, counts and position.
      ...(this.kernel ? { kernel: this.kernel } : {}),
      applied,
      ...(this.observed ? { observed: this.observed } : {}),
      conditions: this.readyCondition,
    };
    const ack = this.ackWanted;
    const withoutPosition = (s: NpmNodeStatus) => ({ ...s, observed: undefined });
    if (this.written && (ack === this.ackDone ? isDeepStrictEqual(withoutPosition(this.written), withoutPosition(status)) : isDeepStrictEqual(this.written, status))) {
      this.ackDone = ack;
      return;
    }
    this.written = undefined;
    await this.write(status);
    this.written = status;
    this.ackDone = ack;
  }

  private async write(status: NpmNodeStatus): Promise<void> {
    if (this.o.writeStatus) return this.o.writeStatus(status);
    const patch = () => patchObject(this.o.kc, NODES, undefined, this.o.nodeName, { status }, PatchStrategy.MergePatch, 'status');
    try {
      await patch();
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await createObject(this.o.kc, NODES, undefined, { apiVersion: API_VERSION, kind: NODE_KIND, metadata: { name: this.o.nodeName } });
      await patch();
    }
  }
}

/** Two cached versions of one object that differ at most in metadata.resourceVersion. */
function sameButVersion(a: KubernetesObject, b: KubernetesObject): boolean {
  if (a === b) return true;
  const strip = (o: KubernetesObject) => ({ ...o, metadata: { ...o.metadata, resourceVersion: undefined } });
  return isDeepStrictEqual(strip(a), strip(b));
}
