/** The framework's one Backoff: growth, cap, jitter, reset (explicit and after a quiet period), Retry-After. */
import { expect } from 'chai';
import { ApiException } from '@kubernetes/client-node';
import { Backoff, retryAfterMs } from '../../../operator/src/framework/backoff.js';
import { WatchStatusError } from '../../../operator/src/framework/informer.js';

const seq = (b: Backoff, n: number) => Array.from({ length: n }, () => b.next());

describe('framework Backoff', () => {
  it('grows by the factor up to the cap and starts over after reset()', () => {
    const b = new Backoff({ initialMs: 500, maxMs: 5000 });
    expect(seq(b, 6)).to.deep.equal([500, 1000, 2000, 4000, 5000, 5000]);
    expect(b.attempts).to.equal(6);
    b.reset();
    expect(seq(b, 2)).to.deep.equal([500, 1000]);
  });

  it('jitters downwards only: every delay stays within [(1-jitter)*raw, raw], never above the cap', () => {
    let r = 0;
    const values = [0, 0.999999, 0.5];
    const b = new Backoff({ initialMs: 1000, maxMs: 4000, jitter: 0.5, random: () => values[r++ % values.length]! });
    expect(seq(b, 6)).to.deep.equal([1000, 1000, 3000, 4000, 2000, 3000]);
    const wild = new Backoff({ initialMs: 500, maxMs: 5000, jitter: 0.5 });
    for (const d of seq(wild, 200)) expect(d).to.be.within(250, 5000);
  });

  it('forgets failures after resetAfterMs of quiet (injected clock)', () => {
    let now = 0;
    const b = new Backoff({ initialMs: 100, maxMs: 10_000, resetAfterMs: 60_000, clock: { now: () => now } });
    expect(seq(b, 4)).to.deep.equal([100, 200, 400, 800]);
    now += 59_999;
    expect(b.next()).to.equal(1600);
    now += 60_000;
    expect(b.next()).to.equal(100);
    expect(() => new Backoff({ initialMs: 1, maxMs: 2, resetAfterMs: 5 })).to.throw(/needs a clock/);
  });

  it('honours Retry-After (capped) without counting a failure; other errors back off', () => {
    const b = new Backoff({ initialMs: 1000, maxMs: 8000, maxRetryAfterMs: 30_000 });
    seq(b, 3); // 1000, 2000, 4000
    const tooMany = new ApiException(429, 'HTTP-Code: 429', '{}', { 'retry-after': '1' });
    expect(b.delayAfter(tooMany)).to.equal(1000);
    expect(b.attempts).to.equal(3);
    expect(b.delayAfter(new ApiException(503, 'x', '', { 'retry-after': '3600' }))).to.equal(30_000);
    expect(b.delayAfter(new Error('connect ECONNREFUSED'))).to.equal(8000);
    expect(b.attempts).to.equal(4);
  });

  it('reads Retry-After from headers and from a Status (watch ERROR event), only for 429 and 5xx', () => {
    expect(retryAfterMs(Object.assign(new Error('x'), { statusCode: 429, headers: { 'retry-after': '2' } }))).to.equal(2000);
    expect(retryAfterMs(new WatchStatusError({ kind: 'Status', code: 429, details: { retryAfterSeconds: 1 } } as never))).to.equal(1000);
    expect(retryAfterMs({ kind: 'Status', code: 500, details: { retryAfterSeconds: 5 } })).to.equal(5000);
    expect(retryAfterMs(new ApiException(409, 'x', '', { 'retry-after': '1' }))).to.equal(undefined);
    expect(retryAfterMs(new ApiException(429, 'x', '', { 'retry-after': 'Wed, 21 Oct 2026 07:28:00 GMT' }))).to.equal(undefined);
    expect(retryAfterMs(new ApiException(429, 'x', '', {}))).to.equal(undefined);
    expect(retryAfterMs(undefined)).to.equal(undefined);
  });
});
