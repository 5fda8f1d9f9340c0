/** The long-lived ipset process (ipset/session.ts) against a fake process: answers, failures, restarts. */
import { expect } from 'chai';
import { IpsetSession, PROBE_CREATE, PROBE_LIST, SESSION_ARGV } from '../../../operator/src/agent/ipset/session.js';
import { FakeKernel } from './fakekernel.js';
import { FakeSpawn, ManualTimer } from './fakesession.js';

function setup(): { k: FakeKernel; sp: FakeSpawn; timer: ManualTimer; s: IpsetSession; logs: string[] } {
  const k = new FakeKernel();
  k.sets.set('KNPM-A', { type: 'hash:ip', hashsize: 1024, maxelem: 65536, members: new Map([['10.244.0.1', '10.244.0.1']]) });
  const sp = new FakeSpawn(k);
  const timer = new ManualTimer();
  const logs: string[] = [];
  const s = new IpsetSession({ spawn: sp.spawn, setTimer: timer.set, timeoutMs: 1000, maxConsecutiveFailures: 3, log: (l) => logs.push(l) });
  return { k, sp, timer, s, logs };
}

const members = (k: FakeKernel, name = 'KNPM-A'): string[] => [...(k.sets.get(name)?.members.keys() ?? [])].sort();

describe('ipset session (fake process)', () => {
  it('answers each batch through one process started once, with unbuffered stdout', async () => {
    const { k, sp, s } = setup();
    expect(await s.apply(['add -exist KNPM-A 10.244.0.2'])).to.deep.equal({ code: 0, stderr: '' });
    expect(await s.apply(['del -exist KNPM-A 10.244.0.1', 'add -exist KNPM-A 10.244.0.3'])).to.deep.equal({ code: 0, stderr: '' });
    expect(members(k)).to.deep.equal(['10.244.0.2', '10.244.0.3']);
    expect(s.starts).to.equal(1);
    expect(sp.argvs).to.deep.equal([SESSION_ARGV]);
    expect(SESSION_ARGV.slice(0, 2)).to.deep.equal(['stdbuf', '-o0']);
    expect(sp.spawned[0]?.lines).to.deep.equal([PROBE_CREATE, 'add -exist KNPM-A 10.244.0.2', PROBE_LIST, 'del -exist KNPM-A 10.244.0.1', 'add -exist KNPM-A 10.244.0.3', PROBE_LIST]);
  });

  it('an error line mid-batch stops the rest of the batch, is reported relative to the batch, and the next batch restarts the process', async () => {
    const { k, sp, s } = setup();
    await s.apply(['add -exist KNPM-A 10.244.0.2']);
    // Line 2 of the second batch (line 5 of the process) fails: line 1 applied, line 3 not.
    const r = await s.apply(['add -exist KNPM-A 10.244.0.3', 'add -exist KNPM-GONE 10.244.0.4', 'del -exist KNPM-A 10.244.0.1']);
    expect(r.code).to.equal(1);
    expect(r.failedLine).to.equal(2);
    expect(r.stderr).to.match(/Error in line 2: The set with the given name does not exist/);
    expect(members(k)).to.deep.equal(['10.244.0.1', '10.244.0.2', '10.244.0.3']);
    expect(sp.live).to.equal(undefined);
    expect(await s.apply(['del -exist KNPM-A 10.244.0.1'])).to.deep.equal({ code: 0, stderr: '' });
    expect(s.starts).to.equal(2);
    expect(members(k)).to.deep.equal(['10.244.0.2', '10.244.0.3']);
  });

  it('a crash mid-batch fails the batch without blaming a line; the next batch restarts', async () => {
    const { k, sp, s } = setup();
    await s.apply(['add -exist KNPM-A 10.244.0.2']);
    sp.faults.push({ kind: 'crash', applyLines: 1 });
    const r = await s.apply(['add -exist KNPM-A 10.244.0.3', 'del -exist KNPM-A 10.244.0.1']);
    expect(r.code).to.not.equal(0);
    expect(r.failedLine).to.equal(undefined);
    expect(r.stderr).to.match(/ended \(exit -, signal SIGKILL\) before answering/);
    expect(members(k)).to.deep.equal(['10.244.0.1', '10.244.0.2', '10.244.0.3']);
    expect((await s.apply(['del -exist KNPM-A 10.244.0.1'])).code).to.equal(0);
    expect(s.starts).to.equal(2);
  });

  it('a process killed between batches is noticed by the next batch, which restarts it', async () => {
    const { sp, s } = setup();
    await s.apply(['add -exist KNPM-A 10.244.0.2']);
    sp.spawned[0]?.die(null, 'SIGKILL');
    await new Promise((r) => setImmediate(r));
    expect((await s.apply(['add -exist KNPM-A 10.244.0.3'])).code).to.equal(0);
    expect(s.starts).to.equal(2);
  });

  it('a hang is killed when the timer fires, fails the batch, and the next batch restarts', async () => {
    const { sp, timer, s } = setup();
    sp.faults.push({ kind: 'hang' });
    const p = s.apply(['add -exist KNPM-A 10.244.0.2']);
    await new Promise((r) => setImmediate(r));
    expect(timer.fire()).to.equal(1);
    const r = await p;
    expect(r.code).to.equal(124);
    expect(r.stderr).to.match(/killed: no answer within 1000 ms/);
    expect(sp.spawned[0]?.ended).to.equal(true);
    expect((await s.apply(['add -exist KNPM-A 10.244.0.3'])).code).to.equal(0);
    expect(s.starts).to.equal(2);
    // Answered batches cancel their timer: nothing left to fire.
    expect(timer.fire()).to.equal(0);
  });

  it('output nobody asked for (a confused process) kills it and fails the batch', async () => {
    const { sp, s } = setup();
    sp.faults.push({ kind: 'garbage' });
    const r = await s.apply(['add -exist KNPM-A 10.244.0.2']);
    expect(r.code).to.not.equal(0);
    expect(r.stderr).to.match(/unexpected output/);
    expect(sp.spawned[0]?.ended).to.equal(true);
  });

  it('a missing probe set fails the batch at the probe (not a batch line)', async () => {
    const { k, s } = setup();
    await s.apply(['add -exist KNPM-A 10.244.0.2']);
    k.sets.delete('knpm-session-probe');
    const r = await s.apply(['add -exist KNPM-A 10.244.0.3']);
    expect(r.code).to.equal(1);
    expect(r.failedLine).to.equal(undefined);
    expect(r.stderr).to.match(/at the end-of-batch probe/);
    expect(members(k)).to.include('10.244.0.3');
  });

  it('takes only lines whose meaning -exist (sticky in a restore process) does not change', () => {
    const { s } = setup();
    expect(s.takes(['add -exist KNPM-A 10.244.0.2', 'del -exist KNPM-A 10.244.0.1', 'destroy KNPM-B'])).to.equal(true);
    expect(s.takes(['create KNPM-B hash:ip family inet hashsize 1024 maxelem 65536'])).to.equal(false);
    expect(s.takes(['swap KNPM-T-x KNPM-B'])).to.equal(false);
    expect(s.takes(['add KNPM-A 10.244.0.2'])).to.equal(false);
    expect(s.takes([])).to.equal(false);
  });

  it('disables itself after failing to answer a number of times in a row', async () => {
    const { sp, s, logs } = setup();
    for (let i = 0; i < 3; i++) {
      sp.faults.push({ kind: 'crash', applyLines: 0 });
      expect((await s.apply(['add -exist KNPM-A 10.244.0.2'])).code).to.not.equal(0);
    }
    expect(s.disabled).to.match(/3 failures in a row/);
    expect(s.takes(['add -exist KNPM-A 10.244.0.2'])).to.equal(false);
    expect(logs.join('\n')).to.match(/ipset session disabled/);
  });

  it('refuses a second batch while one runs', async () => {
    const { s } = setup();
    const p = s.apply(['add -exist KNPM-A 10.244.0.2']);
    let err: unknown;
    await s.apply(['add -exist KNPM-A 10.244.0.3']).catch((e: unknown) => (err = e));
    expect(String(err)).to.match(/already running/);
    expect((await p).code).to.equal(0);
  });
});
