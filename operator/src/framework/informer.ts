/**
 * Informer: a local cache of one resource kept current by list + watch, with add/update/delete
 * notifications.
 *
 * Model (after client-go's reflector)
 *  - start() lists (paged), fills the cache, runs the handlers, then watches FROM the list's
 *    resourceVersion with allowWatchBookmarks, so nothing between list and watch is lost. Every
 *    event and bookmark advances `lastResourceVersion`.
 *  - A watch that ends cleanly (server timeout, load balancer) is reopened from
 *    `lastResourceVersion`. A clean end that delivered nothing is treated like a failure for
 *    backoff purposes, so a server that closes at once cannot make us spin.
 *  - 410 Gone (HTTP status on the watch request, or an in-stream ERROR event with code 410): our
 *    resourceVersion was compacted away. We relist and reconcile the cache with the new list:
 *    add for new keys, update for changed resourceVersions, delete (with the last known object)
 *    for keys that vanished. The same diff runs for the periodic relist (resyncMs), which also
 *    bounds how long a silently broken watch can leave the cache stale.
 *  - Any other error (HTTP 500, connection refused, an ERROR event, a watch that outlives its
 *    timeout by a grace period) restarts list-or-watch after an exponential backoff, jittered and
 *    capped low (default 0.5 s .. 5 s): during an API server outage the cap, not the outage's
 *    length, bounds how long after the server's return we reconnect. A 429/5xx with Retry-After
 *    (the API server's "storage is (re)initializing" right after a restart) waits exactly that and
 *    does not grow the backoff. A successful list, and a watch that delivered something or stayed
 *    open HEALTHY_WATCH_MS, reset it, so one failure after a healthy period retries at once.
 *  - Cache writes happen in event order as events arrive; handler calls are queued and run one at
 *    a time in the same order, awaited. A handler that throws or rejects is logged; the informer
 *    and the other handlers go on. Handlers therefore may see get() already reflecting later
 *    events: they should be level-based (queue keys, re-read the cache).
 *  - stop() aborts the watch request and any backoff sleep, drops queued notifications, waits for
 *    the handler that is running, and resolves; no handler runs afterwards.
 * Effects: only through listFn/watchFn (default: the API of `kc`, kube.ts kubeApi()) and the
 * injected Clock.
 */
import type { KubernetesObject } from '@kubernetes/client-node';
import { Backoff, realClock, type BackoffOptions, type Clock } from './backoff.js';
import type { WatchFn, WatchHandle, WatchQuery } from './client.js';
import { formatError, isGone, kubeApi, listObjects, objectKey, resourcePath, type KubeSource, type ListResult, type ResourceRef } from './kube.js';

export type { WatchFn, WatchHandle, WatchQuery };

/** Lists the collection; must return the list's resourceVersion. */
export type ListFn<T> = (req: {
  path: string;
  resource: ResourceRef;
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
}) => Promise<ListResult<T>>;

export interface InformerOptions<T = KubernetesObject> {
  /** The API server: client-node's KubeConfig or a KubeApi (framework/client.ts KubeClient). */
  kc: KubeSource;
  resource: ResourceRef;
  /** Only this namespace (namespaced resources); default all namespaces. */
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  /** Periodic relist + diff; default 5 min, 0 = off. */
  resyncMs?: number;
  /** Backoff between failed list/watch attempts; default 0.5 s .. 5 s, jitter 0.5 (see the header). */
  backoff?: Pick<BackoffOptions, 'initialMs' | 'maxMs' | 'jitter' | 'random'>;
  /** Server-side watch timeout (timeoutSeconds); default 5-10 min, randomised per watch. */
  watchTimeoutSeconds?: number;
  clock?: Clock;
  log?: (msg: string) => void;
  /** Injectable transport (unit tests); default: paged GET through `kc`. */
  listFn?: ListFn<T>;
  /** Injectable transport (unit tests); default: a watch request through `kc`. */
  watchFn?: WatchFn;
  /**
   * Applied to every listed and watched object (ADDED, MODIFIED, DELETED) before it is cached and
   * handed to the handlers: a cache keeps only the fields its user reads (e.g. no managedFields).
   * It must keep metadata.name, namespace and resourceVersion; default: the object as received.
   */
  transform?: (obj: T) => T;
}

type Outcome =
  | { kind: 'closed'; events: number }
  | { kind: 'gone'; err: unknown }
  | { kind: 'resync' }
  | { kind: 'error'; err: unknown }
  | { kind: 'stopped' };

interface StatusObject {
  kind?: string;
  code?: number;
  reason?: string;
  message?: string;
}

/** An in-stream watch ERROR event, as an Error that isGone()/statusCode() understand. */
export class WatchStatusError extends Error {
  readonly statusCode: number | undefined;
  constructor(readonly status: StatusObject) {
    super(`watch ERROR event: ${status.code ?? '?'} ${status.reason ?? ''}: ${status.message ?? ''}`.trim());
    this.name = 'WatchStatusError';
    this.statusCode = status.code;
  }
}

/** Extra time a watch may stay open past its server-side timeout before we consider it dead. */
const WATCH_GRACE_MS = 30_000;
/** A watch open this long counts as a success for backoff purposes even if it delivered nothing. */
export const HEALTHY_WATCH_MS = 5_000;
export const DEFAULT_INFORMER_BACKOFF = { initialMs: 500, maxMs: 5_000, jitter: 0.5 } as const;

// Handlers return void or a promise (awaited); any other return value is ignored, so
// `(o) => cond && queue.add(key(o))` is fine.
type AddFn<T> = (obj: T) => unknown;
type UpdateFn<T> = (obj: T, old: T) => unknown;
type DeleteFn<T> = (obj: T) => unknown;

export class Informer<T extends KubernetesObject> {
  private readonly cache = new Map<string, T>();
  private readonly addFns: AddFn<T>[] = [];
  private readonly updateFns: UpdateFn<T>[] = [];
  private readonly deleteFns: DeleteFn<T>[] = [];
  private readonly clock: Clock;
  private readonly log: (msg: string) => void;
  private readonly backoff: Backoff;
  private readonly listFn: ListFn<T>;
  private readonly watchFn: WatchFn;
  private readonly resyncMs: number;
  private readonly path: string;
  private readonly stopAc = new AbortController();

  private lastRV = '';
  private synced = false;
  private started = false;
  private stopping = false;
  private nextResyncAt = Infinity;
  /** Handler calls run one after another on this chain. */
  private pending: Promise<void> = Promise.resolve();
  private loop: Promise<void> | undefined;
  /** Ends the current watch (set while one is open). */
  private endWatch: ((o: Outcome) => void) | undefined;

  constructor(private readonly opts: InformerOptions<T>) {
    this.clock = opts.clock ?? realClock;
    const prefix = `informer ${opts.resource.plural}${opts.namespace ? ` (ns ${opts.namespace})` : ''}: `;
    const sink = opts.log ?? ((m: string) => void process.stderr.write(`${m}\n`));
    this.log = (m) => sink(prefix + m);
    this.backoff = new Backoff({ ...(opts.backoff ?? DEFAULT_INFORMER_BACKOFF) });
    this.resyncMs = opts.resyncMs ?? 5 * 60_000;
    this.path = resourcePath(opts.resource, opts.namespace);
    this.listFn = opts.listFn ?? defaultList<T>(opts.kc, opts.transform);
    this.watchFn = opts.watchFn ?? defaultWatch(opts.kc);
  }

  onAdd(fn: AddFn<T>): void {
    this.addFns.push(fn);
  }
  onUpdate(fn: UpdateFn<T>): void {
    this.updateFns.push(fn);
  }
  onDelete(fn: DeleteFn<T>): void {
    this.deleteFns.push(fn);
  }

  get(key: string): T | undefined {
    return this.cache.get(key);
  }
  list(): T[] {
    return [...this.cache.values()];
  }
  keys(): string[] {
    return [...this.cache.keys()];
  }
  hasSynced(): boolean {
    return this.synced;
  }
  /** The resourceVersion the next watch starts from (last event, bookmark or list). */
  lastResourceVersion(): string {
    return this.lastRV;
  }

  /**
   * Lists (retrying with backoff until it succeeds), fills the cache, runs the handlers for the
   * initial objects, starts the watch loop and resolves. Rejects only if stop() comes first.
   */
  async start(): Promise<void> {
    if (this.started) throw new Error('informer already started');
    this.started = true;
    for (;;) {
      if (this.stopping) throw new Error('informer stopped before its initial list');
      try {
        await this.relist('initial list');
        break;
      } catch (err) {
        if (this.stopping) throw new Error('informer stopped before its initial list', { cause: err });
        const delay = this.backoff.delayAfter(err);
        this.log(`initial list failed, retrying in ${delay} ms: ${formatError(err)}`);
        await this.clock.sleep(delay, this.stopAc.signal);
      }
    }
    this.backoff.reset();
    await this.pending;
    if (this.stopping) throw new Error('informer stopped before its initial list');
    this.loop = this.run();
  }

  /** Ends the watch, stops retries, waits for a running handler; idempotent. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.stopAc.abort();
    this.endWatch?.({ kind: 'stopped' });
    await this.loop;
    await this.pending;
  }

  private async run(): Promise<void> {
    let needList = false;
    while (!this.stopping) {
      if (needList) {
        try {
          await this.relist('relist');
          needList = false;
          this.backoff.reset();
        } catch (err) {
          if (this.stopping) break;
          const delay = this.backoff.delayAfter(err);
          this.log(`relist failed, retrying in ${delay} ms: ${formatError(err)}`);
          await this.clock.sleep(delay, this.stopAc.signal);
          continue;
        }
      }
      const { outcome: o, healthy } = await this.watchOnce();
      if (this.stopping || o.kind === 'stopped') break;
      // A watch that worked for a while is a success: whatever ended it is a fresh failure, retried
      // after initialMs, not after the delay an earlier outage had grown to.
      if (healthy) this.backoff.reset();
      switch (o.kind) {
        case 'closed':
          if (!healthy) {
            // A server or proxy that closes every watch at once must not make us spin.
            await this.clock.sleep(this.backoff.next(), this.stopAc.signal);
          }
          break;
        case 'resync':
          needList = true;
          break;
        case 'gone':
          this.log(`resourceVersion ${this.lastRV} is gone (${formatError(o.err)}); relisting`);
          needList = true;
          break;
        case 'error': {
          const delay = this.backoff.delayAfter(o.err);
          this.log(`watch failed, restarting in ${delay} ms: ${formatError(o.err)}`);
          await this.clock.sleep(delay, this.stopAc.signal);
          break;
        }
      }
    }
  }

  /**
   * One watch request from lastRV; resolves with why it ended, and whether it was healthy (opened
   * and delivered something or stayed open HEALTHY_WATCH_MS). Never rejects.
   */
  private async watchOnce(): Promise<{ outcome: Outcome; healthy: boolean }> {
    const timers = new AbortController();
    let handle: WatchHandle | undefined;
    let finished = false;
    let events = 0;
    let resolveEnd!: (o: Outcome) => void;
    const ended = new Promise<Outcome>((r) => (resolveEnd = r));
    const finish = (o: Outcome): void => {
      if (finished) return;
      finished = true;
      timers.abort();
      handle?.abort(); // at once, so stop() has closed the stream when it returns; no-op if ended
      resolveEnd(o);
    };
    this.endWatch = finish;

    const onEvent = (type: string, obj: unknown): void => {
      if (finished || this.stopping) return; // we decided to end this watch; later lines are moot
      events++;
      const out = this.apply(type, obj);
      if (out) finish(out);
    };
    const onDone = (err: unknown): void => {
      if (err === null || err === undefined) finish({ kind: 'closed', events });
      else if (isGone(err)) finish({ kind: 'gone', err });
      else finish({ kind: 'error', err });
    };

    const timeoutSeconds = this.opts.watchTimeoutSeconds ?? Math.floor(300 * (1 + Math.random()));
    const query: WatchQuery = {
      resourceVersion: this.lastRV,
      allowWatchBookmarks: true,
      timeoutSeconds,
      labelSelector: this.opts.labelSelector,
      fieldSelector: this.opts.fieldSelector,
    };
    if (this.resyncMs > 0) {
      const wait = Math.max(0, this.nextResyncAt - this.clock.now());
      void this.clock.sleep(wait, timers.signal).then(() => {
        if (!timers.signal.aborted) finish({ kind: 'resync' });
      });
    }
    void this.clock.sleep(timeoutSeconds * 1000 + WATCH_GRACE_MS, timers.signal).then(() => {
      if (!timers.signal.aborted) {
        finish({ kind: 'error', err: new Error(`watch still open ${WATCH_GRACE_MS} ms past its ${timeoutSeconds} s timeout`) });
      }
    });

    let openedAt: number | undefined;
    try {
      handle = await this.watchFn(this.path, query, onEvent, onDone);
      if (finished) handle.abort(); // ended (stop(), an early error) while the request was opening
      else openedAt = this.clock.now();
    } catch (err) {
      finish(isGone(err) ? { kind: 'gone', err } : { kind: 'error', err });
    }
    const outcome = await ended;
    this.endWatch = undefined;
    const healthy = openedAt !== undefined && (events > 0 || this.clock.now() - openedAt >= HEALTHY_WATCH_MS);
    return { outcome, healthy };
  }

  /** Apply one watch event to the cache and queue its notification; an Outcome ends the watch. */
  private apply(type: string, raw: unknown): Outcome | undefined {
    let obj = raw as T;
    switch (type) {
      case 'ADDED':
      case 'MODIFIED': {
        const key = this.keyOf(obj, type);
        if (key !== undefined && this.opts.transform) obj = this.opts.transform(obj);
        if (key === undefined) return undefined;
        const old = this.cache.get(key);
        this.cache.set(key, obj);
        this.advance(obj);
        if (old === undefined) this.notifyAdd(obj);
        else if (old.metadata?.resourceVersion !== obj.metadata?.resourceVersion) this.notifyUpdate(obj, old);
        return undefined;
      }
      case 'DELETED': {
        const key = this.keyOf(obj, type);
        if (key === undefined) return undefined;
        if (this.opts.transform) obj = this.opts.transform(obj);
        this.cache.delete(key);
        this.advance(obj);
        this.notifyDelete(obj);
        return undefined;
      }
      case 'BOOKMARK':
        this.advance(obj);
        return undefined;
      case 'ERROR': {
        const err = new WatchStatusError((raw ?? {}) as StatusObject);
        return err.statusCode === 410 ? { kind: 'gone', err } : { kind: 'error', err };
      }
      default:
        this.log(`ignoring watch event of unknown type ${JSON.stringify(type)}`);
        return undefined;
    }
  }

  private keyOf(obj: T, type: string): string | undefined {
    if (!obj?.metadata?.name) {
      this.log(`ignoring ${type} event without metadata.name`);
      return undefined;
    }
    return objectKey(obj);
  }

  private advance(obj: { metadata?: { resourceVersion?: string } } | undefined): void {
    const rv = obj?.metadata?.resourceVersion;
    if (rv) this.lastRV = rv;
  }

  /** List, then make the cache equal to the list, notifying the differences. */
  private async relist(why: string): Promise<void> {
    const res = await this.listFn({
      path: this.path,
      resource: this.opts.resource,
      namespace: this.opts.namespace,
      labelSelector: this.opts.labelSelector,
      fieldSelector: this.opts.fieldSelector,
    });
    if (this.stopping) return;
    const fresh = new Map<string, T>();
    const transform = res.transformed ? undefined : this.opts.transform;
    for (const o of res.items) {
      if (o?.metadata?.name) fresh.set(objectKey(o), transform ? transform(o) : o);
    }
    let added = 0;
    let updated = 0;
    let deleted = 0;
    for (const [key, o] of fresh) {
      const old = this.cache.get(key);
      this.cache.set(key, o);
      if (old === undefined) {
        added++;
        this.notifyAdd(o);
      } else if (old.metadata?.resourceVersion !== o.metadata?.resourceVersion) {
        updated++;
        this.notifyUpdate(o, old);
      }
    }
    for (const [key, old] of [...this.cache]) {
      if (fresh.has(key)) continue;
      this.cache.delete(key);
      deleted++;
      this.notifyDelete(old);
    }
    this.lastRV = res.resourceVersion;
    this.nextResyncAt = this.resyncMs > 0 ? this.clock.now() + this.resyncMs : Infinity;
    if (this.synced && added + updated + deleted > 0) {
      this.log(`${why} at resourceVersion ${res.resourceVersion}: ${added} added, ${updated} updated, ${deleted} deleted`);
    }
    this.synced = true;
  }

  private notifyAdd(obj: T): void {
    for (const fn of this.addFns) this.enqueue('add', obj, () => fn(obj));
  }
  private notifyUpdate(obj: T, old: T): void {
    for (const fn of this.updateFns) this.enqueue('update', obj, () => fn(obj, old));
  }
  private notifyDelete(obj: T): void {
    for (const fn of this.deleteFns) this.enqueue('delete', obj, () => fn(obj));
  }

  private enqueue(what: string, obj: T, call: () => unknown): void {
    this.pending = this.pending.then(async () => {
      if (this.stopping) return;
      try {
        await call();
      } catch (err) {
        this.log(`${what} handler for ${objectKey(obj)} failed: ${formatError(err)}`);
      }
    });
  }
}

/** Paged list through `kc`; the informer's transform is applied page by page (only one page is held untransformed). */
function defaultList<T extends KubernetesObject>(kc: KubeSource, transform: ((obj: T) => T) | undefined): ListFn<T> {
  return (req) => listObjects<T>(kubeApi(kc), req.resource, req.namespace, { labelSelector: req.labelSelector, fieldSelector: req.fieldSelector, ...(transform ? { transform } : {}) });
}

function defaultWatch(kc: KubeSource): WatchFn {
  return (path, query, onEvent, onDone) => kubeApi(kc).watch(path, query, onEvent, onDone);
}
