/** Informer against a scripted list/watch transport and sinon's fake clock. */
import { expect } from 'chai';
import sinon from 'sinon';
import { KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { Informer, type InformerOptions } from '../../../operator/src/framework/informer.js';
import { CORE, type KubeSource } from '../../../operator/src/framework/kube.js';
import { KubeClient } from '../../../operator/src/framework/client.js';
import { FakeTransport, cm, fakeTimersWithoutUnhandledRejections, flush, httpError } from './fakes.js';

type Obj = KubernetesObject & { data?: Record<string, string> };

interface Harness {
  t: FakeTransport<Obj>;
  inf: Informer<Obj>;
  events: string[];
  logs: string[];
}

function setup(opts: Partial<InformerOptions<Obj>> = {}): Harness {
  const t = new FakeTransport<Obj>();
  const events: string[] = [];
  const logs: string[] = [];
  const inf = new Informer<Obj>({
    kc: new KubeConfig(),
    resource: CORE.configMaps,
    namespace: 'ns',
    resyncMs: 0,
    backoff: { initialMs: 1000, maxMs: 8000 },
    watchTimeoutSeconds: 300,
    log: (m) => logs.push(m),
    listFn: t.listFn,
    watchFn: t.watchFn,
    ...opts,
  });
  inf.onAdd((o) => void events.push(`add ${o.metadata?.name}@${o.metadata?.resourceVersion}`));
  inf.onUpdate((o, old) => void events.push(`update ${o.metadata?.name}@${old.metadata?.resourceVersion}->${o.metadata?.resourceVersion}`));
  inf.onDelete((o) => void events.push(`delete ${o.metadata?.name}@${o.metadata?.resourceVersion}`));
  return { t, inf, events, logs };
}

describe('framework Informer', () => {
  let clock: sinon.SinonFakeTimers;
  const clockOf = fakeTimersWithoutUnhandledRejections();
  beforeEach(() => {
    clock = clockOf();
  });

  it('lists, runs handlers before start() resolves, then watches from the list resourceVersion with bookmarks', async () => {
    const { t, inf, events } = setup({ labelSelector: 'app=x', fieldSelector: 'metadata.name!=y' });
    t.lists = [{ items: [cm('a', '10'), cm('b', '11')], resourceVersion: '12' }];
    let ranBeforeResolve = false;
    inf.onAdd(async () => {
      await flush(1);
      ranBeforeResolve = true;
    });
    await inf.start();
    expect(ranBeforeResolve).to.equal(true);
    expect(inf.hasSynced()).to.equal(true);
    expect(events).to.deep.equal(['add a@10', 'add b@11']);
    expect(inf.list().map((o) => o.metadata?.name)).to.deep.equal(['a', 'b']);
    await flush();
    expect(t.watches).to.have.length(1);
    expect(t.current.path).to.equal('/api/v1/namespaces/ns/configmaps');
    expect(t.current.query).to.include({ resourceVersion: '12', allowWatchBookmarks: true, labelSelector: 'app=x', fieldSelector: 'metadata.name!=y', timeoutSeconds: 300 });
    await inf.stop();
  });

  it('applies watch events to the cache in order; bookmarks only move the resourceVersion', async () => {
    const { t, inf, events } = setup();
    t.lists = [{ items: [cm('a', '10')], resourceVersion: '10' }];
    await inf.start();
    await flush();
    t.current.emit('ADDED', cm('b', '13'));
    t.current.emit('MODIFIED', cm('a', '14', { k: 'v' }));
    t.current.emit('MODIFIED', cm('a', '14', { k: 'v' })); // same resourceVersion: no update
    t.current.emit('BOOKMARK', { kind: 'ConfigMap', metadata: { resourceVersion: '20' } });
    t.current.emit('DELETED', cm('b', '21'));
    await flush();
    expect(events).to.deep.equal(['add a@10', 'add b@13', 'update a@10->14', 'delete b@21']);
    expect(inf.get('ns/a')?.data).to.deep.equal({ k: 'v' });
    expect(inf.get('ns/b')).to.equal(undefined);
    expect(inf.lastResourceVersion()).to.equal('21');
    t.current.emit('BOOKMARK', { kind: 'ConfigMap', metadata: { resourceVersion: '25' } });
    expect(inf.lastResourceVersion()).to.equal('25');
    await inf.stop();
  });

  it('re-watches from the last resourceVersion (no relist) when a watch ends cleanly', async () => {
    const { t, inf } = setup();
    t.lists = [{ items: [], resourceVersion: '5' }];
    await inf.start();
    await flush();
    t.current.emit('ADDED', cm('a', '6'));
    t.current.emit('BOOKMARK', { metadata: { resourceVersion: '9' } });
    t.current.close(null);
    await flush();
    expect(t.watches).to.have.length(2);
    expect(t.current.query.resourceVersion).to.equal('9');
    expect(t.listCalls).to.equal(1);
    await inf.stop();
  });

  it('backs off when watches close cleanly without delivering anything', async () => {
    const { t, inf } = setup();
    t.lists = [{ items: [], resourceVersion: '5' }];
    await inf.start();
    await flush();
    t.current.close(null);
    await flush();
    expect(t.watches).to.have.length(1);
    await clock.tickAsync(1000);
    await flush();
    expect(t.watches).to.have.length(2);
    await inf.stop();
  });

  it('on an in-stream 410 ERROR relists and emits add/update/delete for the difference, then watches from the new list', async () => {
    const { t, inf, events, logs } = setup();
    t.lists = [
      { items: [cm('keep', '1'), cm('change', '2'), cm('vanish', '3')], resourceVersion: '3' },
      { items: [cm('keep', '1'), cm('change', '40'), cm('new', '41')], resourceVersion: '50' },
    ];
    await inf.start();
    await flush();
    events.length = 0;
    t.current.emit('ERROR', { kind: 'Status', code: 410, reason: 'Expired', message: 'too old resource version: 3 (45)' });
    t.current.emit('ADDED', cm('ignored', '46')); // after the ERROR the stream is moot
    await flush();
    expect(t.watches[0]?.aborted).to.equal(true);
    expect(t.listCalls).to.equal(2);
    expect(events).to.have.members(['update change@2->40', 'add new@41', 'delete vanish@3']);
    expect(inf.keys().sort()).to.deep.equal(['ns/change', 'ns/keep', 'ns/new']);
    expect(t.watches).to.have.length(2);
    expect(t.current.query.resourceVersion).to.equal('50');
    expect(logs.join('\n')).to.match(/gone.*relisting/);
    await inf.stop();
  });

  it('relists on HTTP 410 from the watch request', async () => {
    const { t, inf, events } = setup();
    t.lists = [
      { items: [cm('a', '1')], resourceVersion: '2' },
      { items: [], resourceVersion: '60' },
    ];
    t.watchErrors = [httpError(410, 'Gone')];
    await inf.start();
    await flush();
    expect(t.listCalls).to.equal(2);
    expect(events).to.deep.equal(['add a@1', 'delete a@1']);
    expect(t.current.query.resourceVersion).to.equal('60');
    await inf.stop();
  });

  it('restarts a failed watch (HTTP 500) after exponential backoff, from the same resourceVersion', async () => {
    const { t, inf, logs } = setup();
    t.lists = [{ items: [], resourceVersion: '7' }];
    t.watchErrors = [httpError(500, 'Internal Server Error'), httpError(500, 'Internal Server Error')];
    await inf.start();
    await flush();
    expect(t.watches).to.have.length(1);
    await clock.tickAsync(999);
    expect(t.watches).to.have.length(1);
    await clock.tickAsync(1);
    await flush();
    expect(t.watches).to.have.length(2); // failed again: next delay 2000
    await clock.tickAsync(1999);
    expect(t.watches).to.have.length(2);
    await clock.tickAsync(1);
    await flush();
    expect(t.watches).to.have.length(3);
    expect(t.watches.map((w) => w.query.resourceVersion)).to.deep.equal(['7', '7', '7']);
    expect(t.listCalls).to.equal(1);
    expect(logs.filter((l) => /watch failed, restarting in \d+ ms: HTTP 500/.test(l))).to.have.length(2);
    // a watch that delivers events resets the backoff
    t.current.emit('ADDED', cm('a', '8'));
    t.current.close(null);
    await flush();
    expect(t.watches).to.have.length(4);
    await inf.stop();
  });

  it('treats a non-410 ERROR event as a failure: backoff, then watch again', async () => {
    const { t, inf, logs } = setup();
    t.lists = [{ items: [], resourceVersion: '7' }];
    await inf.start();
    await flush();
    t.current.emit('ERROR', { kind: 'Status', code: 500, reason: 'InternalError', message: 'etcd down' });
    await flush();
    expect(t.watches).to.have.length(1);
    await clock.tickAsync(1000);
    await flush();
    expect(t.watches).to.have.length(2);
    expect(t.listCalls).to.equal(1);
    expect(logs.join('\n')).to.contain('etcd down');
    await inf.stop();
  });

  it('retries the initial list with backoff; start() resolves once it succeeds', async () => {
    const { t, inf, events } = setup();
    t.lists = [new Error('connect ECONNREFUSED'), new Error('connect ECONNREFUSED'), { items: [cm('a', '1')], resourceVersion: '1' }];
    let started = false;
    const p = inf.start().then(() => (started = true));
    await flush();
    expect(started).to.equal(false);
    await clock.tickAsync(1000);
    await flush();
    expect(started).to.equal(false);
    await clock.tickAsync(2000);
    await p;
    expect(t.listCalls).to.equal(3);
    expect(events).to.deep.equal(['add a@1']);
    await inf.stop();
  });

  it('logs a throwing or rejecting handler and keeps delivering', async () => {
    const { t, inf, events, logs } = setup();
    t.lists = [{ items: [], resourceVersion: '1' }];
    inf.onAdd((o) => {
      if (o.metadata?.name === 'sync-boom') throw new Error('sync boom');
    });
    inf.onAdd(async (o) => {
      if (o.metadata?.name === 'async-boom') throw new Error('async boom');
    });
    await inf.start();
    await flush();
    t.current.emit('ADDED', cm('sync-boom', '2'));
    t.current.emit('ADDED', cm('async-boom', '3'));
    t.current.emit('ADDED', cm('fine', '4'));
    await flush();
    expect(events).to.deep.equal(['add sync-boom@2', 'add async-boom@3', 'add fine@4']);
    expect(logs.filter((l) => l.includes('handler for ns/sync-boom failed: sync boom'))).to.have.length(1);
    expect(logs.filter((l) => l.includes('handler for ns/async-boom failed: async boom'))).to.have.length(1);
    expect(t.watches).to.have.length(1); // the watch was not disturbed
    await inf.stop();
  });

  it('relists every resyncMs and diffs', async () => {
    const { t, inf, events } = setup({ resyncMs: 60_000 });
    t.lists = [
      { items: [cm('a', '1')], resourceVersion: '1' },
      { items: [cm('a', '1'), cm('b', '2')], resourceVersion: '2' },
    ];
    await inf.start();
    await flush();
    await clock.tickAsync(59_999);
    expect(t.listCalls).to.equal(1);
    await clock.tickAsync(1);
    await flush();
    expect(t.listCalls).to.equal(2);
    expect(t.watches[0]?.aborted).to.equal(true);
    expect(events).to.deep.equal(['add a@1', 'add b@2']);
    expect(t.current.query.resourceVersion).to.equal('2');
    await inf.stop();
  });

  it('aborts a watch that stays open past its timeout plus grace', async () => {
    const { t, inf, logs } = setup({ watchTimeoutSeconds: 10 });
    t.lists = [{ items: [], resourceVersion: '1' }];
    await inf.start();
    await flush();
    await clock.tickAsync(40_000);
    await flush();
    expect(t.watches[0]?.aborted).to.equal(true);
    expect(logs.join('\n')).to.contain('past its 10 s timeout');
    await inf.stop();
  });

  it('stop() aborts the watch; nothing is delivered afterwards, even queued notifications', async () => {
    const { t, inf, events } = setup();
    t.lists = [{ items: [], resourceVersion: '1' }];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    inf.onAdd(async (o) => {
      if (o.metadata?.name === 'slow') await gate;
    });
    await inf.start();
    await flush();
    const w = t.current;
    w.emit('ADDED', cm('slow', '2'));
    w.emit('ADDED', cm('queued', '3'));
    await flush();
    const stopped = inf.stop();
    expect(w.aborted).to.equal(true);
    release();
    await stopped;
    w.emit('ADDED', cm('late', '4'));
    await clock.tickAsync(120_000);
    await flush();
    expect(events).to.deep.equal(['add slow@2']);
    expect(t.watches).to.have.length(1);
  });

  it('stop() during a backoff sleep resolves at once and opens no new watch', async () => {
    const { t, inf } = setup({ backoff: { initialMs: 60_000, maxMs: 60_000 } });
    t.lists = [{ items: [], resourceVersion: '1' }];
    t.watchErrors = [httpError(500)];
    await inf.start();
    await flush();
    await inf.stop();
    await clock.tickAsync(120_000);
    expect(t.watches).to.have.length(1);
  });

  it('start() rejects if stopped before the initial list succeeds', async () => {
    const { t, inf } = setup();
    t.lists = [new Error('connect ECONNREFUSED')];
    const p = inf.start();
    await flush();
    await inf.stop();
    let err: unknown;
    await p.catch((e: unknown) => (err = e));
    expect(String(err)).to.contain('stopped before its initial list');
  });

  // Issue #9 item 6: after a 23 s outage the watch backoff had grown to 16-32 s and a 429 from the
  // fresh server doubled it again, so catching up took 43 s.
  const delays = (logs: string[]) => logs.map((l) => /restarting in (\d+) ms/.exec(l)?.[1]).filter((d) => d !== undefined).map(Number);

  it('a watch that stayed open HEALTHY_WATCH_MS resets the backoff: its failure retries after initialMs', async () => {
    const { t, inf, logs } = setup();
    t.lists = [{ items: [], resourceVersion: '7' }];
    t.watchErrors = [httpError(500), httpError(500), httpError(500), httpError(500)];
    await inf.start();
    for (const d of [1000, 2000, 4000, 8000]) {
      await flush();
      await clock.tickAsync(d);
    }
    await flush();
    expect(t.watches).to.have.length(5); // the fifth opened fine
    await clock.tickAsync(5000);
    t.current.close(httpError(500)); // e.g. the API server went away again
    await flush();
    expect(delays(logs)).to.deep.equal([1000, 2000, 4000, 8000, 1000]);
    await clock.tickAsync(1000);
    await flush();
    expect(t.watches).to.have.length(6);
    await inf.stop();
  });

  it('a watch that opened and failed at once keeps growing the backoff', async () => {
    const { t, inf, logs } = setup();
    t.lists = [{ items: [], resourceVersion: '7' }];
    await inf.start();
    await flush();
    t.current.close(httpError(500));
    await flush();
    await clock.tickAsync(1000);
    await flush();
    t.current.close(httpError(500));
    await flush();
    expect(delays(logs)).to.deep.equal([1000, 2000]);
    await inf.stop();
  });

  it('honours Retry-After on a 429 (watch and list) without growing the backoff', async () => {
    const { t, inf, logs } = setup();
    const tooMany = () => Object.assign(httpError(429, 'Too Many Requests'), { headers: { 'retry-after': '1' } });
    t.lists = [{ items: [], resourceVersion: '7' }];
    t.watchErrors = [httpError(500), httpError(500), tooMany(), httpError(500)];
    await inf.start();
    for (const d of [1000, 2000, 1000, 4000]) {
      await flush();
      await clock.tickAsync(d);
    }
    await flush();
    expect(delays(logs)).to.deep.equal([1000, 2000, 1000, 4000]);
    expect(t.watches).to.have.length(5);
    // an in-stream ERROR with details.retryAfterSeconds (the watch cache is re-initializing)
    t.current.emit('ERROR', { kind: 'Status', code: 429, reason: 'TooManyRequests', details: { retryAfterSeconds: 2 } });
    await flush();
    expect(delays(logs).at(-1)).to.equal(2000);
    await inf.stop();
  });

  it('by default caps the backoff at 5 s with jitter, so reconnecting after an outage takes at most 5 s', async () => {
    const { t, inf, logs } = setup({ backoff: undefined });
    t.lists = [{ items: [], resourceVersion: '7' }];
    t.watchErrors = Array.from({ length: 12 }, () => httpError(503));
    await inf.start();
    for (let i = 0; i < 12; i++) {
      await flush();
      await clock.tickAsync(5000);
    }
    const d = delays(logs);
    expect(d).to.have.length(12);
    expect(Math.max(...d)).to.be.at.most(5000);
    expect(Math.min(...d)).to.be.at.least(250);
    // at the cap, jitter spreads reconnects over [2.5 s, 5 s] so agents do not all come back at once
    for (const x of d.slice(6)) expect(x).to.be.within(2500, 5000);
    await inf.stop();
  });
});

describe('framework Informer over real HTTP (default watch transport)', () => {
  for (const via of ['client-node KubeConfig', 'framework/client.ts KubeClient'] as const) it(`reads Retry-After from a 429 watch response, waits that long, then streams events (${via})`, async function () {
    this.timeout(10_000);
    const { createServer } = await import('node:http');
    const watchTimes: number[] = [];
    let auth: string | undefined;
    const server = createServer((req, res) => {
      const u = new URL(req.url ?? '/', 'http://x');
      if (u.searchParams.get('watch') !== 'true') return void res.writeHead(404).end();
      watchTimes.push(Date.now());
      auth = req.headers.authorization;
      if (watchTimes.length === 1) {
        res.writeHead(429, { 'content-type': 'application/json', 'retry-after': '1' });
        return void res.end(JSON.stringify({ kind: 'Status', code: 429, reason: 'TooManyRequests', message: 'storage is (re)initializing' }));
      }
      res.writeHead(200, { 'content-type': 'application/json' });
      res.write(`${JSON.stringify({ type: 'ADDED', object: cm('a', '8') })}\n`);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const port = (server.address() as { port: number }).port;
    let kc: KubeSource;
    if (via === 'framework/client.ts KubeClient') kc = new KubeClient({ server: `http://127.0.0.1:${port}`, token: 't0ken', source: 'test' });
    else {
      const k = new KubeConfig();
      k.loadFromOptions({
        clusters: [{ name: 'c', server: `http://127.0.0.1:${port}`, skipTLSVerify: true }],
        users: [{ name: 'u', token: 't0ken' }],
        contexts: [{ name: 'x', cluster: 'c', user: 'u' }],
        currentContext: 'x',
      });
      kc = k;
    }
    const t = new FakeTransport<Obj>();
    t.lists = [{ items: [], resourceVersion: '7' }];
    const logs: string[] = [];
    // A backoff that would wait 30 s: only Retry-After can make the second watch come after ~1 s.
    const inf = new Informer<Obj>({ kc, resource: CORE.configMaps, namespace: 'ns', resyncMs: 0, backoff: { initialMs: 30_000, maxMs: 30_000 }, log: (m) => logs.push(m), listFn: t.listFn });
    const added = new Promise<string>((resolve) => inf.onAdd((o) => resolve(o.metadata?.resourceVersion ?? '')));
    try {
      await inf.start();
      expect(await added).to.equal('8');
      expect(watchTimes).to.have.length(2);
      expect(auth).to.equal('Bearer t0ken');
      expect(watchTimes[1]! - watchTimes[0]!).to.be.within(900, 3000);
      expect(logs.join('\n')).to.match(/restarting in 1000 ms: .*429.*storage is \(re\)initializing/);
    } finally {
      await inf.stop();
      if (kc instanceof KubeClient) kc.close();
      server.closeAllConnections();
      server.close();
    }
  });

  it('the default list applies the transform page by page, once per object (KubeClient)', async function () {
    const { createServer } = await import('node:http');
    const server = createServer((req, res) => {
      const u = new URL(req.url ?? '/', 'http://x');
      if (u.searchParams.get('watch') === 'true') return void res.writeHead(200, { 'content-type': 'application/json' }).flushHeaders(); // stays open
      const second = u.searchParams.get('continue') === 'p2';
      const items = second ? [cm('c', '3')] : [cm('a', '1'), cm('b', '2')];
      res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ metadata: { resourceVersion: '3', ...(second ? {} : { continue: 'p2' }) }, items }));
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const kc = new KubeClient({ server: `http://127.0.0.1:${(server.address() as { port: number }).port}`, source: 'test' });
    const seen: string[] = [];
    const inf = new Informer<Obj>({ kc, resource: CORE.configMaps, namespace: 'ns', resyncMs: 0, log: () => {}, transform: (o) => (seen.push(o.metadata?.name ?? ''), { ...o, data: { trimmed: 'yes' } }) });
    try {
      await inf.start();
      expect(seen).to.deep.equal(['a', 'b', 'c']);
      expect(inf.get('ns/c')?.data).to.deep.equal({ trimmed: 'yes' });
      expect(inf.get('ns/a')?.kind).to.equal('ConfigMap');
    } finally {
      await inf.stop();
      kc.close();
      server.closeAllConnections();
      server.close();
    }
  });
});
