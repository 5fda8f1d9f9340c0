/** WorkQueue semantics with sinon's fake clock. */
import { expect } from 'chai';
import sinon from 'sinon';
import { fakeTimersWithoutUnhandledRejections, flush } from './fakes.js';
import { TerminalError, WorkQueue, type WorkQueueOptions, type WorkResult } from '../../../operator/src/framework/queue.js';

interface Gate {
  promise: Promise<void>;
  open: () => void;
}
function gate(): Gate {
  let open!: () => void;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

describe('framework WorkQueue', () => {
  let clock: sinon.SinonFakeTimers;
  // The queue starts workers from a (real) setImmediate: move fake time 1 ms at a time and let
  // them run in between, so a worker observes the fake time its timer fired at.
  const advance = async (ms: number): Promise<void> => {
    for (let i = 0; i < ms; i++) {
      await clock.tickAsync(1);
      await flush(2);
    }
  };
  let logs: string[];
  const clockOf = fakeTimersWithoutUnhandledRejections();

  function queue(worker: (key: string) => Promise<void | WorkResult>, o: Partial<WorkQueueOptions> = {}): WorkQueue {
    return new WorkQueue({ name: 't', worker, log: (m) => logs.push(m), ...o });
  }

  beforeEach(() => {
    clock = clockOf();
    logs = [];
  });

  it('dedupes: a key added many times while queued runs once, in FIFO order with the others', async () => {
    const runs: string[] = [];
    const q = queue(async (k) => void runs.push(k), { concurrency: 1 });
    for (const k of ['a', 'b', 'a', 'c', 'a', 'b']) q.add(k);
    expect(q.length).to.equal(3);
    q.start();
    await flush();
    expect(runs).to.deep.equal(['a', 'b', 'c']);
    expect(q.stats()).to.include({ processed: 3, failures: 0, queued: 0, inFlight: 0 });
    await q.stop();
  });

  it('never runs a key on two workers; a key re-added while in flight runs once more afterwards', async () => {
    const g = gate();
    let active = 0;
    let maxActive = 0;
    let runs = 0;
    const q = queue(async () => {
      active++;
      runs++;
      maxActive = Math.max(maxActive, active);
      if (runs === 1) await g.promise;
      active--;
    }, { concurrency: 4 });
    q.start();
    q.add('k');
    await flush();
    expect(q.stats().inFlight).to.equal(1);
    q.add('k');
    q.add('k');
    await flush();
    expect(runs).to.equal(1);
    expect(q.length).to.equal(0);
    g.open();
    await flush();
    expect(runs).to.equal(2);
    expect(maxActive).to.equal(1);
    await q.stop();
  });

  it('runs at most `concurrency` keys at once', async () => {
    const g = gate();
    let active = 0;
    let maxActive = 0;
    const q = queue(async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      await g.promise;
      active--;
    }, { concurrency: 3 });
    for (let i = 0; i < 10; i++) q.add(`k${i}`);
    q.start();
    await flush();
    expect(active).to.equal(3);
    expect(q.stats()).to.include({ inFlight: 3, queued: 7 });
    g.open();
    await flush(20);
    expect(maxActive).to.equal(3);
    expect(q.stats().processed).to.equal(10);
    await q.stop();
  });

  it('retries a failing key with per-key exponential backoff and resets it on success', async () => {
    const runsAt: number[] = [];
    let fail = 3;
    const q = queue(async () => {
      runsAt.push(Date.now());
      if (fail-- > 0) throw new Error('apiserver said no');
    }, { baseDelayMs: 100, maxDelayMs: 1000 });
    q.start();
    q.add('k');
    await flush();
    await advance(100 + 200 + 400);
    await flush();
    expect(runsAt.map((t) => t - (runsAt[0] ?? 0))).to.deep.equal([0, 100, 300, 700]);
    expect(q.failuresOf('k')).to.equal(0);
    expect(q.stats()).to.include({ retries: 3, failures: 3, processed: 1 });
    expect(logs.filter((l) => /k: failed \(attempt \d\), retrying in \d+ ms: apiserver said no/.test(l))).to.have.length(3);
    // after the success a new failure starts from baseDelayMs again
    fail = 1;
    runsAt.length = 0;
    q.add('k');
    await flush();
    await advance(100);
    await flush();
    expect(runsAt.map((t) => t - (runsAt[0] ?? 0))).to.deep.equal([0, 100]);
    await q.stop();
  });

  it('caps the per-key delay at maxDelayMs', async () => {
    let runs = 0;
    const q = queue(async () => {
      runs++;
      throw new Error('always');
    }, { baseDelayMs: 1000, maxDelayMs: 4000 });
    q.start();
    q.add('k');
    await flush();
    await advance(1000 + 2000 + 4000 + 4000);
    await flush();
    expect(runs).to.equal(5);
    expect(q.stats().delayed).to.equal(1);
    await q.stop();
    expect(q.stats().delayed).to.equal(0);
  });

  it('limits retries overall with a token bucket', async () => {
    const runsAt = new Map<string, number[]>();
    const q = queue(async (k) => {
      const l = runsAt.get(k) ?? [];
      l.push(Date.now());
      runsAt.set(k, l);
      if (l.length === 1) throw new Error('first attempt fails');
    }, { baseDelayMs: 1, ratePerSecond: 2, burst: 2, concurrency: 10 });
    q.start();
    for (const k of ['a', 'b', 'c', 'd']) q.add(k);
    await flush();
    await advance(2000);
    await flush();
    const retryDelays = ['a', 'b', 'c', 'd'].map((k) => (runsAt.get(k)?.[1] ?? NaN) - (runsAt.get(k)?.[0] ?? NaN));
    // two tokens in the bucket, then one every 500 ms
    expect(retryDelays).to.deep.equal([1, 1, 500, 1000]);
    await q.stop();
  });

  it('does not retry a TerminalError', async () => {
    let runs = 0;
    const q = queue(async () => {
      runs++;
      throw new TerminalError('spec.podSelector is invalid');
    });
    q.start();
    q.add('bad');
    await flush();
    await clock.tickAsync(120_000);
    expect(runs).to.equal(1);
    expect(q.stats()).to.include({ failures: 1, retries: 0, delayed: 0 });
    expect(logs.join('\n')).to.contain('terminal error, not retrying: spec.podSelector is invalid');
  });

  it('survives workers that throw synchronously or reject with non-Errors', async () => {
    const q = new WorkQueue({
      name: 't',
      log: (m) => logs.push(m),
      baseDelayMs: 10,
      worker: ((k: string) => {
        if (k === 'sync') throw new Error('sync throw');
        return Promise.reject('a string');
      }) as (k: string) => Promise<void>,
    });
    q.start();
    q.add('sync');
    q.add('str');
    await flush();
    expect(q.stats()).to.include({ failures: 2, retries: 2 });
    expect(logs.join('\n')).to.contain('sync throw').and.to.contain('a string');
    await q.stop();
  });

  it('is fair: a key re-added on every run cannot starve the others', async () => {
    const runs: string[] = [];
    const q = queue(async (k) => {
      runs.push(k);
      if (k === 'hot') q.add('hot'); // e.g. its own status write triggers a new event
    }, { concurrency: 1 });
    q.add('hot');
    for (let i = 0; i < 5; i++) q.add(`cold${i}`);
    q.start();
    await flush(30);
    const firstColds = runs.slice(0, 12);
    for (let i = 0; i < 5; i++) expect(firstColds, `cold${i} ran`).to.include(`cold${i}`);
    expect(runs.slice(0, 6)).to.deep.equal(['hot', 'cold0', 'cold1', 'cold2', 'cold3', 'cold4']);
    await q.stop();
  });

  it('a worker that asks to be requeued is not a failure: no log, no backoff, no token, and add() wakes it sooner', async () => {
    const runsAt: number[] = [];
    let waits = 3;
    const q = queue(async () => {
      runsAt.push(Date.now());
      if (waits-- > 0) return { requeueAfterMs: 1000 };
    }, { baseDelayMs: 100, ratePerSecond: 1, burst: 1 });
    q.start();
    const t0 = Date.now();
    q.add('k');
    await flush();
    // Two expected waits of 1000 ms each (a failure would have backed off 100, 200: and the
    // bucket of one token would have pushed the second retry to 1 s after the first).
    await advance(2000);
    await flush();
    expect(runsAt.map((t) => t - t0)).to.deep.equal([0, 1000, 2000]);
    // What it waits for arrives: add() runs it at once, not at the next requeue.
    const addedAt = Date.now() - t0;
    q.add('k');
    await advance(5);
    await flush();
    expect(runsAt.map((t) => t - t0)).to.deep.equal([0, 1000, 2000, addedAt]);
    expect(q.failuresOf('k')).to.equal(0);
    expect(q.stats()).to.include({ failures: 0, retries: 0, requeues: 3 });
    expect(logs).to.deep.equal([]);
    await q.stop();
  });

  it('addAfter keeps the earliest due time and runs the key once', async () => {
    const runsAt: number[] = [];
    const q = queue(async () => void runsAt.push(Date.now()));
    q.start();
    const t0 = Date.now();
    q.addAfter('k', 5000);
    q.addAfter('k', 1000);
    q.addAfter('k', 3000);
    await advance(10_000);
    await flush();
    expect(runsAt.map((t) => t - t0)).to.deep.equal([1000]);
    await q.stop();
  });

  it('stop() waits for in-flight workers, drops the rest, ignores later adds', async () => {
    const g = gate();
    const runs: string[] = [];
    let finished = false;
    const q = queue(async (k) => {
      runs.push(k);
      if (k === 'slow') {
        await g.promise;
        finished = true;
      }
    }, { concurrency: 1 });
    q.add('slow');
    q.add('queued');
    q.addAfter('later', 100);
    q.start();
    await flush();
    let stopped = false;
    const p = q.stop().then(() => (stopped = true));
    await flush();
    expect(stopped).to.equal(false);
    g.open();
    await p;
    expect(finished).to.equal(true);
    q.add('after-stop');
    await advance(1000);
    await flush();
    expect(runs).to.deep.equal(['slow']);
    expect(() => q.start()).to.throw(/stopped/);
  });
});
