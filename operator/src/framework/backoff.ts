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
  /** Uniform in [0, 1); default Math.random. Injected so tests can pin the jitter. */
  random?: () => number;
  /**
   * Forget past failures once this long has passed since the last one (client-go's backoff manager
   * `resetDuration`): a retry after a long quiet period starts from initialMs again even if nobody
   * called reset(). Needs `clock`; default off.
   */
  resetAfterMs?: number;
  clock?: Pick<Clock, 'now'>;
  /** Upper bound on a server's Retry-After that delayAfter() honours; default 60 s. */
  maxRetryAfterMs?: number;
}

/**
 * Exponential backoff: initialMs, initialMs*factor, ... capped at maxMs, each delay jittered
 * downwards; reset() after a success.
 *
 * The one backoff of the framework: the informer's list/watch, the Runner's retries (runner.ts:
 * the agent's syncs and NpmNode reports, the agent DaemonSet manager), the work queue's per-key
 * retries (queue.ts) and the Converger's in-call retries use it. A server that answers 429/503 with Retry-After is obeyed instead (delayAfter()): the server
 * knows when it will be ready, and its throttling is not our failure, so it does not grow the next
 * delay. The cap is what bounds catch-up after an outage: the first attempt after the server is back
 * comes at most maxMs later, so keep maxMs small where freshness matters.
 */
export class Backoff {
  private attempt = 0;
  private lastFailureAt: number | undefined;
  private readonly factor: number;
  private readonly jitter: number;
  private readonly random: () => number;

  constructor(private readonly opts: BackoffOptions) {
    if (!(opts.initialMs >= 0) || !(opts.maxMs >= opts.initialMs)) {
      throw new Error(`invalid backoff: initialMs=${opts.initialMs} maxMs=${opts.maxMs}`);
    }
    if (opts.resetAfterMs !== undefined && !opts.clock) throw new Error('backoff: resetAfterMs needs a clock');
    this.factor = opts.factor ?? 2;
    this.jitter = Math.min(1, Math.max(0, opts.jitter ?? 0));
    this.random = opts.random ?? Math.random;
  }

  /** The delay before the next attempt; each call grows the following one. */
  next(): number {
    const now = this.opts.clock?.now();
    if (now !== undefined && this.opts.resetAfterMs !== undefined && this.lastFailureAt !== undefined && now - this.lastFailureAt >= this.opts.resetAfterMs) {
      this.attempt = 0;
    }
    this.lastFailureAt = now;
    // The exponent is capped so a long outage cannot overflow to Infinity (or NaN for initialMs 0).
    const raw = Math.min(this.opts.maxMs, this.opts.initialMs * Math.pow(this.factor, Math.min(this.attempt, 64)));
    this.attempt++;
    return Math.round(raw * (1 - this.jitter * this.random()));
  }

  /**
   * The delay before retrying after `err`: the server's Retry-After (capped at maxRetryAfterMs) when
   * it gave one, without counting a failure; otherwise next().
   */
  delayAfter(err: unknown): number {
    const ra = retryAfterMs(err);
    if (ra !== undefined) return Math.min(ra, this.opts.maxRetryAfterMs ?? 60_000);
    return this.next();
  }

  /** Failures since the last reset(). */
  get attempts(): number {
    return this.attempt;
  }

  reset(): void {
    this.attempt = 0;
    this.lastFailureAt = undefined;
  }
}

/**
 * The Retry-After an error carries, in ms: the HTTP header (seconds; client-node's ApiException and
 * our watch transport keep the response headers) or a metav1.Status's details.retryAfterSeconds (an
 * in-stream watch ERROR event). Only for 429 and 5xx, where the header means "try again then".
 * HTTP dates are not used by the API server and are ignored.
 */
export function retryAfterMs(err: unknown): number | undefined {
  if (!err || typeof err !== 'object') return undefined;
  const e = err as { code?: unknown; statusCode?: unknown; headers?: unknown; status?: unknown; details?: unknown };
  const code = typeof e.statusCode === 'number' ? e.statusCode : typeof e.code === 'number' ? e.code : undefined;
  if (code === undefined || (code !== 429 && code < 500)) return undefined;
  let seconds: unknown;
  if (e.headers && typeof e.headers === 'object') {
    const h = e.headers as Record<string, unknown>;
    seconds = h['retry-after'] ?? h['Retry-After'];
  }
  if (seconds === undefined) {
    // A Status object: directly, or kept by WatchStatusError as `status`.
    const status = (e.status && typeof e.status === 'object' ? e.status : e) as { details?: { retryAfterSeconds?: unknown } };
    seconds = status.details?.retryAfterSeconds;
  }
  const n = typeof seconds === 'number' ? seconds : typeof seconds === 'string' && /^\s*\d+\s*$/.test(seconds) ? Number(seconds) : NaN;
  return Number.isFinite(n) && n >= 0 ? n * 1000 : undefined;
}
