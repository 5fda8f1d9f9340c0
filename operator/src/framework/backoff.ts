/**
 * Time and retry primitives of the reconciliation framework.
 *
 * Every component takes a `Clock` so unit tests can drive time (sinon fake timers over `realClock`,
 * or a scripted clock). `now()` is wall-clock epoch milliseconds: the leader elector writes it into
 * Lease objects, so it must be comparable across processes (not `performance.now()`).
 */

export interface Clock {
  /** Wall-clock time, epoch milliseconds. */
  now(): number;
  /** Resolve after `ms`; resolve early (never reject) when `signal` aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const realClock: Clock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve) => {
      if (signal?.aborted) return resolve();
      const done = (): void => {
        clearTimeout(timer);
        signal?.removeEventListener('abort', done);
        resolve();
      };
      const timer = setTimeout(done, Math.max(0, ms));
      signal?.addEventListener('abort', done, { once: true });
    }),
};

export interface BackoffOptions {
  initialMs: number;
  maxMs: number;
  /** Growth per failure; default 2. */
  factor?: number;
  /**
   * Randomise each delay downwards by up to this fraction (0..1) so many clients restarting at once
   * spread out; default 0 (deterministic).
   */
  jitter?: number;
  random?: () => number;
}

/** Exponential backoff: initialMs, initialMs*factor, ... capped at maxMs; reset() after a success. */
export class Backoff {
  private attempt = 0;
  private readonly factor: number;
  private readonly jitter: number;
  private readonly random: () => number;

  constructor(private readonly opts: BackoffOptions) {
    if (!(opts.initialMs >= 0) || !(opts.maxMs >= opts.initialMs)) {
      throw new Error(`invalid backoff: initialMs=${opts.initialMs} maxMs=${opts.maxMs}`);
    }
    this.factor = opts.factor ?? 2;
    this.jitter = Math.min(1, Math.max(0, opts.jitter ?? 0));
    this.random = opts.random ?? Math.random;
  }

  /** The delay before the next attempt; each call grows the following one. */
  next(): number {
    // The exponent is capped so a long outage cannot overflow to Infinity (or NaN for initialMs 0).
    const raw = Math.min(this.opts.maxMs, this.opts.initialMs * Math.pow(this.factor, Math.min(this.attempt, 64)));
    this.attempt++;
    return Math.round(raw * (1 - this.jitter * this.random()));
  }

  /** Failures since the last reset(). */
  get attempts(): number {
    return this.attempt;
  }

  reset(): void {
    this.attempt = 0;
  }
}
