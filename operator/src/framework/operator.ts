/**
 * Operator base class: the API shape of @dot-i/k8s-operator (init(), watchResource, a finalizer
 * helper, status patch, start/stop) on our own informers and work queues. See ADR 0003 for why we
 * do not use that library.
 *
 * Lifecycle
 *  - start(): init() (the subclass registers watches and queues), then every informer lists and
 *    runs its handlers for the initial objects (in parallel), then the queues start. So a worker
 *    never runs before all caches have synced: reconcile may trust the caches.
 *  - stop(): informers stop first (no new events), then queues (in-flight workers finish).
 *    Idempotent; safe to call from a signal handler.
 *  - Handlers and workers never crash the process: informers and queues catch and log.
 * Typical use: handlers only `queue.add(objectKey(obj))`; the worker re-reads the informer cache
 * (level-based), calls handleFinalizer(), computes, writes, then patchStatus().
 */
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { Informer } from './informer.js';
import { PatchStrategy, formatError, isNotFound, patchObject, type ResourceRef } from './kube.js';
import { WorkQueue, type WorkQueueOptions } from './queue.js';

export interface OperatorOptions {
  kc: KubeConfig;
  log?: (msg: string) => void;
}

export interface ResourceHandlers<T> {
  add?: (obj: T) => unknown;
  update?: (obj: T, old: T) => unknown;
  delete?: (obj: T) => unknown;
}

export interface WatchResourceOptions {
  namespace?: string;
  labelSelector?: string;
  fieldSelector?: string;
  resyncMs?: number;
}

type State = 'new' | 'starting' | 'running' | 'stopping' | 'stopped';

export abstract class Operator {
  protected readonly kc: KubeConfig;
  protected readonly log: (msg: string) => void;
  private readonly informers: Informer<KubernetesObject>[] = [];
  private readonly queues: WorkQueue[] = [];
  private state: State = 'new';
  private stopped: Promise<void> | undefined;
  private signalCleanup: (() => void) | undefined;

  constructor(opts: OperatorOptions) {
    this.kc = opts.kc;
    this.log = opts.log ?? ((m: string) => void process.stderr.write(`${m}\n`));
  }

  /** Register watches (watchResource) and queues (createQueue). Called once by start(). */
  protected abstract init(): Promise<void>;

  /** An informer for `resource`, started by start(). Call from init(). */
  protected watchResource<T extends KubernetesObject>(
    resource: ResourceRef,
    handlers: ResourceHandlers<T>,
    opts: WatchResourceOptions = {},
  ): Informer<T> {
    if (this.state !== 'new' && this.state !== 'starting') throw new Error('watchResource() must be called from init()');
    const inf = new Informer<T>({ kc: this.kc, resource, log: this.log, ...opts });
    if (handlers.add) inf.onAdd(handlers.add);
    if (handlers.update) inf.onUpdate(handlers.update);
    if (handlers.delete) inf.onDelete(handlers.delete);
    this.informers.push(inf as unknown as Informer<KubernetesObject>);
    return inf;
  }

  /** A work queue started once every informer has synced, stopped by stop(). Call from init(). */
  protected createQueue(opts: WorkQueueOptions): WorkQueue {
    if (this.state !== 'new' && this.state !== 'starting') throw new Error('createQueue() must be called from init()');
    const q = new WorkQueue({ log: this.log, ...opts });
    this.queues.push(q);
    return q;
  }

  /**
   * Merge-patch the status subresource. With `resourceVersion` the write is conditional (409 when
   * the object changed since): use it when the status was computed from that version.
   */
  protected patchStatus<T = KubernetesObject>(
    resource: ResourceRef,
    namespace: string | undefined,
    name: string,
    status: object,
    resourceVersion?: string,
  ): Promise<T> {
    const body = resourceVersion ? { metadata: { resourceVersion }, status } : { status };
    return patchObject<T>(this.kc, resource, namespace, name, body, PatchStrategy.MergePatch, 'status');
  }

  /**
   * Finalizer protocol. Not being deleted: add `finalizer` if missing (a JSON patch guarded by the
   * object's resourceVersion, so a stale cache cannot clobber other finalizers) and return false:
   * reconcile as usual. Being deleted with our finalizer: run `cleanup`, remove the finalizer (a
   * JSON patch that tests the entry it removes), return true: do not reconcile. Being deleted
   * without it: return true. Errors propagate (the queue retries); cleanup must be idempotent.
   */
  protected async handleFinalizer<T extends KubernetesObject>(
    resource: ResourceRef,
    obj: T,
    finalizer: string,
    cleanup: (obj: T) => Promise<void>,
  ): Promise<boolean> {
    const meta = obj.metadata;
    const name = meta?.name;
    if (!name) throw new Error(`${resource.kind} without metadata.name`);
    const finalizers = meta?.finalizers ?? [];
    const idx = finalizers.indexOf(finalizer);
    if (meta?.deletionTimestamp) {
      if (idx < 0) return true;
      await cleanup(obj);
      try {
        await patchObject(this.kc, resource, meta.namespace, name, [
          { op: 'test', path: `/metadata/finalizers/${idx}`, value: finalizer },
          { op: 'remove', path: `/metadata/finalizers/${idx}` },
        ], PatchStrategy.JsonPatch);
      } catch (err) {
        if (!isNotFound(err)) throw new Error(`removing finalizer ${finalizer} from ${resource.kind} ${name}: ${formatError(err)}`, { cause: err });
      }
      return true;
    }
    if (idx >= 0) return false;
    const rv = meta?.resourceVersion;
    const ops: object[] = rv ? [{ op: 'test', path: '/metadata/resourceVersion', value: rv }] : [];
    ops.push(
      meta?.finalizers
        ? { op: 'add', path: '/metadata/finalizers/-', value: finalizer }
        : { op: 'add', path: '/metadata/finalizers', value: [finalizer] },
    );
    try {
      await patchObject(this.kc, resource, meta?.namespace, name, ops, PatchStrategy.JsonPatch);
    } catch (err) {
      throw new Error(`adding finalizer ${finalizer} to ${resource.kind} ${name}: ${formatError(err)}`, { cause: err });
    }
    return false;
  }

  /** init(), sync every informer, start the queues. Rejects if init() or an informer start fails. */
  async start(): Promise<void> {
    if (this.state !== 'new') throw new Error(`operator cannot start: it is ${this.state}`);
    this.state = 'starting';
    await this.init();
    await Promise.all(this.informers.map((i) => i.start()));
    if (this.state !== 'starting') return; // stop() came first
    for (const q of this.queues) q.start();
    this.state = 'running';
    this.log(`operator started: ${this.informers.length} informer(s) synced, ${this.queues.length} queue(s)`);
  }

  /** Stop informers, then queues (waiting for in-flight workers). Idempotent. */
  stop(): Promise<void> {
    this.stopped ??= (async () => {
      this.state = 'stopping';
      await Promise.all(this.informers.map((i) => i.stop()));
      await Promise.all(this.queues.map((q) => q.stop()));
      this.state = 'stopped';
      this.signalCleanup?.();
      this.log('operator stopped');
    })();
    return this.stopped;
  }

  /**
   * SIGTERM/SIGINT: stop() gracefully, then exit 0 (`exit: false` leaves the process alone). A
   * second signal, or stop() outlasting `timeoutMs` (default 30 s), exits 1 at once.
   */
  installSignalHandlers(opts: { exit?: boolean; timeoutMs?: number } = {}): void {
    if (this.signalCleanup) return;
    const exit = opts.exit ?? true;
    let received = false;
    const onSignal = (sig: NodeJS.Signals): void => {
      if (received) {
        this.log(`${sig} again: exiting now`);
        process.exit(1);
      }
      received = true;
      this.log(`${sig}: stopping`);
      const timer = setTimeout(() => {
        this.log(`stop() took longer than ${opts.timeoutMs ?? 30_000} ms: exiting`);
        process.exit(1);
      }, opts.timeoutMs ?? 30_000);
      timer.unref();
      this.stop().then(
        () => {
          clearTimeout(timer);
          if (exit) process.exit(0);
        },
        (err: unknown) => {
          this.log(`stop failed: ${formatError(err)}`);
          if (exit) process.exit(1);
        },
      );
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
    this.signalCleanup = () => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
    };
  }
}
