/**
 * npm run bench:agent — figures, not pass/fail. Needs root.
 *
 * For each iptables backend (nft, legacy), in a fresh network namespace of its own (created here,
 * deleted afterwards, also on failure or Ctrl-C; the root namespace's iptables/ipsets are never
 * touched), converges the seeded synthetic cluster (test/bench/synthetic.ts) with the agent's
 * Converger and prints, per operation: agent time, kernel lines written, and where it makes sense
 * the kernel floor measured in the same run with the raw tools and the ratio agent/floor.
 *
 *   full apply     Converger.sync from an empty kernel.
 *                  floor: `ipset save` + `iptables-save -t filter` of the result, everything flushed
 *                  and destroyed, then the dump restored with `ipset restore` + `iptables-restore`.
 *   pod add/remove TranslationEngine.upsertPod / deletePod, drain, buildDesired(engine.all()), sync.
 *                  Twice: each ipset write by a new `ipset restore` (a process per change), then
 *                  through the long-lived ipset session (ipset/session.ts, ADR 0010); "ipset write"
 *                  in the notes is the write alone (goal <= 2 ms through the session).
 *   policy change  one policy's ports changed; floor: the same change of just that policy's chain
 *                  (declare + its rules) by one `iptables-restore --noflush`.
 *   policy delete  deletePolicy, sync (and the re-add, to restore the state).
 *   no-op resync   sync with forceFull (full re-read of the kernel): must write 0 lines.
 *   tamper check   Converger.checkTamper (agent/tamper.ts; the daemon runs one per second): ms per
 *                  check, the same at 10 policies for comparison; then KNPM-INGRESS flushed / the
 *                  hook deleted by hand: check + repair (iptables re-read) = detection to repair
 *                  (plus up to one interval until the next check).
 *
 * The script re-runs itself inside each namespace (`ip netns exec NS node --expose-gc ...`), so the
 * agent's commands cost what they cost on a node (no per-command `ip netns exec`), and a major GC
 * is forced before every timed step, so garbage from building the model is not billed to the sync.
 *
 * "agent ms" is Converger.sync alone (read/plan/write). Building the desired state from the objects
 * (engine.all() + buildDesired) is O(cluster) and printed separately ("model ms"), because a
 * daemon may or may not rebuild it from scratch per event.
 *
 * Size: KNPM_BENCH_SIZE=full (20000 pods, 1000 policies, the default) or small (2000 pods, 100
 * policies); KNPM_BENCH_PODS / KNPM_BENCH_POLICIES override; KNPM_BENCH_BACKENDS=nft,legacy;
 * KNPM_BENCH_REPS (pod add/remove repetitions, default 20).
 */
import { execFileSync, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Converger, type SyncResult } from '../../operator/src/agent/converge.js';
import { realExec, realSpawn, type Exec } from '../../operator/src/agent/exec.js';
import { IpsetSession } from '../../operator/src/agent/ipset/session.js';
import type { Backend } from '../../operator/src/agent/backend.js';
import { buildDesired, cleanupDesired, type DesiredState, type SetCache } from '../../operator/src/agent/model.js';
import { TranslationEngine, translate } from '../../operator/src/translate/engine.js';
import type { NetworkPolicy } from '../../operator/src/translate/k8s.js';
import { syntheticCluster, syntheticPod } from './synthetic.js';
import { assertValidSnapshot } from './validate.js';

const TARGETS = { fullRatio: 1.3, podMs: 15, podKernelMs: 2, policyRatio: 2 };

const SIZE = process.env.KNPM_BENCH_SIZE === 'small' ? { pods: 2000, policies: 100 } : { pods: 20000, policies: 1000 };
const PODS = Number(process.env.KNPM_BENCH_PODS ?? SIZE.pods);
const POLICIES = Number(process.env.KNPM_BENCH_POLICIES ?? SIZE.policies);
const REPS = Number(process.env.KNPM_BENCH_REPS ?? 20);
const BACKENDS = (process.env.KNPM_BENCH_BACKENDS ?? 'nft,legacy').split(',').map((s) => s.trim()) as Backend[];
const NAMESPACES = 100;

// ---------------------------------------------------------------- network namespaces

const PREFIX = `knpm-${process.pid}-${randomBytes(3).toString('hex')}-bench-`;
const live = new Set<string>();

function newNetns(suffix: string): string {
  const name = `${PREFIX}${suffix}`;
  execFileSync('ip', ['netns', 'add', name]);
  live.add(name);
  return name;
}

function delNetns(name: string): void {
  if (!live.delete(name)) return;
  try {
    execFileSync('ip', ['netns', 'del', name], { stdio: 'ignore' });
  } catch {
    console.error(`warning: could not delete network namespace ${name}`);
  }
}

function delAll(): void {
  for (const n of [...live]) delNetns(n);
}

process.on('exit', delAll);
for (const sig of ['SIGINT', 'SIGTERM'] as const) {
  process.on(sig, () => {
    delAll();
    process.exit(130);
  });
}

// ---------------------------------------------------------------- measuring

interface Call {
  cmd: string;
  ms: number;
  lines: number;
}

/** realExec (in the current network namespace), recording every command with its duration and input lines. */
function recordingExec(): { exec: Exec; take: () => Call[] } {
  const inner = realExec({ timeoutMs: 300_000 });
  let calls: Call[] = [];
  const exec: Exec = async (argv, stdin) => {
    const t = performance.now();
    const r = await inner(argv, stdin);
    const cmd = argv.filter((a, i) => a !== '-w' && argv[i - 1] !== '-w' && a !== '-t' && argv[i - 1] !== '-t').join(' ');
    calls.push({ cmd, ms: performance.now() - t, lines: stdin ? stdin.split('\n').length - 1 : 0 });
    return r;
  };
  return {
    exec,
    take: () => {
      const c = calls;
      calls = [];
      return c;
    },
  };
}

/** Policies of the tiny state the tamper check is also timed on. */
const TINY_POLICIES = 10;

/**
 * Times `n` tamper checks, each next to as many spawns of `true` as the check runs commands (the
 * process cost under the machine's current load: on a shared machine the absolute figures move a
 * lot, the ratio much less). A finding on an untouched kernel is a bug, said loudly.
 */
async function timeChecks(conv: Converger, exec: Exec, n = 20): Promise<{ checks: number[]; spawns: number[]; ratio: number }> {
  const checks: number[] = [];
  const spawns: number[] = [];
  for (let i = 0; i < n; i++) {
    let t = performance.now();
    const f = await conv.checkTamper();
    checks.push(performance.now() - t);
    if (f.length) console.log(`  !!! tamper check found something on an untouched kernel: ${f.join('; ')}`);
    t = performance.now();
    for (let k = 0; k < (conv.bin.backend === 'nft' ? 5 : 1); k++) await exec(['true']);
    spawns.push(performance.now() - t);
  }
  return { checks, spawns, ratio: median(checks) / median(spawns) };
}

async function sh(exec: Exec, argv: string[], stdin?: string): Promise<string> {
  const r = await exec(argv, stdin);
  if (r.code !== 0) throw new Error(`${argv.join(' ')} failed (${r.code}): ${r.stderr.trim()}`);
  return r.stdout;
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  if (s.length === 0) return NaN;
  const m = Math.floor(s.length / 2);
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

function max(xs: number[]): number {
  return xs.reduce((a, b) => Math.max(a, b), Number.NEGATIVE_INFINITY);
}

/** Forces a major GC when run with --expose-gc (the child is), so garbage left by building the model is not billed to the next timed sync. */
function gc(): void {
  (globalThis as { gc?: () => void }).gc?.();
}

const sum = (calls: Call[]): number => calls.reduce((a, c) => a + c.ms, 0);

const lineCount = (r: SyncResult): number => r.lines.ipset + r.lines.iptables + r.lines.destroy;
const fmtLines = (r: SyncResult): string => `${r.lines.ipset}/${r.lines.iptables}/${r.lines.destroy}`;
const ms = (x: number): string => (Number.isFinite(x) ? (x >= 100 ? x.toFixed(0) : x.toFixed(1)) : '-');

/** Time spent per command kind, e.g. "ipset restore 2.1, iptables-nft -S 3.0". */
function breakdown(calls: Call[]): string {
  const by = new Map<string, number>();
  for (const c of calls) by.set(c.cmd, (by.get(c.cmd) ?? 0) + c.ms);
  return [...by].map(([k, v]) => `${k} ${ms(v)}`).join(', ');
}

interface Row {
  op: string;
  agentMs: string;
  lines: string;
  modelMs: string;
  floorMs: string;
  ratio: string;
  target: string;
  note: string;
}

function printTable(title: string, rows: Row[]): void {
  const head: Row = { op: 'operation', agentMs: 'agent ms', lines: 'lines ipset/ipt/destroy', modelMs: 'model ms', floorMs: 'floor ms', ratio: 'ratio', target: 'target', note: 'notes' };
  const cols = Object.keys(head) as (keyof Row)[];
  const w = Object.fromEntries(cols.map((c) => [c, Math.max(...[head, ...rows].map((r) => r[c].length))])) as Record<keyof Row, number>;
  const fmt = (r: Row) => `| ${cols.map((c) => (c === 'note' ? r[c] : r[c].padEnd(w[c]))).join(' | ')}`;
  console.log(`\n${title}`);
  console.log(fmt(head));
  console.log(`|${cols.map((c) => '-'.repeat((c === 'note' ? 5 : w[c]) + 2)).join('|')}`);
  for (const r of rows) console.log(fmt(r));
}

// ---------------------------------------------------------------- one backend

function changedPorts(p: NetworkPolicy, variant: number): NetworkPolicy {
  const spec = structuredClone(p.spec);
  const rule = spec.ingress?.[0];
  if (rule) rule.ports = [{ protocol: 'TCP', port: 8081 + variant }, { protocol: 'TCP', port: 9090, endPort: 9092 + variant }];
  return { metadata: { ...p.metadata, generation: (p.metadata.generation ?? 1) + 1 + variant }, spec };
}

/** Runs in the child process, inside the backend's own network namespace. */
async function benchBackend(backend: Backend): Promise<Row[]> {
  const rows: Row[] = [];
  {
    const { exec, take } = recordingExec();
    const bin = { save: `iptables-${backend}-save`, restore: `iptables-${backend}-restore` };
    const tProc: number[] = [];
    for (let i = 0; i < 5; i++) {
      const t = performance.now();
      await sh(exec, ['true']);
      tProc.push(performance.now() - t);
    }
    take();
    const procMs = median(tProc);

    const snap = syntheticCluster({ namespaces: NAMESPACES, pods: PODS, policies: POLICIES, seed: 42 });
    assertValidSnapshot(snap); // measure only clusters the API server would hold (issue #10)
    let t = performance.now();
    const { items } = translate(snap);
    const translateMs = performance.now() - t;
    t = performance.now();
    let desired = buildDesired(items);
    const buildMs = performance.now() - t;
    let members = 0;
    for (const s of desired.sets.values()) members += s.members.size;
    let rules = 0;
    for (const r of desired.chains.values()) rules += r.length;
    console.log(
      `\n[${backend}] ${PODS} pods, ${POLICIES} policies -> ${desired.sets.size} sets (${members} members), ${desired.chains.size} chains (${rules} rules); ` +
        `translate ${ms(translateMs)} ms, buildDesired ${ms(buildMs)} ms; one process (\`true\`) ${ms(procMs)} ms`,
    );

    // 0. The tamper check on a tiny state, to compare with the same check at full size (section 6).
    const tinySnap = syntheticCluster({ namespaces: 10, pods: 100, policies: TINY_POLICIES, seed: 42 });
    assertValidSnapshot(tinySnap);
    const tiny = buildDesired(translate(tinySnap).items);
    const tinyConv = new Converger({ exec, backend, retry: { attempts: 1 } });
    await tinyConv.sync(tiny);
    take();
    const tinyChecks = await timeChecks(tinyConv, exec);
    const tinyCalls = take();
    await tinyConv.sync(cleanupDesired());
    take();

    // 1. full apply from empty + the floor (raw dump restore), interleaved, 3 rounds (median).
    const clear = async (): Promise<void> => {
      await sh(exec, [bin.restore], '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD ACCEPT [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n');
      await sh(exec, ['ipset', 'destroy']);
      take();
    };
    const fulls: { ms: number; r: SyncResult; calls: Call[] }[] = [];
    const floors: number[] = [];
    let dumpLines = 0;
    for (let i = 0; i < 3; i++) {
      await clear();
      const fresh = new Converger({ exec, backend, resyncIntervalMs: Number.POSITIVE_INFINITY, retry: { attempts: 1 } });
      gc();
      t = performance.now();
      const r = await fresh.sync(desired);
      fulls.push({ ms: performance.now() - t, r, calls: take() });
      const ipsetDump = await sh(exec, ['ipset', 'save']);
      const iptDump = await sh(exec, [bin.save, '-t', 'filter']);
      dumpLines = ipsetDump.split('\n').filter(Boolean).length + iptDump.split('\n').filter((l) => l && !l.startsWith('#')).length;
      await clear();
      gc();
      t = performance.now();
      await sh(exec, ['ipset', 'restore'], ipsetDump);
      await sh(exec, [bin.restore], iptDump);
      floors.push(performance.now() - t);
      take();
    }
    const fullMs = median(fulls.map((x) => x.ms));
    const floorFull = median(floors);
    const fullMid = [...fulls].sort((x, y) => x.ms - y.ms)[1]!;
    rows.push({
      op: 'full apply from empty',
      agentMs: `${ms(fullMs)} (max ${ms(max(fulls.map((x) => x.ms)))})`,
      lines: fmtLines(fullMid.r),
      modelMs: ms(translateMs + buildMs),
      floorMs: ms(floorFull),
      ratio: `${(fullMs / floorFull).toFixed(2)}x`,
      target: `<= ${TARGETS.fullRatio}x`,
      note: `median of 3, each from an empty kernel (new Converger); ${breakdown(fullMid.calls)}, plan+other ${ms(fullMid.ms - sum(fullMid.calls))}; floor = \`ipset save\` + \`${bin.save} -t filter\` dump (${dumpLines} lines) restored with \`ipset restore\` + \`${bin.restore}\` into an empty kernel (median of 3)`,
    });

    // Time of the ipset writes of a sync (read back by the pod rows, section 2).
    let writeMs = 0;
    const observer = { restore: (tool: string, _phase: number, seconds: number) => void (tool === 'ipset' && (writeMs += seconds * 1000)) };
    // 5a. no-op resync right after the floor restore: the restored dump must read back as desired.
    const conv = new Converger({ exec, backend, resyncIntervalMs: Number.POSITIVE_INFINITY, retry: { attempts: 1 }, observer });
    const noop: { ms: number; r: SyncResult; calls: Call[] }[] = [];
    for (let i = 0; i < 3; i++) {
      gc();
      t = performance.now();
      const r = await conv.sync(desired, { rereadIptables: true });
      noop.push({ ms: performance.now() - t, r, calls: take() });
    }

    // Incremental engine with the same cluster.
    const engine = new TranslationEngine();
    for (const n of snap.namespaces) engine.upsertNamespace(n);
    for (const p of snap.pods) engine.upsertPod(p);
    for (const p of snap.policies) engine.upsertPolicy(p);
    engine.drain();
    // What the agent daemon has: an informer store in which unchanged objects keep their identity
    // (drains applied as the API server and the watch would), and a set cache that reuses the
    // member maps of sets whose shards did not change.
    const keyOf = (o: { kind: string; metadata: { namespace?: string; name: string } }) => `${o.kind}/${o.metadata.namespace ?? ''}/${o.metadata.name}`;
    const store = new Map(engine.all().map((o) => [keyOf(o), o] as const));
    const setCache: SetCache = new Map();
    const applyDrain = (): void => {
      const ch = engine.drain();
      for (const d of ch.deletes) store.delete(`${d.kind}/${d.namespace ?? ''}/${d.name}`);
      for (const u of ch.upserts) store.set(keyOf(u), u);
    };
    const model = (): { d: DesiredState; ms: number } => {
      const t0 = performance.now();
      const d = buildDesired([...store.values()], { cache: setCache });
      return { d, ms: performance.now() - t0 };
    };
    {
      const m = model();
      desired = m.d;
      const r = await conv.sync(desired);
      take();
      if (lineCount(r) !== 0) console.log(`  NOTE: engine.all() differs from translate(): the first incremental sync wrote ${fmtLines(r)} lines`);
    }

    // 2. one pod added and removed, REPS times: first with a process per ipset write (`ipset
    // restore`), then through the long-lived ipset session (ipset/session.ts, ADR 0010) on a
    // second converger that adopts the same kernel. "ipset write" is the phase-1 write alone (the
    // kernel time of a pod change: its only write), measured by the converger's restore observer.
    type PodRun = { ms: number; lines: number; model: number; write: number; r: SyncResult; calls: Call[] };
    const podLoop = async (c: Converger, first: number): Promise<{ add: PodRun[]; del: PodRun[] }> => {
      const add: PodRun[] = [];
      const del: PodRun[] = [];
      for (let i = 0; i < REPS; i++) {
        const pod = syntheticPod(first + i, NAMESPACES);
        engine.upsertPod(pod);
        applyDrain();
        let m = model();
        gc();
        writeMs = 0;
        t = performance.now();
        let r = await c.sync(m.d);
        add.push({ ms: performance.now() - t, lines: lineCount(r), model: m.ms, write: writeMs, r, calls: take() });
        engine.deletePod(pod.metadata.namespace!, pod.metadata.name!);
        applyDrain();
        m = model();
        gc();
        writeMs = 0;
        t = performance.now();
        r = await c.sync(m.d);
        del.push({ ms: performance.now() - t, lines: lineCount(r), model: m.ms, write: writeMs, r, calls: take() });
        desired = m.d;
      }
      return { add, del };
    };
    const podRow = (op: string, xs: PodRun[], session: boolean): Row => {
      const mid = [...xs].sort((a, b) => a.ms - b.ms)[Math.floor(xs.length / 2)]!;
      return {
        op,
        agentMs: `${ms(median(xs.map((x) => x.ms)))} (max ${ms(max(xs.map((x) => x.ms)))})`,
        lines: `${fmtLines(mid.r)} (max ${max(xs.map((x) => x.lines))})`,
        modelMs: ms(median(xs.map((x) => x.model))),
        floorMs: '',
        ratio: '',
        target: session ? `<= ${TARGETS.podKernelMs} ms ipset write` : `<= ${TARGETS.podMs} ms, O(1)`,
        note: `median of ${xs.length}; ipset write median ${ms(median(xs.map((x) => x.write)))} ms (max ${ms(max(xs.map((x) => x.write)))}) ${session ? 'through the long-lived session' : 'by `ipset restore` (a process per change)'}; median run: ${session ? `ipset session ${ms(mid.write)}` : breakdown(mid.calls)}, plan+other ${ms(mid.ms - sum(mid.calls) - (session ? mid.write : 0))}`,
      };
    };
    const perChange = await podLoop(conv, PODS);
    rows.push(podRow('one pod added', perChange.add, false), podRow('one pod removed', perChange.del, false));
    {
      const session = new IpsetSession({ spawn: realSpawn() });
      const sconv = new Converger({ exec, backend, resyncIntervalMs: Number.POSITIVE_INFINITY, retry: { attempts: 1 }, ipsetSession: session, observer });
      await sconv.sync(desired); // adopts the kernel (full read), writes nothing
      take();
      const viaSession = await podLoop(sconv, PODS + REPS);
      session.close();
      if (sconv.counters.sessionWrites !== 2 * REPS || session.starts !== 1) console.log(`  NOTE: ${sconv.counters.sessionWrites} session writes for ${2 * REPS} changes, ${session.starts} helper start(s)`);
      rows.push(podRow('one pod added (ipset session)', viaSession.add, true), podRow('one pod removed (ipset session)', viaSession.del, true));
    }

    // 3. one policy changed (ports), with the floor of rewriting its own chain.
    const target = snap.policies.find((p) => p.spec.ingress?.[0]?.ports?.[0]?.port === 8080);
    if (!target) throw new Error('no policy with ports in the synthetic cluster');
    const chg: { ms: number; model: number; r: SyncResult; calls: Call[] }[] = [];
    const chainFloor: number[] = [];
    let chainRules = 0;
    for (let i = 0; i < 10; i++) {
      engine.upsertPolicy(i % 2 === 0 ? changedPorts(target, i % 4 === 0 ? 0 : 1) : target);
      applyDrain();
      const m = model();
      gc();
      t = performance.now();
      const r = await conv.sync(m.d);
      chg.push({ ms: performance.now() - t, model: m.ms, r, calls: take() });
      const prevDesired = desired;
      desired = m.d;
      // This policy's own chains (what the agent rewrote, minus base chains).
      const policyChains = r.plan.iptables.changed.filter((c) => !['KNPM-FORWARD', 'KNPM-EGRESS', 'KNPM-INGRESS', 'KNPM-ALLOW'].includes(c));
      const lines = ['*filter', ...policyChains.map((c) => `:${c} - [0:0]`)];
      for (const c of policyChains) for (const rule of m.d.chains.get(c) ?? []) lines.push(`-A ${c} ${rule}`);
      lines.push('COMMIT');
      chainRules = lines.length - 2 - policyChains.length;
      // Floor: the same chain(s) changed back to the previous rules, then forward again (two real
      // changes by the raw tool, the second timed); the kernel ends as the agent left it.
      const prevLines = ['*filter', ...policyChains.map((c) => `:${c} - [0:0]`)];
      for (const c of policyChains) for (const rule of prevDesired.chains.get(c) ?? []) prevLines.push(`-A ${c} ${rule}`);
      prevLines.push('COMMIT');
      await sh(exec, [bin.restore, '--noflush', '-w', '5'], `${prevLines.join('\n')}\n`);
      gc();
      const t1 = performance.now();
      await sh(exec, [bin.restore, '--noflush', '-w', '5'], `${lines.join('\n')}\n`);
      chainFloor.push(performance.now() - t1);
      take();
    }
    const chgMs = median(chg.map((x) => x.ms));
    const chgFloor = median(chainFloor);
    const chgMid = [...chg].sort((a, b) => a.ms - b.ms)[Math.floor(chg.length / 2)]!;
    rows.push({
      op: 'one policy changed (ports)',
      agentMs: `${ms(chgMs)} (max ${ms(max(chg.map((x) => x.ms)))})`,
      lines: fmtLines(chgMid.r),
      modelMs: ms(median(chg.map((x) => x.model))),
      floorMs: ms(chgFloor),
      ratio: `${(chgMs / chgFloor).toFixed(2)}x`,
      target: `<= ${TARGETS.policyRatio}x`,
      note: `median of ${chg.length}; chains rewritten: ${chgMid.r.plan.iptables.changed.join(', ')}; floor = the same change of that chain (${chainRules} rules) by one \`${bin.restore} --noflush\`; ${breakdown(chgMid.calls)}`,
    });

    // 4. one policy deleted (and added back, to restore the state).
    const gone: { ms: number; model: number; r: SyncResult; calls: Call[] }[] = [];
    const back: typeof gone = [];
    for (let i = 0; i < 5; i++) {
      engine.deletePolicy(target.metadata.namespace!, target.metadata.name!);
      applyDrain();
      let m = model();
      gc();
      t = performance.now();
      let r = await conv.sync(m.d);
      gone.push({ ms: performance.now() - t, model: m.ms, r, calls: take() });
      engine.upsertPolicy(target);
      applyDrain();
      m = model();
      gc();
      t = performance.now();
      r = await conv.sync(m.d);
      back.push({ ms: performance.now() - t, model: m.ms, r, calls: take() });
      desired = m.d;
    }
    const polRow = (op: string, xs: typeof gone): Row => {
      const mid = [...xs].sort((a, b) => a.ms - b.ms)[Math.floor(xs.length / 2)]!;
      const p = mid.r.plan;
      return {
        op,
        agentMs: `${ms(median(xs.map((x) => x.ms)))} (max ${ms(max(xs.map((x) => x.ms)))})`,
        lines: fmtLines(mid.r),
        modelMs: ms(median(xs.map((x) => x.model))),
        floorMs: '',
        ratio: '',
        target: '',
        note: `median of ${xs.length}; chains rewritten: ${p.iptables.changed.join(', ') || '-'}; deleted: ${p.iptables.deleted.join(', ') || '-'}; sets created ${p.ipset.created.length}, destroyed ${p.ipset.destroy.length}; ${breakdown(mid.calls)}`,
      };
    };
    rows.push(polRow('one policy deleted', gone), polRow('the policy added back', back));

    // 5. no-op syncs: full (re-read) and incremental.
    for (let i = 0; i < 3; i++) {
      gc();
      t = performance.now();
      const r = await conv.sync(desired, { rereadIptables: true });
      noop.push({ ms: performance.now() - t, r, calls: take() });
    }
    const noopMid = [...noop].sort((a, b) => a.ms - b.ms)[Math.floor(noop.length / 2)]!;
    rows.push({
      op: 'no-op resync (full re-read)',
      agentMs: `${ms(median(noop.map((x) => x.ms)))} (max ${ms(max(noop.map((x) => x.ms)))})`,
      lines: `${fmtLines(noopMid.r)} (max ${max(noop.map((x) => lineCount(x.r)))})`,
      modelMs: '',
      floorMs: '',
      ratio: '',
      target: 'lines = 0',
      note: `median of ${noop.length} (3 right after the floor restore, 3 at the end); ${breakdown(noopMid.calls)}`,
    });
    const inc: { ms: number; r: SyncResult; calls: Call[] }[] = [];
    for (let i = 0; i < 5; i++) {
      gc();
      t = performance.now();
      const r = await conv.sync(desired);
      inc.push({ ms: performance.now() - t, r, calls: take() });
    }
    const incMid = [...inc].sort((a, b) => a.ms - b.ms)[Math.floor(inc.length / 2)]!;
    rows.push({
      op: 'no-op sync (incremental)',
      agentMs: `${ms(median(inc.map((x) => x.ms)))} (max ${ms(max(inc.map((x) => x.ms)))})`,
      lines: `${fmtLines(incMid.r)} (max ${max(inc.map((x) => lineCount(x.r)))})`,
      modelMs: '',
      floorMs: '',
      ratio: '',
      target: 'lines = 0',
      note: `median of ${inc.length}; ${breakdown(incMid.calls)}`,
    });
    // 6. Tamper check (agent/tamper.ts; the daemon runs one per second) and detection to repair.
    take();
    const big = await timeChecks(conv, exec);
    const checkCalls = take();
    const perCheck = median(big.checks);
    /** Mean ms per check of each command the checks ran. */
    const spawnsOf = (calls: Call[], n: number): string => breakdown(calls.filter((c) => c.cmd !== 'true')).replace(/ ([0-9.]+)(,|$)/g, (_, v: string, e: string) => ` ${ms(Number(v) / n)}${e}`);
    rows.push({
      op: 'tamper check',
      agentMs: `${ms(perCheck)} (max ${ms(max(big.checks))})`,
      lines: '0',
      modelMs: '',
      floorMs: '',
      ratio: `${big.ratio.toFixed(2)}x`,
      target: backend === 'nft' ? 'flat (ratio)' : '<= 5% duty',
      note:
        `median of ${big.checks.length}; ratio = check / as many spawns of \`true\` in the same loop (${ms(median(big.spawns))} ms: the machine's load); ` +
        `at 1 check/s: ${ms(perCheck)} ms per s of wall time (${(perCheck / 10).toFixed(1)}% of a core); per check: ${spawnsOf(checkCalls, big.checks.length)}; ` +
        `at ${TINY_POLICIES} policies: ${ms(median(tinyChecks.checks))} ms, ratio ${tinyChecks.ratio.toFixed(2)}x (${spawnsOf(tinyCalls, tinyChecks.checks.length)})`,
    });
    for (const [what, argv] of [
      ['KNPM-INGRESS flushed', [`iptables-${backend}`, '-w', '5', '-F', 'KNPM-INGRESS']],
      ['hook deleted', [`iptables-${backend}`, '-w', '5', '-D', 'FORWARD', '1']],
    ] as const) {
      await sh(exec, [...argv]);
      gc();
      t = performance.now();
      const findings = await conv.checkTamper();
      const detectMs = performance.now() - t;
      const r = await conv.sync(desired, { rereadIptables: true });
      const totalMs = performance.now() - t;
      const after = await conv.checkTamper();
      rows.push({
        op: `tamper: ${what}`,
        agentMs: ms(totalMs),
        lines: fmtLines(r),
        modelMs: '',
        floorMs: '',
        ratio: '',
        target: '< 5000 incl. wait',
        note: `check ${ms(detectMs)} (${findings.length} finding(s)) + repair (iptables re-read, as the daemon does) ${ms(totalMs - detectMs)}; add up to 1000 ms waiting for the next check; after: ${after.length ? after.join('; ') : 'in order'}`,
      });
      take();
    }

    const bad = [...noop, ...inc].filter((x) => lineCount(x.r) !== 0);
    if (bad.length) console.log(`  !!! a no-op sync wrote lines: ${bad.map((x) => fmtLines(x.r)).join(' ')}`);
    return rows;
  }
}

/** Child: checks it really runs in the namespace it was started for, then measures one backend. */
async function child(netns: string, backend: Backend): Promise<void> {
  const here = execFileSync('ip', ['netns', 'identify'], { encoding: 'utf8' }).trim();
  if (here !== netns || !netns.startsWith('knpm-')) throw new Error(`refusing to run: expected network namespace ${netns}, running in ${JSON.stringify(here)}`);
  const t = performance.now();
  const rows = await benchBackend(backend);
  printTable(`backend ${backend} (${((performance.now() - t) / 1000).toFixed(0)} s for this backend)`, rows);
}

/** Parent: one fresh namespace per backend; this script re-runs itself inside it, so commands pay no `ip netns exec` cost. */
async function main(): Promise<void> {
  if (process.getuid?.() !== 0) {
    console.error('bench:agent needs root (network namespaces, ipset, iptables); nothing was measured.');
    process.exitCode = 1;
    return;
  }
  console.log(`kube-npm agent benchmark: ${PODS} pods, ${POLICIES} policies, ${NAMESPACES} namespaces, seed 42; backends ${BACKENDS.join(', ')}`);
  console.log('agent ms = Converger.sync; model ms = engine.all() + buildDesired (translate + buildDesired for the full apply); lines = restore input lines written');
  for (const b of BACKENDS) {
    if (b !== 'nft' && b !== 'legacy') throw new Error(`unknown backend ${String(b)}`);
    const ns = newNetns(b);
    try {
      const script = process.argv[1];
      if (!script) throw new Error('cannot tell which script to re-run');
      const code = await new Promise<number>((resolve, reject) => {
        const c = spawn('ip', ['netns', 'exec', ns, process.execPath, '--expose-gc', ...process.execArgv, script], {
          stdio: 'inherit',
          env: { ...process.env, KNPM_BENCH_CHILD_NETNS: ns, KNPM_BENCH_CHILD_BACKEND: b },
        });
        c.on('error', reject);
        c.on('close', (code) => resolve(code ?? 1));
      });
      if (code !== 0) throw new Error(`backend ${b}: the measuring process exited with ${code}`);
    } finally {
      delNetns(ns);
    }
  }
}

const childNs = process.env.KNPM_BENCH_CHILD_NETNS;
(childNs !== undefined ? child(childNs, process.env.KNPM_BENCH_CHILD_BACKEND as Backend) : main()).catch((e: unknown) => {
  console.error(e);
  delAll();
  process.exitCode = 1;
});
