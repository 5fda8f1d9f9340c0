/**
 * The framework Runner on sinon fake timers over the real clock (whose sleeps honour AbortSignal):
 * coalescing, one run at a time with one trailing run, minimum interval, urgent requests, the
 * periodic run (told apart, never starved), retries after Backoff delays that re-read the newest
 * state, settled() and stop().
 */
import { expect } from 'chai';
import { realClock } from '../../../operator/src/framework/backoff.js';
import { Runner, type RunReason, type RunnerOptions } from '../../../operator/src/framework/runner.js';
import { fakeTimersWithoutUnhandledRejections } from './fakes.js';

interface Probe {
  runner: Runner;
  /** Each run: start time (fake ms since the test began) and reason. */
  runs: { at: number; reason: RunReason; saw?: number }[];
  errors: { delay: number; failures: number }[];
}

describe('framework Runner', () => {
  let r: Runner | undefined;
  // Before the fake timers' own hooks, so that they still run: a run may be sleeping on one.
  afterEach(async () => {
    const stopping = r?.stop();
    await clockOf().tickAsync(60_000);
    await stopping;
    r = undefined;
  });
  const clockOf = fakeTimersWithoutUnhandledRejections();

  /** A runner whose run takes `runMs` and calls `body` (which may throw). */
  function probe(opts: Partial<RunnerOptions> & { runMs?: number; body?: (reason: RunReason) => number | void } = {}): Probe {
    const t0 = Date.now();
    const runs: Probe['runs'] = [];
    const errors: Probe['errors'] = [];
    const runner = new Runner({
      name: 'test',
      clock: realClock,
      backoff: { initialMs: 1000, maxMs: 8000 },
      onError: (_e, delay, failures) => void errors.push({ delay, failures }),
      ...opts,
      run: async (reason) => {
        const entry: Probe['runs'][number] = { at: Date.now() - t0, reason };
        runs.push(entry);
        if (opts.runMs) await realClock.sleep(opts.runMs);
        const saw = opts.body?.(reason);
        if (typeof saw === 'number') entry.saw = saw;
      },
    });
    r = runner;
    runner.start();
    return { runner, runs, errors };
  }

  it('requests before a run cost one run; requests during a run cost exactly one trailing run', async () => {
    const clock = clockOf();
    const p = probe({ runMs: 100 });
    for (let i = 0; i < 5; i++) p.runner.run();
    await clock.tickAsync(10);
    expect(p.runs).to.have.length(1);
    for (let i = 0; i < 5; i++) p.runner.run(); // during the run
    await clock.tickAsync(1000);
    expect(p.runs.map((x) => x.at)).to.deep.equal([0, 100]);
    expect(p.runs.every((x) => x.reason === 'requested')).to.equal(true);
    expect(p.runner.isSettled()).to.equal(true);
  });

  it('no more often than minIntervalMs after the previous run ended; coalesceMs after the first request', async () => {
    const clock = clockOf();
    const p = probe({ minIntervalMs: 500, coalesceMs: 25, runMs: 10 });
    p.runner.run();
    await clock.tickAsync(5);
    p.runner.run(); // within the coalescing window: the same run
    await clock.tickAsync(100);
    expect(p.runs.map((x) => x.at)).to.deep.equal([25]);
    p.runner.run(); // at 105: the previous run ended at 35, so not before 535
    await clock.tickAsync(400);
    expect(p.runs).to.have.length(1);
    await clock.tickAsync(100);
    expect(p.runs.map((x) => x.at)).to.deep.equal([25, 535]);
    // After a quiet period only the coalescing delay applies.
    await clock.tickAsync(5000);
    p.runner.run();
    await clock.tickAsync(100);
    expect(p.runs.map((x) => x.at)).to.deep.equal([25, 535, 5605 + 25]);
  });

  it('an urgent request skips the minimum interval and the coalescing, but never runs two at a time', async () => {
    const clock = clockOf();
    let inRun = 0;
    let maxInRun = 0;
    const p = probe({
      minIntervalMs: 1000,
      coalesceMs: 50,
      runMs: 20,
      body: () => {
        maxInRun = Math.max(maxInRun, ++inRun);
        inRun--;
      },
    });
    p.runner.run();
    await clock.tickAsync(80); // run at 50 .. 70
    p.runner.run(); // due at 1070: waiting
    await clock.tickAsync(10);
    p.runner.run({ urgent: true }); // re-plans the wait: runs now (90 .. 110)
    await clock.tickAsync(1);
    expect(p.runs.map((x) => x.at)).to.deep.equal([50, 90]);
    p.runner.run({ urgent: true }); // during a run: one trailing run right after it
    await clock.tickAsync(100);
    expect(p.runs.map((x) => x.at)).to.deep.equal([50, 90, 110]);
    expect(maxInRun).to.equal(1);
  });

  it('a periodic run every maxIntervalMs, told apart, not starved by a busy stream; 0 means none', async () => {
    const clock = clockOf();
    const p = probe({ maxIntervalMs: 10_000, minIntervalMs: 100 });
    for (let t = 0; t < 25_000; t += 300) {
      p.runner.run();
      await clock.tickAsync(300);
    }
    expect(p.runs.filter((x) => x.reason === 'periodic').map((x) => x.at)).to.deep.equal([10_000, 20_000]);
    expect(p.runs.filter((x) => x.reason === 'requested').length).to.be.greaterThan(70);
    await r!.stop();
    const none = probe({});
    await clock.tickAsync(3_600_000);
    expect(none.runs).to.deep.equal([]);
  });

  it('periodJitter shortens each period by up to that fraction, drawn anew each time', async () => {
    const clock = clockOf();
    const draws = [0.5, 0, 0.999];
    const p = probe({ maxIntervalMs: 10_000, periodJitter: 0.2, random: () => draws.shift() ?? 0 });
    await clock.tickAsync(30_000);
    // 10 s x (1 - 0.2 x 0.5) = 9 s, then 10 s, then 10 s x (1 - 0.2 x 0.999) = 8.002 s.
    expect(p.runs.filter((x) => x.reason === 'periodic').map((x) => x.at)).to.deep.equal([9_000, 19_000, 27_002]);
  });

  it('a failed run is retried after the Backoff delays as a new run that reads the newest state; requests wait for the retry; success resets', async () => {
    const clock = clockOf();
    let state = 0;
    let failing = 3;
    const p = probe({
      body: () => {
        if (failing-- > 0) throw new Error(`failure at state ${state}`);
        return state;
      },
    });
    p.runner.run();
    await clock.tickAsync(1);
    expect(p.errors).to.deep.equal([{ delay: 1000, failures: 1 }]);
    state = 1;
    p.runner.run(); // waits for the retry
    await clock.tickAsync(998);
    expect(p.runs).to.have.length(1);
    expect(p.runner.isSettled(), 'a pending request').to.equal(false);
    await clock.tickAsync(2);
    expect(p.runs.map((x) => x.reason)).to.deep.equal(['requested', 'retry']);
    expect(p.runner.isSettled(), 'a scheduled retry alone is settled').to.equal(true);
    expect(p.runner.isSettled({ retries: true })).to.equal(false);
    state = 2;
    await clock.tickAsync(2000);
    expect(p.errors.map((e) => e.delay)).to.deep.equal([1000, 2000, 4000]);
    state = 3;
    await clock.tickAsync(4000);
    // The fourth run succeeded and read the state of its own time, not the first run's.
    expect(p.runs.map((x) => x.at)).to.deep.equal([0, 1000, 3000, 7000]);
    expect(p.runs.at(-1)!.saw).to.equal(3);
    expect(p.runner.failures).to.equal(0);
    expect(p.runner.isSettled({ retries: true })).to.equal(true);
    // Reset: the next failure waits the first delay again.
    failing = 1;
    p.runner.run();
    await clock.tickAsync(1);
    expect(p.errors.at(-1)).to.deep.equal({ delay: 1000, failures: 1 });
    expect(p.runner.stats).to.include({ failures: 4, retries: 3 });
  });

  it('settled() waits for a pending and a running run; with retries, until a run succeeded', async () => {
    const clock = clockOf();
    let failing = 1;
    const p = probe({
      coalesceMs: 50,
      runMs: 100,
      body: () => {
        if (failing-- > 0) throw new Error('boom');
      },
    });
    let settled = false;
    p.runner.run();
    void p.runner.settled({ retries: true }).then(() => (settled = true));
    await clock.tickAsync(149);
    expect(settled).to.equal(false);
    await clock.tickAsync(1); // the first run failed at 150; the retry runs at 1150 .. 1250
    expect(settled).to.equal(false);
    await clock.tickAsync(1100);
    expect(settled).to.equal(true);
    expect(p.runs).to.have.length(2);
  });

  it('stop() waits for the current run, starts no other, releases settled() and its timers', async () => {
    const clock = clockOf();
    const p = probe({ runMs: 500, maxIntervalMs: 60_000 });
    p.runner.run();
    await clock.tickAsync(100);
    p.runner.run(); // would trail
    let stopped = false;
    const stopping = p.runner.stop().then(() => (stopped = true));
    await clock.tickAsync(399);
    expect(stopped).to.equal(false);
    await clock.tickAsync(1);
    await stopping;
    expect(p.runs).to.have.length(1);
    p.runner.run();
    await p.runner.settled({ retries: true });
    // The periodic wait was aborted: no timer is left behind to hold a process.
    expect(clock.countTimers()).to.equal(0);
    await clock.tickAsync(120_000);
    expect(p.runs).to.have.length(1);
  });
});
