/**
 * The converge core of the node agent: makes the kernel (ipsets + the filter table's KNPM-* chains
 * and FORWARD hook) equal to a DesiredState, writing only the difference.
 *
 * Model (after Calico's felix/iptables/table.go)
 *  - `applied` is what we last wrote successfully: the kernel as we believe it is. An incremental
 *    sync plans against it without reading the kernel at all, so its cost follows the change, not
 *    the cluster: unchanged sets are recognised by identity (the member Map of the previous
 *    desired state) or one lookup per member, and `applied` is built by reference (plan.ts
 *    appliedState), never by copying members. A full sync reads our chains and the FORWARD hook
 *    (`iptables-save -t filter`) and our sets (`ipset list -o save`), compares them with `applied`
 *    to log and count drift, and plans against the kernel. Every drift, the hook's included (gone,
 *    moved from rule 1, duplicated), is therefore repaired by the next full sync, not the next
 *    incremental one. Between full syncs, checkTamper() (tamper.ts) looks cheaply at the hook and
 *    the base chains; the daemon runs it every second and forces a full sync on a finding. A sync is full when: there is no `applied` (first sync after start, which
 *    is how a restart adopts the kernel without writing), the resync interval has passed, the
 *    caller forces it, or the previous attempt failed.
 *  - Ownership: the DesiredState passed to sync() is kept by reference as part of `applied`
 *    (model.ts): the caller must not mutate it afterwards, only build new ones.
 *  - Each sync runs phase 1 (ipset restore), 2 (one iptables-restore --noflush -w N), 3 (ipset
 *    restore destroying unreferenced sets); see plan.ts. A phase that fails stops the sync: the
 *    iptables commit is atomic and the ipset lines are ordered so that a partial restore never
 *    removes protection (ipset/plan.ts). Nothing is ever flushed wholesale on failure.
 *  - A set of ours whose kernel type or family differs (someone created it, or an older version)
 *    cannot be swapped, renamed or destroyed while rules use it. The sync then runs twice: first to
 *    an intermediate state that uses the set's temp name everywhere (plan.ts viaTempNames), then to
 *    the desired one: make-before-break, protection held at every instant (ADR 0005).
 *  - Small ipset writes of member lines (a pod change) may go through a long-lived `ipset restore`
 *    (ipset/session.ts, ADR 0010) instead of a new process: same lines, same stop-at-the-first-
 *    failing-line semantics, same RestoreError; after a failed session write the next ipset write
 *    starts `ipset restore` again.
 *  - sync() retries failed attempts with the framework Backoff (injected clock), every retry full.
 *    Given a function instead of a state, each attempt calls it again: a retry re-plans from the
 *    newest desired state (the daemon's caches as they are then), never re-applies the failed
 *    attempt's input, which may be seconds old by then.
 * Effects: only through the injected Exec and Clock. Not re-entrant: one caller at a time.
 */
import { Backoff } from '../framework/backoff.js';
import { binaries, type Backend, type Binaries } from './backend.js';
import { realClock, type Clock, type Exec } from './exec.js';
import { parseIptablesSave } from './iptables/parse.js';
import { parseIpsetSave } from './ipset/parse.js';
import type { IpsetSession } from './ipset/session.js';
import type { DesiredState } from './model.js';
import { tempSetName } from '../api/names.js';
import { checkTamper, tamperProbes } from './tamper.js';
import { appliedState, detectDrift, planIsEmpty, planSync, unswappableSets, viaTempNames, type ActualState, type Drift, type DriftKind, type Plan } from './plan.js';

export type Tool = 'ipset' | 'iptables';

/** Hooks for metrics; every method optional. Durations in seconds. */
export interface ConvergeObserver {
  restore?(tool: Tool, phase: 1 | 2 | 3, seconds: number, ok: boolean): void;
  drift?(kind: DriftKind, count: number): void;
  sync?(result: SyncResult): void;
  syncFailed?(error: Error, seconds: number): void;
}

export interface RetryOptions {
  /** Attempts in total (default 5). */
  attempts?: number;
  initialDelayMs?: number;
  maxDelayMs?: number;
  factor?: number;
}

export interface ConvergerOptions {
  exec: Exec;
  backend: Backend;
  clock?: Clock;
  log?: (s: string) => void;
  /** Bound on waiting for the xtables lock (`-w`), seconds; default 5. */
  lockWaitSeconds?: number;
  /** A sync after this long since the last full read is full; default 90 s. */
  resyncIntervalMs?: number;
  retry?: RetryOptions;
  observer?: ConvergeObserver;
  /**
   * Long-lived ipset process (ipset/session.ts) for small phase-1/3 writes: no process start per
   * pod change. Without it every ipset write starts `ipset restore`.
   */
  ipsetSession?: IpsetSession;
  /** Writes of more lines than this start `ipset restore` even with a session; default 500. */
  sessionMaxLines?: number;
}

export interface SyncOptions {
  forceFull?: boolean;
  /**
   * Re-read iptables (not the sets) before planning, even when the sync would be incremental: the
   * repair after a tamper finding (tamper.ts). Sets are trusted as last applied; reading and
   * comparing them (`ipset list`: 107k members at 1,000 policies) is most of a full sync's cost.
   */
  rereadIptables?: boolean;
  /** Plan (reading the kernel fully) but write nothing. */
  dryRun?: boolean;
}

export interface SyncResult {
  full: boolean;
  dryRun: boolean;
  plan: Plan;
  /**
   * Runs before `plan` when sets of another type or family had to be replaced (`replaced`): the
   * step to the intermediate state that uses their temp names (ADR 0005).
   */
  prelude?: Plan;
  replaced: string[];
  /** Drift found (full syncs only, when there was a previous successful sync). */
  drift: Drift[];
  lines: { ipset: number; iptables: number; destroy: number };
  durationMs: number;
  attempts: number;
}

export interface Counters {
  syncs: number;
  fullSyncs: number;
  failedAttempts: number;
  /** Syncs that wrote at least one line. */
  writes: number;
  restoreFailures: Record<Tool, number>;
  /** ipset writes that went through the long-lived session (a subset of all ipset writes). */
  sessionWrites: number;
  driftRepairs: Partial<Record<DriftKind, number>>;
}

/** A restore that failed, with the lines around the one the tool reported. */
export class RestoreError extends Error {
  constructor(
    readonly tool: Tool,
    readonly phase: 1 | 2 | 3,
    readonly argv: string[],
    readonly input: string,
    readonly code: number,
    readonly stderr: string,
    readonly failedLine?: number,
  ) {
    super(`${argv.join(' ')} (phase ${phase}) failed with exit ${code}: ${stderr.trim() || '(no output)'}${contextLines(input, failedLine)}`);
    this.name = 'RestoreError';
  }
}

/** Lines N-2..N+2 of the input, numbered, the failing one marked. */
export function contextLines(input: string, line: number | undefined): string {
  if (line === undefined) return '';
  const lines = input.split('\n');
  const out: string[] = [];
  for (let i = Math.max(1, line - 2); i <= Math.min(lines.length, line + 2); i++) out.push(`${i === line ? '>' : ' '}${String(i).padStart(5)}: ${lines[i - 1] ?? ''}`);
  return `\n${out.join('\n')}`;
}

/**
 * The input line a restore tool blamed: iptables-restore says "Error occurred at line: 7" for a
 * line it could not parse or resolve and "line 7 failed" when the kernel refused the commit;
 * ipset says "Error in line 7:".
 */
export function failedLineOf(stderr: string): number | undefined {
  const m = /line (\d+) failed/.exec(stderr) ?? /Error occurred at line: (\d+)/.exec(stderr) ?? /Error in line (\d+)/.exec(stderr);
  return m?.[1] !== undefined ? Number(m[1]) : undefined;
}

export class Converger {
  readonly counters: Counters = { syncs: 0, fullSyncs: 0, failedAttempts: 0, writes: 0, restoreFailures: { ipset: 0, iptables: 0 }, sessionWrites: 0, driftRepairs: {} };
  readonly bin: Binaries;
  private readonly exec: Exec;
  private readonly clock: Clock;
  private readonly log: (s: string) => void;
  private readonly lockWait: number;
  private readonly resyncMs: number;
  private readonly retry: Required<RetryOptions>;
  private readonly observer: ConvergeObserver;
  private readonly session: IpsetSession | undefined;
  private readonly sessionMaxLines: number;
  /** The last session write failed: the next ipset write starts `ipset restore` (the session restarts after). */
  private sessionSuspect = false;
  private applied: ActualState | undefined;
  private lastFullAt = Number.NEGATIVE_INFINITY;
  /** Bumped when a write starts: a reader of `applied` can tell that it changed meanwhile. */
  private generation = 0;

  constructor(opts: ConvergerOptions) {
    this.exec = opts.exec;
    this.bin = binaries(opts.backend);
    this.clock = opts.clock ?? realClock;
    this.log = opts.log ?? (() => undefined);
    this.lockWait = opts.lockWaitSeconds ?? 5;
    this.resyncMs = opts.resyncIntervalMs ?? 90_000;
    this.retry = { attempts: 5, initialDelayMs: 500, maxDelayMs: 30_000, factor: 2, ...opts.retry };
    this.observer = opts.observer ?? {};
    this.session = opts.ipsetSession;
    this.sessionMaxLines = opts.sessionMaxLines ?? 500;
  }

  /** Forget what we last wrote: the next sync reads the kernel fully. */
  invalidate(): void {
    this.applied = undefined;
  }

  /**
   * One tamper check (tamper.ts) of the kernel against what we last wrote: findings, or [] when in
   * order or when there is nothing to compare with (no successful sync yet, or a write started
   * meanwhile: its result would be compared with a stale model).
   */
  async checkTamper(): Promise<string[]> {
    const base = this.applied;
    const generation = this.generation;
    if (!base) return [];
    const findings = await checkTamper(this.exec, tamperProbes(this.bin, base.iptables, this.lockWait));
    return this.generation === generation && this.applied === base ? findings : [];
  }

  /** Reads the owned part of the kernel: our sets, our chains, the FORWARD hook. */
  async readKernel(): Promise<ActualState> {
    const save = await this.run([this.bin.save, '-t', 'filter']);
    const sets = await this.run(['ipset', 'list', '-o', 'save']);
    return { iptables: parseIptablesSave(save), sets: parseIpsetSave(sets) };
  }

  private async run(argv: string[]): Promise<string> {
    const r = await this.exec(argv);
    if (r.code !== 0) throw new Error(`${argv.join(' ')} failed with exit ${r.code}: ${r.stderr.trim()}`);
    return r.stdout;
  }

  /**
   * Converges to `desired`, retrying with backoff; throws the last error when all attempts fail.
   * `desired` may be a function: it is called at every attempt, so a retry plans from the newest
   * desired state (the kernel is re-read in full either way).
   */
  async sync(desired: DesiredState | (() => DesiredState), opts: SyncOptions = {}): Promise<SyncResult> {
    const start = this.clock.now();
    const backoff = new Backoff({ initialMs: this.retry.initialDelayMs, maxMs: Math.max(this.retry.initialDelayMs, this.retry.maxDelayMs), factor: this.retry.factor });
    for (let attempt = 1; ; attempt++) {
      try {
        const d = typeof desired === 'function' ? desired() : desired;
        const r = await this.syncOnce(d, { ...opts, forceFull: opts.forceFull || attempt > 1 });
        r.attempts = attempt;
        r.durationMs = this.clock.now() - start;
        this.observer.sync?.(r);
        return r;
      } catch (e) {
        const err = e instanceof Error ? e : new Error(String(e));
        this.counters.failedAttempts++;
        if (attempt >= this.retry.attempts) {
          this.observer.syncFailed?.(err, (this.clock.now() - start) / 1000);
          throw new Error(`sync failed after ${attempt} attempt(s)`, { cause: e });
        }
        const delay = backoff.next();
        this.log(`sync attempt ${attempt} failed, retrying in ${delay} ms with a full re-read${typeof desired === 'function' ? ' and a new plan' : ''}: ${err.message}`);
        await this.clock.sleep(delay);
      }
    }
  }

  /** One attempt. On failure the next sync is full (the kernel may hold a partial phase 1). */
  async syncOnce(desired: DesiredState, opts: SyncOptions = {}): Promise<SyncResult> {
    const start = this.clock.now();
    const full = !!opts.forceFull || !!opts.dryRun || this.applied === undefined || start - this.lastFullAt >= this.resyncMs;
    let actual: ActualState;
    let drift: Drift[] = [];
    const expected = this.applied;
    if (full) {
      actual = await this.readKernel();
      if (expected) drift = detectDrift(expected, actual);
    } else if (opts.rereadIptables && expected) {
      actual = { sets: expected.sets, iptables: parseIptablesSave(await this.run([this.bin.save, '-t', 'filter'])) };
      drift = detectDrift(expected, actual);
    } else {
      // Incremental: trust what we wrote (drift, the hook's included, waits for the next full sync).
      actual = expected as ActualState;
    }
    let plan = planSync(desired, actual);
    // Sets the kernel cannot swap (another type or family under our name): make-before-break
    // through an intermediate state that uses their temp names (plan.ts viaTempNames, ADR 0005).
    const replaced = plan.ipset.unswappable;
    let prelude: Plan | undefined;
    /** What the kernel holds when `plan` starts: `actual`, or the intermediate state once reached. */
    let base = actual;
    if (replaced.length) {
      let via = viaTempNames(desired, replaced);
      // A leftover temp set may itself have a wrong type: rename once more (bounded: names are hashes).
      for (let depth = 1; ; depth++) {
        const again = unswappableSets(via, actual);
        if (!again.length) break;
        if (depth >= 3) throw new Error(`cannot replace sets ${again.join(', ')}: their temp names are taken by sets of another type too`);
        via = viaTempNames(via, again);
      }
      prelude = planSync(via, actual);
      // The replaced sets are destroyed last, so that one the kernel keeps (a foreign rule uses it)
      // does not keep other stale sets alive; `ipset restore` stops at the first failing line.
      const last = new Set(replaced.map((n) => `destroy ${n}`));
      prelude.ipset.destroy = [...prelude.ipset.destroy.filter((l) => !last.has(l)), ...prelude.ipset.destroy.filter((l) => last.has(l))];
      for (const n of replaced) {
        const a = actual.sets.get(n);
        this.log(`set ${n} is ${a?.type} family ${a?.family} in the kernel, ${desired.sets.get(n)?.type} inet wanted: replacing it through ${tempSetName(n)}`);
      }
      base = appliedState(via, actual);
      plan = planSync(desired, base);
    }
    const result: SyncResult = {
      full,
      dryRun: !!opts.dryRun,
      plan,
      ...(prelude ? { prelude } : {}),
      replaced,
      drift,
      lines: {
        ipset: plan.ipset.apply.length + (prelude?.ipset.apply.length ?? 0),
        iptables: plan.iptables.lines.length + (prelude?.iptables.lines.length ?? 0),
        destroy: plan.ipset.destroy.length + (prelude?.ipset.destroy.length ?? 0),
      },
      durationMs: 0,
      attempts: 1,
    };
    if (opts.dryRun) {
      result.durationMs = this.clock.now() - start;
      return result;
    }
    this.counters.syncs++;
    if (full) {
      this.counters.fullSyncs++;
      this.lastFullAt = start;
    }
    // From here on a failure leaves the kernel in an unknown (but safe) state: re-read next time.
    this.applied = undefined;
    this.generation++;
    if (!planIsEmpty(plan) || (prelude && !planIsEmpty(prelude))) this.counters.writes++;
    if (prelude) {
      try {
        await this.apply(prelude);
      } catch (e) {
        // Nothing was lost: phase 2 is one atomic commit, so the rules are either the ones from
        // before or the new ones on the filled temp sets (a failed phase 3: the old set is kept by
        // a rule that is not ours). Stop here: the real names cannot be created while the wrong
        // sets exist. The next attempt (full) finds the temp sets in place and retries phase 3.
        throw new Error(`replacing set(s) ${replaced.join(', ')} of another type or family make-before-break failed (the rules ${e instanceof RestoreError && e.phase === 3 ? 'use the temp set(s); the old set is still used by something else' : 'are unchanged'})`, { cause: e });
      }
    }
    await this.apply(plan);
    this.applied = appliedState(desired, base);
    for (const d of drift) {
      this.counters.driftRepairs[d.kind] = (this.counters.driftRepairs[d.kind] ?? 0) + 1;
      this.observer.drift?.(d.kind, 1);
      this.log(`drift repaired: ${d.kind} ${d.name}: ${d.detail}`);
    }
    result.durationMs = this.clock.now() - start;
    return result;
  }

  /** The three phases of one plan, in order; the first failure stops it. */
  private async apply(plan: Plan): Promise<void> {
    if (plan.ipset.apply.length) await this.restore('ipset', 1, ['ipset', 'restore'], plan.ipset.apply);
    if (plan.iptables.lines.length) await this.restore('iptables', 2, [this.bin.restore, '--noflush', '-w', String(this.lockWait)], plan.iptables.lines);
    if (plan.ipset.destroy.length) await this.restore('ipset', 3, ['ipset', 'restore'], plan.ipset.destroy);
  }

  private async restore(tool: Tool, phase: 1 | 2 | 3, argv: string[], lines: string[]): Promise<void> {
    const input = `${lines.join('\n')}\n`;
    const t0 = this.clock.now();
    const session = tool === 'ipset' && !this.sessionSuspect && lines.length <= this.sessionMaxLines && this.session?.takes(lines) ? this.session : undefined;
    // Once a session write failed, one write goes through `ipset restore`: a helper that keeps
    // failing (a broken probe set, a missing stdbuf) cannot stall every change.
    if (tool === 'ipset') this.sessionSuspect = false;
    let r: { code: number; stderr: string; failedLine?: number };
    try {
      r = session ? await session.apply(lines) : await this.exec(argv, input);
    } catch (e) {
      this.counters.restoreFailures[tool]++;
      this.observer.restore?.(tool, phase, (this.clock.now() - t0) / 1000, false);
      throw new Error(`running ${argv.join(' ')}${session ? ' (ipset session)' : ''}`, { cause: e });
    }
    const ok = r.code === 0;
    this.observer.restore?.(tool, phase, (this.clock.now() - t0) / 1000, ok);
    if (session) {
      this.counters.sessionWrites++;
      if (!ok) this.sessionSuspect = true;
    }
    if (!ok) {
      this.counters.restoreFailures[tool]++;
      // Same error as a failed `ipset restore` of these lines: the converger re-reads and replans.
      throw new RestoreError(tool, phase, session ? [...argv, '(session)'] : argv, input, r.code, r.stderr, session ? r.failedLine : failedLineOf(r.stderr));
    }
  }
}
