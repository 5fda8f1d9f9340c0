// Fakes for the framework's unit tests: a scripted list/watch transport and a Lease store.
import { ApiException, type KubernetesObject, type V1Lease } from '@kubernetes/client-node';
import { expect } from 'chai';
import sinon from 'sinon';
import type { ListFn, WatchFn, WatchHandle, WatchQuery } from '../../../operator/src/framework/informer.js';
import type { ListResult } from '../../../operator/src/framework/kube.js';
import type { LeaseApi } from '../../../operator/src/framework/leader.js';

/** Let every pending promise callback run (setImmediate is not faked by the tests' sinon clocks). */
export async function flush(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise<void>((r) => setImmediate(r));
}

export function cm(name: string, rv: string, data: Record<string, string> = {}, namespace = 'ns'): KubernetesObject & { data: Record<string, string> } {
  return { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace, resourceVersion: rv }, data };
}

export class FakeWatch implements WatchHandle {
  aborted = false;
  done = false;
  constructor(
    readonly path: string,
    readonly query: WatchQuery,
    private readonly onEvent: (type: string, obj: unknown) => void,
    private readonly onDone: (err: unknown) => void,
  ) {}
  emit(type: string, obj: unknown): void {
    if (this.aborted || this.done) return; // a closed stream delivers nothing
    this.onEvent(type, obj);
  }
  close(err: unknown = null): void {
    if (this.done) return;
    this.done = true;
    this.onDone(err);
  }
  abort(): void {
    if (this.aborted) return;
    this.aborted = true;
    // client-node's Watch reports an AbortError through done()
    this.close(Object.assign(new Error('The operation was aborted.'), { name: 'AbortError' }));
  }
}

type ListStep<T> = ListResult<T> | Error | (() => Promise<ListResult<T>>);

/** Scripted transport: lists come from `lists` in order (the last one repeats), watches are recorded. */
export class FakeTransport<T extends KubernetesObject = KubernetesObject> {
  lists: ListStep<T>[] = [];
  listCalls = 0;
  watches: FakeWatch[] = [];
  /** Errors for the next watch requests: delivered through done() like an HTTP error status. */
  watchErrors: unknown[] = [];

  listFn: ListFn<T> = async () => {
    const step = this.lists.length > 1 ? this.lists.shift() : this.lists[0];
    this.listCalls++;
    if (step === undefined) throw new Error('FakeTransport: no list scripted');
    if (step instanceof Error) throw step;
    if (typeof step === 'function') return step();
    return { items: [...step.items], resourceVersion: step.resourceVersion };
  };

  watchFn: WatchFn = async (path, query, onEvent, onDone) => {
    const w = new FakeWatch(path, query, onEvent, onDone);
    this.watches.push(w);
    const err = this.watchErrors.shift();
    if (err !== undefined) w.close(err);
    return w;
  };

  get current(): FakeWatch {
    const w = this.watches[this.watches.length - 1];
    if (!w) throw new Error('no watch opened yet');
    return w;
  }
}

/** An HTTP error as client-node's Watch reports it (non-200 status). */
export function httpError(status: number, text = 'error'): Error {
  return Object.assign(new Error(text), { statusCode: status });
}

export function apiError(code: number, reason: string): ApiException<string> {
  return new ApiException(code, `HTTP-Code: ${code}`, JSON.stringify({ kind: 'Status', code, reason, message: reason }), {});
}

/** One Lease in memory with resourceVersion checks; round-trips through JSON like the wire. */
export class FakeLeaseStore {
  lease: V1Lease | undefined;
  rv = 0;
  writes: V1Lease[] = [];

  /** An API view for one elector; `down()` makes its calls fail (a partition). */
  api(): LeaseApi & { down: boolean } {
    return FakeLeaseStore.view(this);
  }

  private static view(store: FakeLeaseStore): LeaseApi & { down: boolean } {
    const view = {
      down: false,
      async readNamespacedLease(): Promise<V1Lease> {
        if (view.down) throw new Error('connect ECONNREFUSED');
        if (!store.lease) throw apiError(404, 'NotFound');
        return wire(store.lease);
      },
      async createNamespacedLease(p: { namespace: string; body: V1Lease }): Promise<V1Lease> {
        if (view.down) throw new Error('connect ECONNREFUSED');
        if (store.lease) throw apiError(409, 'AlreadyExists');
        store.writes.push(p.body);
        const l = wire(p.body);
        l.metadata = { ...l.metadata, resourceVersion: String(++store.rv) };
        store.lease = l;
        return wire(l);
      },
      async replaceNamespacedLease(p: { name: string; namespace: string; body: V1Lease }): Promise<V1Lease> {
        if (view.down) throw new Error('connect ECONNREFUSED');
        if (!store.lease) throw apiError(404, 'NotFound');
        if (p.body.metadata?.resourceVersion !== store.lease.metadata?.resourceVersion) throw apiError(409, 'Conflict');
        store.writes.push(p.body);
        const l = wire(p.body);
        l.metadata = { ...l.metadata, resourceVersion: String(++store.rv) };
        store.lease = l;
        return wire(l);
      },
    };
    return view;
  }

  get holder(): string | undefined {
    return this.lease?.spec?.holderIdentity;
  }
}

function wire<X>(x: X): X {
  return JSON.parse(JSON.stringify(x)) as X;
}

/**
 * Mocha hooks shared by the framework tests: sinon fake timers around each test, and a check that
 * the test caused no unhandled promise rejection (a framework handler error must never become one).
 * Returns a getter for the current test's clock.
 */
export function fakeTimersWithoutUnhandledRejections(): () => sinon.SinonFakeTimers {
  let clock: sinon.SinonFakeTimers | undefined;
  const unhandled: unknown[] = [];
  const onUnhandled = (r: unknown): void => void unhandled.push(r);
  beforeEach(() => {
    clock = sinon.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setInterval', 'clearInterval', 'Date'] });
    unhandled.length = 0;
    process.on('unhandledRejection', onUnhandled);
  });
  afterEach(() => {
    clock?.restore();
    process.off('unhandledRejection', onUnhandled);
    expect(unhandled, 'unhandled rejections').to.deep.equal([]);
  });
  return () => clock!;
}
