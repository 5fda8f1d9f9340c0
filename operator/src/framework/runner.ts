/**
 * Runner: the framework's one "dirty flag + one run at a time + periodic + retry" loop, after
 * kube-proxy's BoundedFrequencyRunner (written anew for our Clock and async runs).
 *
 * Model
 *  - run() asks for a run and returns at once. Requests are level-triggered: a run reads the newest
 *    state itself, so any number of requests before it starts cost one run.
 *  - At most one run at a time. Requests that arrive during a run cost exactly one trailing run.
 *  - A run starts no earlier than:
 *      minIntervalMs after the previous run ENDED (a busy stream of events costs one run per
 *        interval, however fast the runs are),
 *      coalesceMs after the first request since the previous run started (the pieces of one change
 *        that arrive a few ms apart make one run), and
 *      the retry time of a failed run (below).
 *    An urgent request skips the first two (someone is waiting for the result) but never the retry
 *    wait, and never runs two at a time.
 *  - Every maxIntervalMs (0 = never) a periodic run is requested, measured from the previous periodic
 *    one, not from the last run: a busy runner still gets its periodic run (a full resync that heals
 *    drift must not starve behind incremental ones). The callee is told why it runs: 'periodic' when a
 *    periodic request is among those it serves, else 'retry' when it follows a failure, else
 *    'requested'.
 *  - A run that throws is retried after the next delay of the framework Backoff. The retry is a NEW
 *    run (it reads the newest state, never the failed run's input); requests that arrive meanwhile
 *    wait for the retry time too, so a failing target is not hammered by a busy event stream. A run
 *    that succeeds resets the backoff.
 *  - Time only through the injected Clock. Waits race a "wake" promise, so a new request (an urgent
 *    one, or one after a long idle sleep) re-plans the wait at once even on a clock whose sleep
 *    ignores the AbortSignal (test clocks); the abandoned sleep is aborted for clocks that honour it.
 *  - stop(): no run starts after it; it waits for the current one (never interrupts it).
 */
import { Backoff, type BackoffOptions, type Clock } from './backoff.js';

export type RunReason = 'requested' | 'periodic' | 'retry';

export interface RunnerOptions {
  /** For log lines. */
  name: string;
  /** The work. Throwing schedules a retry. */
  run: (reason: RunReason) => Promise<void>;
  clock: Clock;
  /** Default 0. */
  minIntervalMs?: number;
  /** Default 0. */
  coalesceMs?: number;
  /** Periodic run this often; default 0 (none). */
  maxIntervalMs?: number;
  /**
   * Each period is shortened by up to this fraction (0..1), drawn anew each time; default 0.
   * Processes started together (a DaemonSet's agents, a bench's simulated nodes) would otherwise
   * run their periodic work at the same moments for ever.
   */
  periodJitter?: number;
  /** Uniform in [0, 1) for the jitter; default Math.random (injected by tests). */
  random?: () => number;
  /** Delays before retrying a failed run (a Backoff instance, or its options). */
  backoff: Backoff | BackoffOptions;
  /** A run failed; the retry comes in `delayMs`. Default: nothing (the caller's run() logs). */
  onError?: (err: unknown, delayMs: number, failures: number) => void;
}

export interface RunRequest {
  /** Skip the minimum interval and the coalesce delay (not the retry wait after a failure). */
  urgent?: boolean;
}

export class Runner {
  private readonly backoff: Backoff;
  private readonly minMs: number;
  private readonly coalesceMs: number;
  private readonly periodMs: number;
  /** A run was requested (explicitly or by the periodic timer) and has not started yet. */
  private requested = false;
  private urgent = false;
  private periodicPending = false;
  /** Clock time of the first request since the last run started. */
  private requestedAt = 0;
  /** Set after a failed run: no run before this time; the retry runs then. */
  private retryAt: number | undefined;
  private lastEnd = Number.NEGATIVE_INFINITY;
  private nextPeriodicAt = Number.POSITIVE_INFINITY;
  private inRun = false;
  private loop: Promise<void> | undefined;
  private stopped = false;
  /** Wakes the loop's current wait (a request changed the schedule). */
  private wake: (() => void) | undefined;
  /** Resolved on every change of state that settled() looks at. */
  private changed: { promise: Promise<void>; resolve: () => void } = deferred();
  /** Runs finished (ok or not), of them failed, periodic and retries: tests and logs. */
  readonly stats = { runs: 0, failures: 0, periodic: 0, retries: 0 };

  constructor(private readonly o: RunnerOptions) {
    this.backoff = o.backoff instanceof Backoff ? o.backoff : new Backoff(o.backoff);
    this.minMs = Math.max(0, o.minIntervalMs ?? 0);
    this.coalesceMs = Math.max(0, o.coalesceMs ?? 0);
    this.periodMs = Math.max(0, o.maxIntervalMs ?? 0);
  }

  /** The next period: maxIntervalMs, shortened by the jitter. */
  private period(): number {
    const j = Math.min(1, Math.max(0, this.o.periodJitter ?? 0));
    return j ? Math.round(this.periodMs * (1 - j * (this.o.random ?? Math.random)())) : this.periodMs;
  }

  /** Starts the loop (and the periodic timer). Requests made before are served now. */
  start(): void {
    if (this.loop || this.stopped) return;
    if (this.periodMs > 0) this.nextPeriodicAt = this.o.clock.now() + this.period();
    this.loop = this.main();
  }

  /** Ask for a run. */
  run(req: RunRequest = {}): void {
    if (this.stopped) return;
    if (!this.requested) this.requestedAt = this.o.clock.now();
    this.requested = true;
    if (req.urgent) this.urgent = true;
    this.poke();
  }

  /** Failures since the last successful run. */
  get failures(): number {
    return this.backoff.attempts;
  }

  /**
   * Nothing runs or waits to run. A retry scheduled after a failure does not count unless
   * `retries` (then: settled means the last run succeeded); the periodic timer never counts.
   */
  isSettled(opts: { retries?: boolean } = {}): boolean {
    return this.stopped || (!this.inRun && !this.requested && (!opts.retries || this.retryAt === undefined));
  }

  /** Resolves once isSettled(opts) (at once if it is), or on stop(). */
  async settled(opts: { retries?: boolean } = {}): Promise<void> {
    while (!this.isSettled(opts)) await this.changed.promise;
  }

  /** No run starts after this; resolves when the current one (if any) has finished. */
  async stop(): Promise<void> {
    this.stopped = true;
    this.poke();
    this.notify();
    await this.loop;
  }

  private poke(): void {
    const w = this.wake;
    this.wake = undefined;
    w?.();
  }

  private notify(): void {
    const c = this.changed;
    this.changed = deferred();
    c.resolve();
  }

  /** When the pending work may start (Infinity: nothing pending). */
  private dueAt(): number {
    if (!this.requested && this.retryAt === undefined) return Number.POSITIVE_INFINITY;
    let due = this.retryAt ?? Number.NEGATIVE_INFINITY;
    if (!this.urgent) {
      due = Math.max(due, this.lastEnd + this.minMs);
      if (this.requested) due = Math.max(due, this.requestedAt + this.coalesceMs);
    }
    return due;
  }

  private async main(): Promise<void> {
    while (!this.stopped) {
      const now = this.o.clock.now();
      if (now >= this.nextPeriodicAt) {
        // From now, not from the missed due time: a stalled process does not catch up in a burst.
        this.nextPeriodicAt = now + this.period();
        this.periodicPending = true;
        if (!this.requested) this.requestedAt = now;
        this.requested = true;
      }
      const due = this.dueAt();
      if (due > now) {
        await this.waitFor(Math.min(due, this.nextPeriodicAt) - now);
        continue;
      }
      await this.runOnce();
    }
    this.notify();
  }

  private async runOnce(): Promise<void> {
    const reason: RunReason = this.periodicPending ? 'periodic' : this.retryAt !== undefined ? 'retry' : 'requested';
    this.requested = false;
    this.urgent = false;
    this.periodicPending = false;
    this.retryAt = undefined;
    this.inRun = true;
    if (reason === 'periodic') this.stats.periodic++;
    if (reason === 'retry') this.stats.retries++;
    try {
      await this.o.run(reason);
      this.backoff.reset();
    } catch (err) {
      this.stats.failures++;
      const delay = this.backoff.next();
      this.retryAt = this.o.clock.now() + delay;
      this.o.onError?.(err, delay, this.backoff.attempts);
    } finally {
      this.stats.runs++;
      this.lastEnd = this.o.clock.now();
      this.inRun = false;
      this.notify();
    }
  }

  /** Sleeps `ms` (Infinity: until poked), returning early when poked or stopped. */
  private async waitFor(ms: number): Promise<void> {
    if (this.stopped) return;
    const poked = new Promise<void>((resolve) => (this.wake = resolve));
    if (!Number.isFinite(ms)) {
      await poked;
      return;
    }
    const ac = new AbortController();
    await Promise.race([this.o.clock.sleep(ms, ac.signal), poked]);
    this.wake = undefined;
    ac.abort();
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}
