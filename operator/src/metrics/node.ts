/**
 * Node agent metrics (prom-client), on a registry the caller owns (never the global default).
 *
 * Kernel-state gauges are read from the kernel at scrape time through the injected Exec
 * (`iptables-save -t filter` and `ipset list -o save`, our objects only), cached for `cacheMs`
 * (default 2 s) so that several scrapes in a row cost one read:
 *   npm_num_policies        policies whose chains are in the kernel (counted from the "<ns>/<name>"
 *                           comment of each direction-chain jump)
 *   npm_num_iptables_rules  rules in our chains plus our FORWARD hook rule(s)
 *   npm_num_ipsets          our sets; npm_num_ipset_entries: their members
 *   npm_ipset_counts{set_name,set_hash}: members per set. As in Azure NPM set_hash is the kernel
 *                           name (ours already is a hash); set_name is what the set means in words
 *                           (clamped to 100 chars): the meaning the NpmRuleSets give it
 *                           (spec.ipsets[].meaning, carried into the agent's desired state), handed
 *                           over by applied() after each successful sync (by reference: the desired
 *                           state is immutable once built, so this costs nothing per sync). A set of
 *                           ours the last desired state does not name (a temp set mid-replacement, a
 *                           leftover the next sync destroys) keeps its kernel name as set_name.
 * Timings, all in SECONDS (Azure NPM's names, our units; docs/metrics.md): npm_add_policy_exec_time
 * (a sync that wrote policy chains), npm_add_iptables_rule_exec_time (one iptables-restore),
 * npm_add_ipset_exec_time (one ipset restore): summaries with quantiles 0.5/0.9/0.99 over a sliding
 * 10-minute window (5 age buckets), Azure's window; kubenpm_sync_duration_seconds (every sync).
 * Counters: kubenpm_restore_failures_total{tool}, kubenpm_drift_repairs_total{kind}, and the syncs
 * by result in kubenpm_sync_duration_seconds_count{result}. Every label value they can take is
 * exported at 0 from start-up: a series that appears only at its first increment is invisible to
 * rate()/increase() for that first burst (they need two samples).
 * Pod startup (ADR 0009): npm_pod_unprotected_seconds (histogram, defined in its HELP),
 * kubenpm_pod_startup_waiting, kubenpm_pod_startup_strict.
 * Process and Node.js runtime metrics (prom-client's defaults, e.g. process_cpu_seconds_total,
 * process_resident_memory_bytes, nodejs_heap_size_used_bytes, nodejs_eventloop_lag_p99_seconds)
 * unless `processMetrics: false` (several registries in one process, e.g. tests).
 * `observer` plugs the timings/counters into a Converger.
 */
import { Counter, Gauge, Histogram, Registry, Summary } from 'prom-client';
import { registerRuntimeMetrics } from './runtime.js';
import { binaries, type Backend } from '../agent/backend.js';
import type { ConvergeObserver } from '../agent/converge.js';
import { realClock, type Clock, type Exec } from '../agent/exec.js';
import { parseIptablesSave } from '../agent/iptables/parse.js';
import { parseIpsetSave } from '../agent/ipset/parse.js';
import { tokenize } from '../agent/iptables/parse.js';
import { CHAIN_EGRESS, CHAIN_INGRESS } from '../api/names.js';
import type { DriftKind } from '../agent/plan.js';

export interface NodeMetricsOptions {
  exec: Exec;
  backend: Backend;
  /** The agent's --pod-startup mode, exported as kubenpm_pod_startup_strict (1 strict, 0 open). */
  podStartup?: 'strict' | 'open';
  registry?: Registry;
  clock?: Clock;
  cacheMs?: number;
  /**
   * Kernel set name -> meaning, for the set_name label. Default: the sets handed to applied(); a
   * name missing from both keeps its kernel name.
   */
  meanings?: () => ReadonlyMap<string, string>;
  /** process_* and nodejs_* metrics on this registry (default true; they watch GC and the event loop process-wide). */
  processMetrics?: boolean;
}

export interface KernelCounts {
  policies: number;
  rules: number;
  sets: { name: string; members: number }[];
}

/** Pod startup (agent/podstartup.ts, docs/adr/0009-pod-startup.md). */
export interface PodStartupMetrics {
  /** The node became programmed for a new local pod, `seconds` after the agent saw its address. */
  programmed(seconds: number): void;
  /** Local pods kept out of KNPM-LOCAL (strict: their traffic is dropped) after the last plan. */
  waiting(pods: number): void;
  /** Strict mode switched off at run time (the pod CIDR does not describe this node's pods). */
  strict(on: boolean): void;
}

export interface NodeMetrics {
  registry: Registry;
  observer: ConvergeObserver;
  podStartup?: PodStartupMetrics;
  /** The (cached) kernel read behind the gauges. */
  kernelCounts(): Promise<KernelCounts>;
  /**
   * The sets of the desired state the last successful sync applied (DesiredState.sets): the
   * meanings npm_ipset_counts labels set_name with. Kept by reference, never copied or mutated.
   */
  applied(sets: ReadonlyMap<string, { readonly meaning: string }>): void;
}

/**
 * Every DriftKind (agent/plan.ts), to export kubenpm_drift_repairs_total{kind} at 0 from start-up.
 * A Record, so that a kind added to the union and missing here fails to compile.
 */
const DRIFT_KINDS: Record<DriftKind, true> = {
  chain_missing: true, chain_flushed: true, chain_reordered: true, chain_foreign_rule: true, chain_modified: true, chain_extra: true,
  hook: true, set_missing: true, set_header: true, set_members_missing: true, set_members_extra: true, set_extra: true,
};
export const driftKinds = Object.keys(DRIFT_KINDS) as DriftKind[];

/** The results of kubenpm_sync_duration_seconds: a converged sync, and one that gave up after its retries. */
export const SYNC_RESULTS = ['ok', 'error'] as const;

const PERCENTILES = [0.5, 0.9, 0.99];
/**
 * Summary window: Azure NPM's (client_golang's default MaxAge 10 min in 5 age buckets), so that
 * npm_*_exec_time quantiles describe the last 10 minutes there and here (docs/metrics.md).
 */
export const SUMMARY_WINDOW = { maxAgeSeconds: 600, ageBuckets: 5 } as const;

export async function readKernelCounts(exec: Exec, backend: Backend): Promise<KernelCounts> {
  const save = await exec([binaries(backend).save, '-t', 'filter']);
  if (save.code !== 0) throw new Error(`iptables-save failed: ${save.stderr.trim()}`);
  const list = await exec(['ipset', 'list', '-o', 'save']);
  if (list.code !== 0) throw new Error(`ipset list failed: ${list.stderr.trim()}`);
  const ipt = parseIptablesSave(save.stdout);
  let rules = ipt.hook.copies.length;
  const policies = new Set<string>();
  for (const [chain, rs] of ipt.chains) {
    rules += rs.length;
    if (chain !== CHAIN_INGRESS && chain !== CHAIN_EGRESS) continue;
    for (const r of rs) {
      const t = tokenize(r);
      const c = t.indexOf('--comment');
      const policy = c >= 0 ? t[c + 1]?.split(' ')[0] : undefined;
      if (policy?.includes('/')) policies.add(policy);
    }
  }
  const sets = [...parseIpsetSave(list.stdout).values()].map((s) => ({ name: s.name, members: s.members.size }));
  return { policies: policies.size, rules, sets };
}

export function createNodeMetrics(opts: NodeMetricsOptions): NodeMetrics {
  const registry = opts.registry ?? new Registry();
  const clock = opts.clock ?? realClock;
  const cacheMs = opts.cacheMs ?? 2000;
  let cached: { at: number; value: Promise<KernelCounts> } | undefined;
  const kernelCounts = (): Promise<KernelCounts> => {
    const now = clock.now();
    if (!cached || now - cached.at > cacheMs) {
      const value = readKernelCounts(opts.exec, opts.backend);
      // A failed read is not cached: the next scrape tries again.
      value.catch(() => {
        if (cached?.value === value) cached = undefined;
      });
      cached = { at: now, value };
    }
    return cached.value;
  };
  const registers = [registry];
  new Gauge({ name: 'npm_num_policies', help: 'Network policies programmed in the kernel (read at scrape time)', registers, async collect() { this.set((await kernelCounts()).policies); } });
  new Gauge({ name: 'npm_num_iptables_rules', help: 'iptables rules kube-npm owns in the kernel (read at scrape time)', registers, async collect() { this.set((await kernelCounts()).rules); } });
  new Gauge({ name: 'npm_num_ipsets', help: 'ipsets kube-npm owns in the kernel (read at scrape time)', registers, async collect() { this.set((await kernelCounts()).sets.length); } });
  new Gauge({
    name: 'npm_num_ipset_entries', help: 'Members of all ipsets kube-npm owns (read at scrape time)', registers,
    async collect() { this.set((await kernelCounts()).sets.reduce((a, s) => a + s.members, 0)); },
  });
  let appliedSets: ReadonlyMap<string, { readonly meaning: string }> = new Map();
  const meaningOf = (name: string, given: ReadonlyMap<string, string> | undefined): string => given?.get(name) ?? appliedSets.get(name)?.meaning ?? name;
  new Gauge({
    name: 'npm_ipset_counts',
    help:
      'Members per ipset of kube-npm in the kernel (read at scrape time). set_hash: the kernel name; set_name: what the set holds in words, ' +
      'as the NpmRuleSets say (spec.ipsets[].meaning, e.g. "pods with app=web in namespace demo"), clamped to 100 characters; ' +
      'a set the last applied desired state does not name (a temp set mid-replacement, a leftover the next sync destroys) has its kernel name there',
    labelNames: ['set_name', 'set_hash'], registers,
    async collect() {
      const counts = await kernelCounts();
      const given = opts.meanings?.();
      this.reset();
      for (const s of counts.sets) this.set({ set_name: meaningOf(s.name, given).slice(0, 100), set_hash: s.name }, s.members);
    },
  });
  // SECONDS, where Azure NPM's metrics of the same names record milliseconds (docs/metrics.md).
  const window = " (SECONDS, unlike Azure NPM's milliseconds; quantiles over the last 10 minutes)";
  const policyTime = new Summary({ name: 'npm_add_policy_exec_time', help: `Duration of a sync that wrote policy chains${window}`, percentiles: PERCENTILES, ...SUMMARY_WINDOW, registers });
  const ruleTime = new Summary({ name: 'npm_add_iptables_rule_exec_time', help: `Duration of one iptables-restore${window}`, percentiles: PERCENTILES, ...SUMMARY_WINDOW, registers });
  const ipsetTime = new Summary({ name: 'npm_add_ipset_exec_time', help: `Duration of one ipset restore${window}`, percentiles: PERCENTILES, ...SUMMARY_WINDOW, registers });
  const syncTime = new Histogram({
    name: 'kubenpm_sync_duration_seconds', help: 'Duration in seconds of a sync (all attempts), by result: ok, or error when it gave up after its retries (_count{result="error"} counts failed syncs)',
    labelNames: ['result'], buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30], registers,
  });
  const failures = new Counter({ name: 'kubenpm_restore_failures_total', help: 'Failed restore processes, by tool (ipset, iptables)', labelNames: ['tool'], registers });
  const repairs = new Counter({ name: 'kubenpm_drift_repairs_total', help: `Kernel drift found and repaired, by kind (${driftKinds.join(', ')})`, labelNames: ['kind'], registers });
  // Every label value at 0 from start-up (see the header).
  for (const tool of ['ipset', 'iptables'] as const) failures.inc({ tool }, 0);
  for (const kind of driftKinds) repairs.inc({ kind }, 0);
  for (const result of SYNC_RESULTS) syncTime.zero({ result });
  const observer: ConvergeObserver = {
    restore(tool, _phase, seconds, ok) {
      (tool === 'iptables' ? ruleTime : ipsetTime).observe(seconds);
      if (!ok) failures.inc({ tool });
    },
    drift(kind, count) {
      repairs.inc({ kind }, count);
    },
    sync(r) {
      syncTime.observe({ result: 'ok' }, r.durationMs / 1000);
      if (r.plan.iptables.changed.some((c) => c.startsWith('KNPM-I-') || c.startsWith('KNPM-E-'))) policyTime.observe(r.durationMs / 1000);
    },
    syncFailed(_e, seconds) {
      syncTime.observe({ result: 'error' }, seconds);
    },
  };
  // Buckets from "the sync right after the watch event" to "the operator was down for a minute".
  const unprotected = new Histogram({
    name: 'npm_pod_unprotected_seconds',
    help:
      'Per new local pod: seconds from this agent seeing the pod with its IP (the watch event of the pod update carrying status.podIP; ' +
      'the network is up slightly before, when the kubelet writes it) to the end of the sync after which every NetworkPolicy selecting the pod is programmed ' +
      'on this node with the pod in its target set (and, with pod_startup strict, the pod is in KNPM-LOCAL). With open mode the pod was reachable, and ' +
      'could reach out, without its policies for this long; with strict mode its traffic was dropped instead. Pods running before the agent started are not counted.',
    buckets: [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers,
  });
  const waiting = new Gauge({ name: 'kubenpm_pod_startup_waiting', help: 'Local pods the node is not yet programmed for (with pod_startup strict their traffic is dropped until it is)', registers });
  const strict = new Gauge({ name: 'kubenpm_pod_startup_strict', help: '1 when new pods start isolated (--pod-startup strict: unknown addresses of the node pod CIDR are dropped), 0 when open or suspended', registers });
  strict.set(opts.podStartup === 'strict' ? 1 : 0);
  const podStartup: PodStartupMetrics = {
    programmed: (seconds) => unprotected.observe(seconds),
    waiting: (n) => waiting.set(n),
    strict: (on) => strict.set(on ? 1 : 0),
  };
  if (opts.processMetrics !== false) registerRuntimeMetrics(registry);
  return {
    registry, observer, kernelCounts, podStartup,
    applied: (sets) => {
      appliedSets = sets;
    },
  };
}
