/**
 * The CPU of one agent sync's planning, without a kernel (issue #10): figures, not pass/fail.
 *
 *   npx tsx test/bench/agent-plan.bench.ts [--nodes N] [--pods P] [--policies K] [--reps R] [--profile]
 *   (defaults N=10, P=10,000, K=1,000 in 100 namespaces, R=30: node-0 then programs ~750 rulesets,
 *   ~1,000 local pods and ~40,000 restore lines, the node bench:scale measured at ~33 ms a sync)
 *
 * The seeded cluster of bench:scale (test/bench/synthetic.ts, the same pseudo-random placement of
 * pods on nodes) is translated in-process (translate/engine.ts); node-0 caches the NpmRuleSets and
 * NpmIPSets that concern it (ADR 0011: a ruleset whose target sets hold a node-0 pod, and the sets
 * such rulesets reference), its own pods and every NetworkPolicy. One "sync" is what
 * AgentDaemon.plan() + Converger.syncOnce do before writing, in the same order on the same modules:
 *   plan   localPodsOf, selectLocal, policyTargets, selectionView, PodStartup.admit, buildDesired
 *          (with the daemon's SetCache and lastApplied), i.e. daemon.ts plan();
 *   diff   planSync(desired, applied) against the kernel model the converger keeps (plan.ts
 *          appliedState of the previous sync), then appliedState for the next one.
 * The input objects keep their identity between syncs unless they changed, as the informers keep
 * them (framework/informer.ts replaces an object only on its event). Timed cases, median and p90
 * of R repetitions of the process's CPU time (process.cpuUsage: on a shared machine wall time
 * follows the load; the plan phases are wall time). The garbage a sync leaves is collected during
 * later syncs and billed to them, as in the daemon (a GC forced before each sync would bill its
 * concurrent sweeping, on V8's helper threads, to the next one instead):
 *   full          every object new (a restart's first plan: no identity survives) against the last
 *                 applied state;
 *   no change     the same objects again (a sync woken for nothing that reaches the kernel);
 *   member added  one shard of a set node-0 uses gets one more member (a pod added elsewhere);
 *   ruleset added one more NpmRuleSet for node-0 (a copy of one of its rulesets under a new
 *                 name, chains and target set renamed) with its set.
 * Each incremental case is undone before the next repetition (the reverse change, not timed).
 * --profile writes a .cpuprofile of the incremental cases to the working directory.
 *
 * Figures, 2026-12-01, node 20.20.2, the shared 2-core machine at load 5-9 (other sessions'
 * tests), median CPU ms of plan + diff, 60 repetitions, two runs interleaved, bundled with esbuild
 * and run in plain node (`esbuild ... --bundle --platform=node --format=esm --packages=external`;
 * under tsx the figures are ~1.5x, the loader's thread included). node-0: 709 rulesets, 540
 * shards, 1,010 local pods, 56,547 restore lines from an empty kernel:
 *   case            before (HEAD 5fa7ba5)   after (memoized planning, 27eb65b+)
 *   no change       30.3 / 27.7             3.7 / 5.5 / 4.7
 *   member added    30.6 / 27.3             3.8 / 5.5 / 4.5
 *   ruleset added   33.3 / 29.0             5.2 / 8.1 / 6.2
 *   full (new objs) 70.6 / 73.0             71.3 / 69.5 / 68.6
 * Where the time went before: selectionView gathering every set's members (40k) on each sync, the
 * ruleset validation and rendering of every chain (quoteArg/formatArgs), compiling every policy's
 * selector, guardsLocal scanning target shards, and the garbage all of it left. After: O(objects)
 * identity checks (WeakMap lookups, ~1,250 objects), the selection's loop over the rulesets, the
 * diff's sort of set names (ipset/plan.ts) and the direction-chain patch (iptables/plan.ts).
 */
import { Session } from 'node:inspector';
import { writeFileSync } from 'node:fs';
import { performance } from 'node:perf_hooks';
import { pathToFileURL } from 'node:url';
import { appliedState, planSync, type ActualState } from '../../operator/src/agent/plan.js';
import { buildDesired, type DesiredState, type SetCache } from '../../operator/src/agent/model.js';
import { selectLocal } from '../../operator/src/agent/select.js';
import { PodStartup, appliedView, localPodsOf, policyTargets, selectionView, type ProgrammedView } from '../../operator/src/agent/podstartup.js';
import { IPSET_KIND, RULESET_KIND, type NpmIPSet, type NpmRuleSet } from '../../operator/src/api/types.js';
import { translate } from '../../operator/src/translate/engine.js';
import type { NetworkPolicy, Pod } from '../../operator/src/translate/k8s.js';
import { rng, syntheticCluster } from './synthetic.js';

const arg = (name: string, dflt: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i < 0 ? dflt : Number(process.argv[i + 1]);
};
const NODES = arg('nodes', 10);
const PODS = arg('pods', 10_000);
const POLICIES = arg('policies', 1_000);
const REPS = arg('reps', 30);
const PROFILE = process.argv.includes('--profile');

/** Same placement as bench:scale and bench:agent-memory: seeded pseudo-random per pod. */
const nodeOf = (i: number, n: number): number => rng(i * 2654435761 + 17).int(n);

/** CPU time of this process (user + system, every thread: V8's GC helpers too), ms: robust on a shared machine. */
const cpuMs = (): number => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1000;
};


interface NodeCaches {
  rulesets: NpmRuleSet[];
  ipsets: NpmIPSet[];
  pods: Pod[];
  policies: NetworkPolicy[];
}

export function buildNode(): NodeCaches {
  const snap = syntheticCluster({ namespaces: 100, pods: PODS, policies: POLICIES, seed: 42 });
  for (const p of snap.pods) p.spec!.nodeName = `node-${nodeOf(Number(p.metadata.name!.slice(4)), NODES)}`;
  const nodeOfIP = new Map(snap.pods.map((p) => [p.status!.podIP!, p.spec!.nodeName!]));
  const { items } = translate(snap);
  const sets = items.filter((x): x is NpmIPSet => x.kind === IPSET_KIND);
  const shardsOf = new Map<string, NpmIPSet[]>();
  for (const s of sets) shardsOf.set(s.spec.setName, [...(shardsOf.get(s.spec.setName) ?? []), s]);
  const rulesets: NpmRuleSet[] = [];
  const used = new Set<string>();
  let rv = 1000;
  for (const rs of items.filter((x): x is NpmRuleSet => x.kind === RULESET_KIND)) {
    const mine = rs.spec.chains.some((c) => (shardsOf.get(c.targetSet) ?? []).some((sh) => sh.spec.members.some((m) => nodeOfIP.get(m) === 'node-0')));
    if (!mine) continue;
    rulesets.push({ ...rs, metadata: { ...rs.metadata, resourceVersion: String(rv++), generation: 1 } });
    for (const r of rs.spec.ipsets) used.add(r.name);
  }
  const ipsets = sets.filter((s) => used.has(s.spec.setName)).map((s) => ({ ...s, metadata: { ...s.metadata, resourceVersion: String(rv++) } }));
  return { rulesets, ipsets, pods: snap.pods.filter((p) => p.spec!.nodeName === 'node-0'), policies: snap.policies };
}

/** A deep copy: every object new, as after a restart (nothing memoized by identity applies). */
const fresh = <T>(xs: T[]): T[] => structuredClone(xs);

/** The daemon's state between syncs (daemon.ts fields of the same names) and the converger's model. */
class Agent {
  readonly lastApplied = new Map<string, NpmRuleSet>();
  readonly setCache: SetCache = new Map();
  readonly startup = new PodStartup('open');
  programmed: ProgrammedView | undefined;
  /** The last plan's phases, ms: local pods, selectLocal, targets + admission, buildDesired. */
  phases: number[] = [];
  applied: ActualState = { sets: new Map(), iptables: { chains: new Map(), hook: { copies: [], first: '' } } };

  /** daemon.ts plan() without its logging and metrics. */
  plan(c: NodeCaches): { desired: DesiredState; sel: ReturnType<typeof selectLocal> } {
    const t0 = performance.now();
    const pods = localPodsOf(c.pods);
    const local = new Set(pods.map((p) => p.ip));
    const t1 = performance.now();
    const sel = selectLocal(c.rulesets, c.ipsets, local, this.lastApplied);
    const t2 = performance.now();
    const targets = policyTargets(c.policies);
    const next = selectionView(sel.objects.filter((o): o is NpmRuleSet => o.kind === RULESET_KIND), sel.objects.filter((o): o is NpmIPSet => o.kind === IPSET_KIND));
    const admission = this.startup.admit(pods, targets, this.programmed, next, 0);
    const t3 = performance.now();
    const desired = buildDesired(sel.objects, { localPods: admission.ips, cache: this.setCache });
    const t4 = performance.now();
    this.phases = [t1 - t0, t2 - t1, t3 - t2, t4 - t3];
    return { desired, sel };
  }

  /** Converger.syncOnce's planning (incremental: against its model) and daemon.syncNow's bookkeeping. */
  diff(d: DesiredState, sel: ReturnType<typeof selectLocal>): number {
    const p = planSync(d, this.applied);
    this.applied = appliedState(d, this.applied);
    this.lastApplied.clear();
    for (const o of sel.objects) if (o.kind === RULESET_KIND) this.lastApplied.set(`${o.metadata.namespace}/${o.metadata.name}`, o);
    this.programmed = appliedView(new Map(this.lastApplied), d.sets);
    return p.ipset.apply.length + p.ipset.destroy.length + p.iptables.lines.length;
  }
}

interface Timing {
  phases?: number[][];
  plan: number[];
  diff: number[];
  lines: number[];
}

function once(agent: Agent, c: NodeCaches, t: Timing): void {
  const t0 = cpuMs();
  const { desired, sel } = agent.plan(c);
  const t1 = cpuMs();
  const lines = agent.diff(desired, sel);
  const t2 = cpuMs();
  t.plan.push(t1 - t0);
  (t.phases ??= []).push(agent.phases);
  t.diff.push(t2 - t1);
  t.lines.push(lines);
}

const q = (xs: number[], p: number): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(p * xs.length))]!;
const fmt = (xs: number[]): string => `median ${q(xs, 0.5).toFixed(2)} ms, p90 ${q(xs, 0.9).toFixed(2)} ms`;

function report(name: string, t: Timing): void {
  const total = t.plan.map((x, i) => x + t.diff[i]!);
  console.log(`  ${name.padEnd(15)} plan ${fmt(t.plan)} | diff ${fmt(t.diff)} | plan+diff ${fmt(total)} | lines ${q(t.lines, 0.5)}`);
  const ph = ['local pods', 'selectLocal', 'targets+admit', 'buildDesired'].map((n, i) => `${n} ${q(t.phases!.map((p) => p[i]!), 0.5).toFixed(2)}`);
  console.log(`  ${''.padEnd(15)} plan phases, median ms: ${ph.join(', ')}`);
}

/** One more member in the first shard of a set whose ruleset node-0 programs (a new object, as a watch event gives). */
function withMember(c: NodeCaches, ip: string): { caches: NodeCaches; undo: NodeCaches } {
  const i = c.ipsets.findIndex((s) => s.spec.type === 'hash:ip' && s.spec.members.length > 10);
  const sh = c.ipsets[i]!;
  const ipsets = [...c.ipsets];
  ipsets[i] = { ...sh, metadata: { ...sh.metadata, resourceVersion: `${sh.metadata.resourceVersion}1` }, spec: { ...sh.spec, members: [...sh.spec.members, ip] } };
  return { caches: { ...c, ipsets }, undo: c };
}

/** One more ruleset (a renamed copy of one node-0 programs, with its own copy of its target set). */
function withRuleset(c: NodeCaches, n: number): NodeCaches {
  const src = c.rulesets.find((rs) => rs.spec.chains.length > 0 && rs.spec.chains.every((ch) => ch.rules.length > 0))!;
  const rename = (s: string): string => `${s.slice(0, 20)}x${n}`;
  const targets = new Set(src.spec.chains.map((ch) => ch.targetSet));
  const name = `bench-added-${n}`;
  const rs: NpmRuleSet = {
    ...src,
    metadata: { ...src.metadata, name, uid: `bench-${n}`, resourceVersion: String(900000 + n) },
    spec: {
      ...src.spec,
      policy: { ...src.spec.policy, name },
      chains: src.spec.chains.map((ch) => ({ ...ch, name: rename(ch.name), targetSet: rename(ch.targetSet) })),
      ipsets: src.spec.ipsets.map((r) => (targets.has(r.name) ? { ...r, name: rename(r.name) } : r)),
    },
  };
  const shards = c.ipsets.filter((s) => targets.has(s.spec.setName)).map((s) => ({ ...s, metadata: { ...s.metadata, name: `${s.metadata.name}-x${n}` }, spec: { ...s.spec, setName: rename(s.spec.setName) } }));
  return { ...c, rulesets: [...c.rulesets, rs], ipsets: [...c.ipsets, ...shards] };
}

function main(): void {
  const tb = performance.now();
  const base = buildNode();
  console.log(`bench agent-plan: node-0 of N=${NODES}, P=${PODS}, K=${POLICIES}: ${base.rulesets.length} rulesets, ${base.ipsets.length} shards, ${base.pods.length} local pods, ${base.policies.length} policies (built in ${((performance.now() - tb) / 1000).toFixed(1)} s; ${process.version}})`);
  const agent = new Agent();
  // The first sync (from an empty kernel model): its line count is the size of the node's state.
  const first: Timing = { plan: [], diff: [], lines: [] };
  once(agent, base, first);
  report('first sync', first);

  const full: Timing = { plan: [], diff: [], lines: [] };
  for (let r = 0; r < REPS; r++) once(agent, { rulesets: fresh(base.rulesets), ipsets: fresh(base.ipsets), pods: fresh(base.pods), policies: fresh(base.policies) }, full);
  // Back to the base objects (identity), untimed.
  once(agent, base, { plan: [], diff: [], lines: [] });
  const same: Timing = { plan: [], diff: [], lines: [] };
  const member: Timing = { plan: [], diff: [], lines: [] };
  const added: Timing = { plan: [], diff: [], lines: [] };
  const session = PROFILE ? new Session() : undefined;
  if (session) {
    session.connect();
    session.post('Profiler.enable');
    session.post('Profiler.start');
  }
  const untimed: Timing = { plan: [], diff: [], lines: [] };
  for (let r = 0; r < REPS; r++) {
    once(agent, base, same);
    const m = withMember(base, `10.99.${r >> 8}.${r & 255}`);
    once(agent, m.caches, member);
    once(agent, m.undo, untimed);
    once(agent, withRuleset(base, r), added);
    once(agent, base, untimed);
  }
  if (session) {
    session.post('Profiler.stop', (err, res) => {
      if (err) throw err;
      const file = `agent-plan-${process.pid}.cpuprofile`;
      writeFileSync(file, JSON.stringify(res.profile));
      console.log(`  profile of the incremental cases: ${file}`);
    });
  }
  report('full (new objs)', full);
  report('no change', same);
  report('member added', member);
  report('ruleset added', added);
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) main();
