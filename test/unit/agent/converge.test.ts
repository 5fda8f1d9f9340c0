/** The converge core against the fake kernel: adoption, no-op, incremental, drift, faults, retry. */
import { expect } from 'chai';
import { Converger, RestoreError, contextLines, failedLineOf } from '../../../operator/src/agent/converge.js';
import { detectBackend } from '../../../operator/src/agent/backend.js';
import { buildDesired, cleanupDesired, type DesiredState } from '../../../operator/src/agent/model.js';
import { tempSetName } from '../../../operator/src/api/names.js';
import { HOOK_RULE } from '../../../operator/src/agent/iptables/render.js';
import { FakeClock, FakeKernel } from './fakekernel.js';
import { FakeSpawn, ManualTimer, sessionWrite } from './fakesession.js';
import { IpsetSession } from '../../../operator/src/agent/ipset/session.js';
import { objects } from './fixtures.js';

const small = buildDesired(objects({ namespaces: 2, podsPerNamespace: 4, policiesPerNamespace: 2 }));
const moved = buildDesired(objects({ namespaces: 2, podsPerNamespace: 4, policiesPerNamespace: 2, ipOffset: 3 }));

function setup(k = new FakeKernel()): { k: FakeKernel; clock: FakeClock; c: Converger; logs: string[] } {
  const clock = new FakeClock();
  const logs: string[] = [];
  const c = new Converger({ exec: k.exec, backend: 'nft', clock, log: (s) => logs.push(s), resyncIntervalMs: 60_000, retry: { attempts: 3, initialDelayMs: 100 } });
  return { k, clock, c, logs };
}

function foreign(k: FakeKernel): void {
  k.chains.set('KUBE-FORWARD', ['-j ACCEPT']);
  k.chains.get('FORWARD')?.push('-j KUBE-FORWARD');
  k.sets.set('cali40-all', { type: 'hash:ip', hashsize: 1024, maxelem: 1024, members: new Map([['1.1.1.1', '1.1.1.1']]) });
}

describe('agent converge (fake kernel)', () => {
  it('applies from scratch in 3 writes at most, then a no-op sync writes nothing', async () => {
    const { k, c } = setup();
    foreign(k);
    const r = await c.sync(small);
    expect(r.full).to.equal(true);
    expect(k.writes().length).to.equal(2); // nothing to destroy
    expect(k.chains.get('FORWARD')).to.deep.equal([HOOK_RULE, '-j KUBE-FORWARD']);
    const n = k.writes().length;
    const r2 = await c.sync(small);
    expect(r2.full).to.equal(false);
    expect(k.writes().length).to.equal(n);
    const r3 = await c.sync(small, { forceFull: true });
    expect(r3.full).to.equal(true);
    expect(r3.lines).to.deep.equal({ ipset: 0, iptables: 0, destroy: 0 });
    expect(k.writes().length).to.equal(n);
  });

  it('a restarted process adopts the kernel without writing', async () => {
    const { k, c } = setup();
    await c.sync(small);
    const n = k.writes().length;
    const fresh = setup(k).c;
    const r = await fresh.sync(small);
    expect(r.full).to.equal(true);
    expect(r.drift).to.deep.equal([]);
    expect(k.writes().length).to.equal(n);
  });

  it('incremental sync plans against the last-applied model without reading the whole kernel', async () => {
    const { k, c } = setup();
    await c.sync(small);
    k.calls = [];
    const r = await c.sync(moved);
    expect(r.full).to.equal(false);
    expect(k.calls.map((x) => x.argv[0])).to.not.include('iptables-nft-save');
    expect(k.calls.some((x) => x.argv.includes('list'))).to.equal(false);
    // Only membership changed: no iptables write at all.
    expect(r.lines.iptables).to.equal(0);
    expect(r.lines.ipset).to.be.greaterThan(0);
    // And the kernel really equals the new desired state.
    const verify = await setup(k).c.syncOnce(moved, { dryRun: true });
    expect(verify.lines).to.deep.equal({ ipset: 0, iptables: 0, destroy: 0 });
  });

  it('the periodic resync reads fully after the interval', async () => {
    const { c, clock } = setup();
    await c.sync(small);
    clock.t += 30_000;
    expect((await c.sync(small)).full).to.equal(false);
    clock.t += 30_000;
    expect((await c.sync(small)).full).to.equal(true);
  });

  it('repairs and counts drift on a full resync', async () => {
    const { k, c, logs } = setup();
    foreign(k);
    await c.sync(small);
    const pol = [...k.chains.keys()].find((x) => x.startsWith('KNPM-I-')) as string;
    const set = [...k.sets.keys()].find((x) => x.startsWith('KNPM-S-')) as string;
    k.chains.set(pol, []); // flushed
    k.chains.get('KNPM-ALLOW')?.unshift('-j ACCEPT'); // foreign rule inserted
    k.chains.get('KNPM-INGRESS')?.reverse(); // reordered
    k.chains.set('FORWARD', ['-j KUBE-FORWARD', HOOK_RULE]); // hook misplaced
    for (const [name, s] of k.sets) if (name === set) s.members.clear(); // members gone
    const victim = [...k.sets.keys()].find((x) => x.startsWith('KNPM-N-')) as string;
    k.sets.delete(victim); // (a real kernel would refuse: in use; the fake lets us simulate it)
    const r = await c.sync(small, { forceFull: true });
    expect(r.drift.map((d) => d.kind).sort()).to.deep.equal(['chain_flushed', 'chain_foreign_rule', 'chain_reordered', 'hook', 'set_members_missing', 'set_missing']);
    expect(c.counters.driftRepairs).to.deep.include({ chain_flushed: 1, hook: 1, set_missing: 1 });
    expect(logs.filter((l) => l.startsWith('drift repaired')).length).to.equal(6);
    expect(k.chains.get('FORWARD')).to.deep.equal([HOOK_RULE, '-j KUBE-FORWARD']);
    expect(k.sets.has('cali40-all')).to.equal(true);
    expect((await c.sync(small, { forceFull: true })).drift).to.deep.equal([]);
  });

  it('an incremental sync reads nothing from the kernel; a lost hook is repaired at the next full resync', async () => {
    const { k, c, clock, logs } = setup();
    await c.sync(small);
    k.chains.set('FORWARD', ['-j KUBE-FORWARD']); // hook deleted behind our back
    k.calls = [];
    const r = await c.sync(small);
    expect(r.full).to.equal(false);
    expect(k.calls).to.deep.equal([]); // no read (not even FORWARD), no write
    expect(r.drift).to.deep.equal([]);
    // A real change between resyncs is written without touching the hook.
    const r2 = await c.sync(moved);
    expect(r2.full).to.equal(false);
    expect(r2.lines.iptables).to.equal(0);
    expect(k.calls.map((x) => x.argv.join(' '))).to.deep.equal(['ipset restore']);
    expect(k.chains.get('FORWARD')).to.deep.equal(['-j KUBE-FORWARD']);
    // The periodic resync finds the hook gone, puts it back at rule 1 and counts the repair.
    clock.t += 60_000;
    const r3 = await c.sync(moved);
    expect(r3.full).to.equal(true);
    expect(r3.drift.map((d) => d.kind)).to.deep.equal(['hook']);
    expect(r3.plan.iptables.lines).to.deep.equal(['*filter', `-I FORWARD 1 ${HOOK_RULE}`, 'COMMIT']);
    expect(r3.lines).to.deep.equal({ ipset: 0, iptables: 3, destroy: 0 });
    expect(k.chains.get('FORWARD')).to.deep.equal([HOOK_RULE, '-j KUBE-FORWARD']);
    expect(c.counters.driftRepairs.hook).to.equal(1);
    expect(logs.some((l) => l.startsWith('drift repaired: hook'))).to.equal(true);
  });

  it('adding or removing one policy patches the direction chains with O(1) lines in one transaction; any pair order reads back in sync', async () => {
    const two = objects({ namespaces: 3, podsPerNamespace: 4, policiesPerNamespace: 2 });
    const all = buildDesired(two);
    const isPol1 = (o: unknown): boolean => {
      const m = (o as { kind: string; metadata: { namespace?: string; name: string } });
      return m.kind === 'NpmRuleSet' && m.metadata.namespace === 'ns1' && m.metadata.name.includes('pol1');
    };
    expect(two.some(isPol1)).to.equal(true);
    const less = buildDesired(two.filter((o) => !isPol1(o)));
    expect(less.policies).to.equal(all.policies - 1);
    const { k, c } = setup();
    await c.sync(all);
    k.calls = [];
    const r = await c.sync(less);
    expect(r.full).to.equal(false);
    const ipt = k.writes().filter((w) => w.argv[0] === 'iptables-nft-restore');
    expect(ipt.length).to.equal(1);
    const lines = ipt[0]!.stdin.trim().split('\n');
    expect(r.plan.iptables.changed).to.deep.equal([]);
    expect(r.plan.iptables.patched.sort()).to.deep.equal(['KNPM-EGRESS', 'KNPM-INGRESS']);
    // 2 chains of the policy flushed + deleted, 2 pairs deleted: *filter, 2 declarations, 4 -D, 2 -X, COMMIT.
    expect(lines.filter((l) => l.startsWith('-D KNPM-')).length).to.equal(4);
    expect(lines.length).to.equal(10);
    expect((await setup(k).c.syncOnce(less, { dryRun: true })).lines).to.deep.equal({ ipset: 0, iptables: 0, destroy: 0 });
    // Added back: new chains filled, one pair inserted at the top of each direction chain.
    const back = await c.sync(all);
    expect(back.plan.iptables.changed.filter((x) => x.startsWith('KNPM-I-') || x.startsWith('KNPM-E-')).length).to.equal(2);
    expect(back.plan.iptables.patched.sort()).to.deep.equal(['KNPM-EGRESS', 'KNPM-INGRESS']);
    const ins = back.plan.iptables.lines.filter((l) => l.startsWith('-I KNPM-'));
    expect(ins.map((l) => l.split(' ').slice(0, 3).join(' ')).sort()).to.deep.equal(['-I KNPM-EGRESS 1', '-I KNPM-EGRESS 2', '-I KNPM-INGRESS 1', '-I KNPM-INGRESS 2']);
    // The kernel now holds the pair first, not where a full render puts it: still in sync, no drift, no write.
    expect(k.chains.get('KNPM-INGRESS')).to.not.deep.equal(all.chains.get('KNPM-INGRESS'));
    expect(k.chains.get('KNPM-INGRESS')?.at(-1)).to.equal(all.chains.get('KNPM-INGRESS')?.at(-1));
    const n = k.writes().length;
    const full = await c.sync(all, { forceFull: true });
    expect(full.drift).to.deep.equal([]);
    expect(k.writes().length).to.equal(n);
    const adopt = await setup(k).c.sync(all);
    expect(adopt.drift).to.deep.equal([]);
    expect(k.writes().length).to.equal(n);
  });

  it('a failed iptables-restore keeps the previous state, reports the lines around the failure, retries fully with backoff', async () => {
    const { k, c, clock, logs } = setup();
    await c.sync(small);
    const before = k.iptablesSave();
    k.failNext((argv) => argv[0] === 'iptables-nft-restore', { line: 4 });
    k.calls = [];
    const r = await c.sync(buildDesired(objects({ namespaces: 2, podsPerNamespace: 4, policiesPerNamespace: 1 })));
    expect(r.attempts).to.equal(2);
    expect(clock.sleeps).to.deep.equal([100]);
    expect(c.counters.restoreFailures.iptables).to.equal(1);
    expect(logs.some((l) => /line 4 failed/.test(l) && />\s+4: /.test(l))).to.equal(true);
    // The retry re-read the kernel.
    expect(k.calls.filter((x) => x.argv[0] === 'iptables-nft-save').length).to.be.greaterThan(0);
    expect(k.iptablesSave()).to.not.equal(before);
  });

  it('when every attempt fails, the kernel keeps the last good state and the error carries the cause', async () => {
    const { k, c, clock } = setup();
    await c.sync(small);
    const before = k.iptablesSave();
    for (let i = 0; i < 3; i++) k.failNext((argv) => argv[0] === 'iptables-nft-restore', { line: 2 });
    const changed = buildDesired(objects({ namespaces: 2, podsPerNamespace: 4, policiesPerNamespace: 1 }));
    let err: unknown;
    try {
      await c.sync(changed);
    } catch (e) {
      err = e;
    }
    expect(err).to.be.instanceOf(Error);
    expect((err as Error).cause).to.be.instanceOf(RestoreError);
    expect(((err as Error).cause as RestoreError).failedLine).to.equal(2);
    expect(clock.sleeps).to.deep.equal([100, 200]);
    expect(k.iptablesSave()).to.equal(before);
    // Next sync is full and converges.
    const r = await c.sync(changed);
    expect(r.full).to.equal(true);
  });

  it('given a function, each retry plans from the newest desired state, not the failed attempt\'s input', async () => {
    const { k, c, clock, logs } = setup();
    await c.sync(small);
    k.failNext((argv) => argv[0] === 'ipset' && argv[1] === 'restore');
    // The caller's state moves on while the first attempt fails: the retry must apply `moved`.
    const states = [buildDesired(objects({ namespaces: 2, podsPerNamespace: 4, policiesPerNamespace: 1 })), moved];
    let calls = 0;
    const r = await c.sync(() => states[Math.min(calls++, states.length - 1)]!);
    expect(calls).to.equal(2);
    expect(r.attempts).to.equal(2);
    expect(r.full, 'a retry re-reads the kernel').to.equal(true);
    expect(clock.sleeps).to.deep.equal([100]);
    expect(logs.some((l) => l.includes('sync attempt 1 failed') && l.includes('a new plan'))).to.equal(true);
    // The kernel holds `moved` exactly: a no-op sync to it writes nothing.
    const n = k.writes().length;
    const again = await c.sync(moved, { forceFull: true });
    expect(again.lines).to.deep.equal({ ipset: 0, iptables: 0, destroy: 0 });
    expect(k.writes().length).to.equal(n);
  });

  it('an ipset restore failing half-way: iptables untouched, nothing removed before its replacement, then recovers', async () => {
    const { k, c } = setup();
    await c.sync(small);
    const ipt = k.iptablesSave();
    const snapshot = new Map([...k.sets].map(([n, s]) => [n, new Set(s.members.keys())]));
    k.failNext((argv) => argv[0] === 'ipset' && argv[1] === 'restore', { applyLines: 3 });
    const r = await c.syncOnce(moved).catch((e: unknown) => e);
    expect(r).to.be.instanceOf(RestoreError);
    expect(k.iptablesSave()).to.equal(ipt);
    // Only additions ran: every old member is still present.
    for (const [n, members] of snapshot) for (const m of members) expect(k.sets.get(n)?.members.has(m), `${n} ${m}`).to.equal(true);
    const ok = await c.sync(moved);
    expect(ok.full).to.equal(true);
    expect((await setup(k).c.syncOnce(moved, { dryRun: true })).lines).to.deep.equal({ ipset: 0, iptables: 0, destroy: 0 });
  });

  it('cleanup removes only what we own', async () => {
    const { k, c } = setup();
    foreign(k);
    await c.sync(small);
    await c.sync(cleanupDesired());
    expect([...k.chains.keys()]).to.deep.equal(['INPUT', 'FORWARD', 'OUTPUT', 'KUBE-FORWARD']);
    expect(k.chains.get('FORWARD')).to.deep.equal(['-j KUBE-FORWARD']);
    expect([...k.sets.keys()]).to.deep.equal(['cali40-all']);
  });

  it('stale sets are destroyed only after iptables stopped referencing them', async () => {
    const { k, c } = setup();
    await c.sync(small);
    await c.sync(buildDesired(objects({ namespaces: 1, podsPerNamespace: 4, policiesPerNamespace: 1 })));
    const w = k.writes();
    const last = w[w.length - 1];
    expect(last?.argv).to.deep.equal(['ipset', 'restore']);
    expect(last?.stdin).to.match(/^destroy /);
  });
});

describe('agent converge: sets of ours with another type, family or options (fake kernel)', () => {
  /** The desired name of a set the rules may match on now (a temp name maps back to its set). */
  function realName(d: DesiredState, name: string): string | undefined {
    if (d.sets.has(name)) return name;
    return [...d.sets.keys()].find((n) => tempSetName(n) === name);
  }

  /**
   * Make-before-break, checked after every write: every set a rule of ours matches on exists with
   * the desired type and family and holds the desired members of the set it stands for, and the
   * hook is rule 1 whenever a policy chain exists.
   */
  function watchInvariant(k: FakeKernel, d: DesiredState): string[] {
    const broken: string[] = [];
    const inner = k.exec;
    Object.defineProperty(k, 'exec', {
      value: async (argv: string[], stdin?: string) => {
        const r = await inner(argv, stdin);
        if (!argv.some((a) => a === 'restore' || a.endsWith('-restore'))) return r;
        for (const [c, rules] of k.chains) {
          if (!c.startsWith('KNPM-')) continue;
          for (const rule of rules) {
            for (const m of rule.matchAll(/--match-set (\S+)/g)) {
              const real = realName(d, m[1] as string);
              const want = real !== undefined ? d.sets.get(real) : undefined;
              const got = k.sets.get(m[1] as string);
              if (!want || !got || got.type !== want.type || (got.family ?? 'inet') !== 'inet' || got.options) broken.push(`after ${argv.join(' ')}: ${c} matches on ${m[1]} (${got?.type} ${got?.family})`);
              else if (got.members.size !== want.members.size || [...want.members.keys()].some((x) => !got.members.has(x))) broken.push(`after ${argv.join(' ')}: ${m[1]} lacks members`);
            }
          }
        }
        return r;
      },
    });
    return broken;
  }

  const target = [...small.sets.values()].find((s) => s.type === 'hash:ip' && s.members.size > 0 && s.name.startsWith('KNPM-S-'))!;

  it('a set pre-created as hash:net under our name: replaced make-before-break, every sync succeeds, then a no-op', async () => {
    const { k, c, logs } = setup();
    k.sets.set(target.name, { type: 'hash:net', hashsize: 1024, maxelem: 65536, members: new Map([['10.9.0.0/16', '10.9.0.0/16']]) });
    const broken = watchInvariant(k, small);
    const r = await c.sync(small);
    expect(r.attempts).to.equal(1);
    expect(r.replaced).to.deep.equal([target.name]);
    expect(broken).to.deep.equal([]);
    expect(k.sets.get(target.name)?.type).to.equal('hash:ip');
    expect([...(k.sets.get(target.name)?.members.keys() ?? [])]).to.deep.equal([...target.members.keys()]);
    expect(k.sets.has(tempSetName(target.name))).to.equal(false);
    expect(k.chains.get('FORWARD')?.[0]).to.equal(HOOK_RULE);
    // Two steps: temp filled + rules switched + wrong set destroyed, then the real name back.
    expect(k.writes().map((w) => w.argv[0])).to.deep.equal(['ipset', 'iptables-nft-restore', 'ipset', 'ipset', 'iptables-nft-restore', 'ipset']);
    expect(logs.some((l) => l.includes(`set ${target.name} is hash:net`))).to.equal(true);
    const again = await setup(k).c.sync(small);
    expect(again.lines).to.deep.equal({ ipset: 0, iptables: 0, destroy: 0 });
    expect(again.replaced).to.deep.equal([]);
  });

  it('a set that the rules already use is replaced by a wrong-family one behind our back: repaired at the next full sync, protection held', async () => {
    const { k, c } = setup();
    await c.sync(small);
    const broken = watchInvariant(k, small);
    // (The kernel would refuse to destroy a set in use; the fake lets us simulate what an older
    // version or another tool may have left, including rules pointing at it.)
    k.sets.set(target.name, { type: 'hash:ip', family: 'inet6', hashsize: 1024, maxelem: 65536, members: new Map() });
    broken.length = 0;
    const r = await c.sync(small, { forceFull: true });
    expect(r.replaced).to.deep.equal([target.name]);
    expect(r.drift.map((x) => x.kind)).to.include('set_header');
    expect(broken).to.deep.equal([]);
    expect(k.sets.get(target.name)?.family).to.equal('inet');
    expect((await setup(k).c.sync(small)).lines).to.deep.equal({ ipset: 0, iptables: 0, destroy: 0 });
  });

  it('a set with a timeout (members would expire) is rebuilt by swap; counters alone are left alone', async () => {
    const { k, c } = setup();
    const other = [...small.sets.values()].find((s) => s.name !== target.name && s.type === 'hash:ip')!;
    k.sets.set(target.name, { type: 'hash:ip', hashsize: 1024, maxelem: 65536, options: 'timeout 5', members: new Map() });
    k.sets.set(other.name, { type: 'hash:ip', hashsize: 1024, maxelem: 65536, options: 'counters', members: new Map() });
    const r = await c.sync(small);
    expect(r.replaced).to.deep.equal([]);
    expect(r.plan.ipset.rebuilt).to.deep.equal([target.name]);
    expect(k.sets.get(target.name)?.options).to.equal(undefined);
    expect(k.sets.get(other.name)?.options).to.equal('counters');
    expect((await setup(k).c.sync(small)).lines).to.deep.equal({ ipset: 0, iptables: 0, destroy: 0 });
  });

  it('a wrong-typed set that a foreign rule keeps alive: the node is protected on the temp set, the error names the cause, then it heals', async () => {
    const { k, c } = setup();
    k.sets.set(target.name, { type: 'hash:net', hashsize: 1024, maxelem: 65536, members: new Map() });
    k.chains.set('OTHER', [`-m set --match-set ${target.name} src -j RETURN`]);
    const broken = watchInvariant(k, small);
    let err: Error | undefined;
    await c.sync(small).catch((e: Error) => (err = e));
    expect(err?.message).to.match(/sync failed after 3 attempt/);
    const cause = err?.cause as Error;
    expect(cause.message).to.include(target.name);
    expect(cause.message).to.match(/temp set/);
    expect(String((cause.cause as Error).message)).to.match(/in use/);
    expect(broken).to.deep.equal([]);
    // Protected meanwhile: hook first, the policy chains in place, matching on the filled temp set.
    expect(k.chains.get('FORWARD')?.[0]).to.equal(HOOK_RULE);
    for (const [name, rules] of small.chains) expect(k.chains.get(name)?.length, name).to.equal(rules.length);
    expect([...k.chains.values()].flat().some((r) => r.includes(`--match-set ${tempSetName(target.name)} `))).to.equal(true);
    // The other tool lets go: the next sync finishes the replacement.
    k.chains.delete('OTHER');
    const r = await c.sync(small);
    expect(r.replaced).to.deep.equal([target.name]);
    expect(k.sets.get(target.name)?.type).to.equal('hash:ip');
    expect(k.sets.has(tempSetName(target.name))).to.equal(false);
    expect(broken).to.deep.equal([]);
  });
});

describe('agent helpers', () => {
  it('failing line and context', () => {
    expect(failedLineOf('iptables-restore: line 12 failed')).to.equal(12);
    expect(failedLineOf('ipset v7.17: Error in line 3: boom')).to.equal(3);
    expect(failedLineOf("iptables-nft-restore v1.8.9 (nf_tables): Set X doesn't exist.\n\nError occurred at line: 30\n")).to.equal(30);
    expect(contextLines('a\nb\nc\nd\ne\nf', 3)).to.equal('\n     1: a\n     2: b\n>    3: c\n     4: d\n     5: e');
  });
  it('backend detection: override, hint, rule count, fallback, error', async () => {
    const k = new FakeKernel();
    expect(await detectBackend(k.exec, 'legacy')).to.equal('legacy');
    expect(await detectBackend(k.exec, 'auto')).to.equal('nft');
    const hinted = async (argv: string[]) => (argv[0] === 'iptables-legacy-save' && argv.includes('mangle') ? { code: 0, stdout: ':KUBE-IPTABLES-HINT - [0:0]\n', stderr: '' } : k.exec(argv));
    expect(await detectBackend(hinted, 'auto')).to.equal('legacy');
    const counted = async (argv: string[]) => (argv[0] === 'iptables-legacy-save' && argv.length === 1 ? { code: 0, stdout: '-A FORWARD -j X\n', stderr: '' } : k.exec(argv));
    expect(await detectBackend(counted, 'auto')).to.equal('legacy');
    k.backends.delete('nft');
    expect(await detectBackend(k.exec, 'auto')).to.equal('legacy');
    k.backends.delete('legacy');
    let msg = '';
    await detectBackend(k.exec, 'auto').catch((e: Error) => (msg = e.message));
    expect(msg).to.match(/no usable iptables backend/);
  });
});

describe('agent converge with the long-lived ipset session (fake process)', () => {
  function withSession(): ReturnType<typeof setup> & { sp: FakeSpawn; timer: ManualTimer; s: IpsetSession } {
    const k = new FakeKernel();
    const sp = new FakeSpawn(k);
    const timer = new ManualTimer();
    const s = new IpsetSession({ spawn: sp.spawn, setTimer: timer.set });
    const clock = new FakeClock();
    const logs: string[] = [];
    const c = new Converger({ exec: k.exec, backend: 'nft', clock, log: (l) => logs.push(l), resyncIntervalMs: 60_000, retry: { attempts: 3, initialDelayMs: 100 }, ipsetSession: s });
    return { k, clock, c, logs, sp, timer, s };
  }
  const snapshot = (k: FakeKernel): Map<string, Set<string>> => new Map([...k.sets].filter(([n]) => n.startsWith('KNPM-')).map(([n, s]) => [n, new Set(s.members.keys())]));
  const ipsetRestores = (k: FakeKernel): number => k.calls.filter((x) => x.argv.join(' ') === 'ipset restore').length;

  it('a pod change is written through the session, not a new ipset restore', async () => {
    const { k, c, sp } = withSession();
    await c.sync(small);
    const before = ipsetRestores(k);
    const r = await c.sync(moved);
    expect(r.full).to.equal(false);
    expect(r.plan.ipset.added + r.plan.ipset.removed).to.be.greaterThan(0);
    expect(ipsetRestores(k)).to.equal(before);
    expect(c.counters.sessionWrites).to.equal(1);
    expect(sp.spawned.length).to.equal(1);
    expect((await c.sync(moved, { forceFull: true })).drift).to.deep.equal([]);
  });

  it('a helper that crashes mid-batch: the sync retries with a full re-read through ipset restore, and the next change restarts the helper', async () => {
    const { k, c, sp, s } = withSession();
    await c.sync(small);
    await c.sync(moved); // starts the helper
    sp.faults.push({ kind: 'crash', applyLines: 1 });
    const before = ipsetRestores(k);
    const r = await c.sync(small);
    expect(r.attempts).to.equal(2);
    expect(r.full).to.equal(true);
    expect(ipsetRestores(k)).to.equal(before + 1);
    expect((await c.sync(small, { forceFull: true })).drift).to.deep.equal([]);
    await c.sync(moved);
    expect(sp.spawned.length).to.equal(2);
    expect(s.starts).to.equal(2);
    expect((await c.sync(moved, { forceFull: true })).drift).to.deep.equal([]);
  });

  it('an error line mid-batch stops the rest of the batch (every set between old∩new and old∪new), is reported with context, and the retry replans', async () => {
    const { k, c } = withSession();
    await c.sync(small);
    await c.sync(moved); // the helper runs: the failing batch is not its first
    const old = snapshot(k);
    k.failNext(sessionWrite, { applyLines: 1, stderr: 'The set with the given name does not exist' });
    let err: unknown;
    await c.syncOnce(small).catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(RestoreError);
    const re = err as RestoreError;
    expect(re.failedLine).to.equal(2);
    expect(re.message).to.match(/ipset restore \(session\) \(phase 1\) failed with exit 1: .*Error in line 2: The set with the given name does not exist/);
    expect(re.message).to.match(/\n> {4}2: /);
    const mid = snapshot(k);
    const r = await c.sync(small);
    expect(r.full).to.equal(true); // replanned from a full re-read
    const neu = snapshot(k);
    let applied = 0;
    for (const [name, m] of mid) {
      const o = old.get(name) ?? new Set<string>();
      const n = neu.get(name) ?? new Set<string>();
      for (const x of o) if (n.has(x)) expect(m.has(x), `${name} keeps ${x}`).to.equal(true);
      for (const x of m) expect(o.has(x) || n.has(x), `${name} holds only old or new members`).to.equal(true);
      applied += [...m].filter((x) => !o.has(x)).length + [...o].filter((x) => !m.has(x)).length;
    }
    expect(applied).to.equal(1); // line 1 only: the lines after the failing one were not run
    expect((await c.sync(small, { forceFull: true })).drift).to.deep.equal([]);
  });

  it('a hung helper is killed when the timeout fires; the sync retries and converges', async () => {
    const { c, sp, timer } = withSession();
    await c.sync(small);
    sp.faults.push({ kind: 'hang' });
    const p = c.sync(moved);
    for (let i = 0; i < 20 && timer.pending.length === 0; i++) await new Promise((r) => setImmediate(r));
    expect(timer.fire()).to.equal(1);
    const r = await p;
    expect(r.attempts).to.equal(2);
    expect(sp.spawned[0]?.ended).to.equal(true);
    expect((await c.sync(moved, { forceFull: true })).drift).to.deep.equal([]);
  });
});
