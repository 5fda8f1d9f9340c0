/**
 * WorkQueue: keys in, one worker call per key at a time, retries with backoff.
 *
 * Model (after client-go's workqueue: a FIFO with dirty/processing sets + a rate-limited delay)
 *  - `ready` is a FIFO of distinct keys (a Set keeps insertion order). add() of a key already
 *    ready is a no-op and keeps its place, so a hot key that is added again and again still waits
 *    its turn behind the keys queued before it: no starvation.
 *  - A key is never given to two workers. add() of a key being processed marks it dirty; when the
 *    worker finishes, the key goes to the END of the FIFO and runs again (so the worker always sees
 *    the latest state: level-based).
 *  - A worker that throws is retried after max(per-key exponential backoff, overall token bucket):
 *    the framework Backoff per key (baseDelayMs * 2^(failures-1) capped at maxDelayMs; a 429/503's
 *    Retry-After as given, without growing the key's delay), and at most `ratePerSecond` retries per
 *    second after a burst of `burst`. Success resets the key's failure count. A TerminalError
 *    (invalid input, say) is logged and not retried.
 *  - Worker errors never escape: no unhandled rejection, no crash.
 *  - A worker that returns `{ requeueAfterMs }` asked to run again later (an expected wait: a
 *    ruleset waiting for its sets, say): not a failure, not logged, no backoff, no token; it
 *    resets the key's failure count like a success. Whatever it waits for usually wakes it sooner
 *    with add(); the delay is only the fallback.
 *  - addAfter(key, ms) keeps the earliest pending due time per key.
 *  - stop() drops queued and delayed keys, stops handing out work and resolves once the workers in
 *    flight have returned.
 * Effects: the injected Clock (delays); the worker.
 */
import { Backoff, realClock, type Clock } from './backoff.js';
import { formatError } from './kube.js';

/** Thrown by a worker for a failure that retrying cannot fix; the key is not requeued. */
export class TerminalError extends Error {
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = 'TerminalError';
  }
}

/** What a worker may return: nothing (done), or a request to run the key again later. */
export interface WorkResult {
  /** Run the key again after this delay (ms), unless it is added sooner. */
  requeueAfterMs?: number;
}

export interface WorkQueueOptions {
  name: string;
  worker: (key: string) => Promise<void | WorkResult>;
  /** Workers running at once; default 4. */
  concurrency?: number;
  /** First retry delay of a key; default 5 ms. */
  baseDelayMs?: number;
  /** Largest retry delay of a key; default 60 s. */
  maxDelayMs?: number;
  /** Retries per second over all keys (token bucket); default 50. */
  ratePerSecond?: number;
  /** Token bucket size; default 100. */
  burst?: number;
  clock?: Clock;
  log?: (msg: string) => void;
}

export interface WorkQueueStats {
  /** Keys ready to run. */
  queued: number;
  /** Keys being processed. */
  inFlight: number;
  /** Keys waiting for a delay (retry or addAfter). */
  delayed: number;
  /** Retries scheduled after failures. */
  retries: number;
  /** Worker calls that threw (TerminalError included). */
  failures: number;
  /** Worker calls that succeeded. */
  processed: number;
  /** Worker calls that asked to run again later (expected waits, not failures). */
  requeues: number;
}

export class WorkQueue {
  private readonly ready = new Set<string>();
  private readonly processing = new Set<string>();
  private readonly dirty = new Set<string>();
  private readonly waiting = new Map<string, { due: number; ac: AbortController }>();
  /** Per failing key, the framework Backoff (forgotten when the key succeeds or fails for good). */
  private readonly failuresByKey = new Map<string, Backoff>();
  private readonly inflight = new Set<Promise<void>>();
  private readonly clock: Clock;
  private readonly log: (msg: string) => void;
  private readonly concurrency: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly rate: number;
  private readonly burst: number;
  private tokens: number;
  private tokensAt: number;
  private started = false;
  private stopped = false;
  private pumpScheduled = false;
  private counters = { retries: 0, failures: 0, processed: 0, requeues: 0 };

  constructor(private readonly o: WorkQueueOptions) {
    this.clock = o.clock ?? realClock;
    const sink = o.log ?? ((m: string) => void process.stderr.write(`${m}\n`));
    this.log = (m) => sink(`queue ${o.name}: ${m}`);
    this.concurrency = Math.max(1, o.concurrency ?? 4);
    this.baseDelayMs = o.baseDelayMs ?? 5;
    this.maxDelayMs = o.maxDelayMs ?? 60_000;
    this.rate = o.ratePerSecond ?? 50;
    this.burst = o.burst ?? 100;
    if (!(this.rate > 0) || !(this.burst >= 1)) throw new Error(`queue ${o.name}: ratePerSecond must be > 0 and burst >= 1`);
    this.tokens = this.burst;
    this.tokensAt = this.clock.now();
  }

  add(key: string): void {
    if (this.stopped) return;
    if (this.processing.has(key)) {
      this.dirty.add(key);
      return;
    }
    this.ready.add(key);
    this.schedulePump();
  }

  addAfter(key: string, delayMs: number): void {
    if (this.stopped) return;
    if (!(delayMs > 0)) return this.add(key);
    const due = this.clock.now() + delayMs;
    const existing = this.waiting.get(key);
    if (existing && existing.due <= due) return;
    existing?.ac.abort();
    const ac = new AbortController();
    this.waiting.set(key, { due, ac });
    void this.clock.sleep(delayMs, ac.signal).then(() => {
      if (ac.signal.aborted) return;
      this.waiting.delete(key);
      this.add(key);
    });
  }

  start(): void {
    if (this.stopped) throw new Error(`queue ${this.o.name} is stopped`);
    this.started = true;
    this.schedulePump();
  }

  /** Stop handing out keys, drop queued/delayed ones, wait for the workers in flight. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const w of this.waiting.values()) w.ac.abort();
    this.waiting.clear();
    this.ready.clear();
    this.dirty.clear();
    await Promise.all([...this.inflight]);
  }

  get length(): number {
    return this.ready.size;
  }

  /** Consecutive failures of `key` since its last success. */
  failuresOf(key: string): number {
    return this.failuresByKey.get(key)?.attempts ?? 0;
  }

  stats(): WorkQueueStats {
    return {
      queued: this.ready.size,
      inFlight: this.processing.size,
      delayed: this.waiting.size,
      ...this.counters,
    };
  }

  // Workers start from a later macrotask, never inside add(): a caller (an informer handler, say)
  // must not find the reconcile's synchronous prefix running inside its own call, and a key that
  // re-adds itself from a worker without doing I/O must not starve the event loop (a microtask
  // would run it again before any timer or socket gets a turn).
  private schedulePump(): void {
    if (this.pumpScheduled || !this.started) return;
    this.pumpScheduled = true;
    setImmediate(() => {
      this.pumpScheduled = false;
      this.pump();
    });
  }

  private pump(): void {
    while (this.started && !this.stopped && this.processing.size < this.concurrency) {
      const next = this.ready.values().next();
      if (next.done) return;
      const key = next.value;
      this.ready.delete(key);
      this.processing.add(key);
      const p: Promise<void> = this.process(key).finally(() => this.inflight.delete(p));
      this.inflight.add(p);
    }
  }

  private async process(key: string): Promise<void> {
    try {
      const result = await this.o.worker(key);
      this.counters.processed++;
      this.failuresByKey.delete(key);
      const after = result?.requeueAfterMs;
      if (after !== undefined && !this.stopped) {
        this.counters.requeues++;
        this.addAfter(key, after);
      }
    } catch (err) {
      this.counters.failures++;
      if (err instanceof TerminalError) {
        this.failuresByKey.delete(key);
        this.log(`${key}: terminal error, not retrying: ${formatError(err)}`);
      } else {
        let backoff = this.failuresByKey.get(key);
        if (!backoff) this.failuresByKey.set(key, (backoff = new Backoff({ initialMs: this.baseDelayMs, maxMs: this.maxDelayMs })));
        // The API server's Retry-After (429, 503) is obeyed as given and does not grow the key's delay.
        const delay = Math.max(backoff.delayAfter(err), this.bucketDelay());
        const n = backoff.attempts;
        if (!this.stopped) {
          this.counters.retries++;
          this.log(`${key}: failed (${n ? `attempt ${n}` : 'the server asked to retry later'}), retrying in ${Math.round(delay)} ms: ${formatError(err)}`);
          this.addAfter(key, delay);
        }
      }
    } finally {
      this.processing.delete(key);
      if (this.dirty.delete(key) && !this.stopped) this.ready.add(key);
      this.schedulePump();
    }
  }

  /** Reserve one token; the wait until it is ours (0 when the bucket has one). */
  private bucketDelay(): number {
    const now = this.clock.now();
    this.tokens = Math.min(this.burst, this.tokens + ((now - this.tokensAt) * this.rate) / 1000);
    this.tokensAt = now;
    this.tokens -= 1;
    return this.tokens >= 0 ? 0 : (-this.tokens * 1000) / this.rate;
  }
}
