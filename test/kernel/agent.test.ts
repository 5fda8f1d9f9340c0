/**
 * Real-kernel tests of the agent's converge core. Every test runs in network namespaces it creates
 * (knpm-t-<pid>-<rand>) and deletes afterwards, also on failure: the root namespace's iptables and
 * ipsets are never touched (ipsets are per network namespace; the first test proves it).
 * Runs the suite once per iptables backend (nft, legacy). Skips ONLY when not root, and says so.
 */
import { expect } from 'chai';
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { Converger } from '../../operator/src/agent/converge.js';
import { realExec, type Exec } from '../../operator/src/agent/exec.js';
import { HOOK_RULE } from '../../operator/src/agent/iptables/render.js';
import { SESSION_PROBE_SET, tempSetName } from '../../operator/src/api/names.js';
import { buildDesired, type DesiredState } from '../../operator/src/agent/model.js';
import { runOnce } from '../../operator/src/agent/once.js';
import { planIsEmpty } from '../../operator/src/agent/plan.js';
import { objects } from '../unit/agent/fixtures.js';

const isRoot = process.getuid?.() === 0;

function newNetns(): string {
  const name = `knpm-t-${process.pid}-${randomBytes(3).toString('hex')}`;
  execFileSync('ip', ['netns', 'add', name]);
  return name;
}

function delNetns(name: string): void {
  execFileSync('ip', ['netns', 'del', name]);
}

/** Records every command; optionally rewrites restore input (fault injection). */
function recording(inner: Exec, rewrite?: (argv: string[], stdin: string) => string | undefined): { exec: Exec; writes: () => string[][] ; calls: string[][] } {
  const calls: string[][] = [];
  const exec: Exec = (argv, stdin) => {
    calls.push(argv);
    const s = stdin !== undefined && rewrite ? (rewrite(argv, stdin) ?? stdin) : stdin;
    return inner(argv, s);
  };
  return { exec, calls, writes: () => calls.filter((a) => a.some((x) => x === 'restore' || x.endsWith('-restore'))) };
}

async function sh(exec: Exec, argv: string[], stdin?: string): Promise<string> {
  const r = await exec(argv, stdin);
  if (r.code !== 0) throw new Error(`${argv.join(' ')}: ${r.stderr}`);
  return r.stdout;
}

describe('agent (real kernel, in network namespaces)', function () {
  this.timeout(60_000);
  if (!isRoot) {
    it('SKIPPED: kernel tests need root (run as root to exercise ipset/iptables in network namespaces)', function () {
      console.warn('\n*** test/kernel/agent.test.ts SKIPPED: not root. Nothing kernel-level was tested. ***\n');
      this.skip();
    });
    return;
  }

  it('ipsets are per network namespace', async () => {
    const a = newNetns();
    const b = newNetns();
    try {
      await sh(realExec({ netns: a }), ['ipset', 'create', 'KNPM-S-PERNS', 'hash:ip']);
      expect(await sh(realExec({ netns: a }), ['ipset', 'list', '-n'])).to.contain('KNPM-S-PERNS');
      expect(await sh(realExec({ netns: b }), ['ipset', 'list', '-n'])).to.not.contain('KNPM-S-PERNS');
    } finally {
      delNetns(a);
      delNetns(b);
    }
  });

  for (const backend of ['nft', 'legacy'] as const) {
    describe(`backend ${backend}`, () => {
      let ns = '';
      let base: Exec;
      const small = buildDesired(objects({ namespaces: 3, podsPerNamespace: 6, policiesPerNamespace: 2 }));
      const changed = buildDesired(objects({ namespaces: 3, podsPerNamespace: 6, policiesPerNamespace: 1, ipOffset: 2 }));
      const conv = (exec: Exec, log?: (s: string) => void): Converger => new Converger({ exec, backend, log, retry: { attempts: 1 } });
      const save = async (): Promise<string> => sh(base, [`iptables-${backend}-save`, '-t', 'filter']);
      const ours = (text: string): string => text.split('\n').filter((l) => l.includes('KNPM-') || l.includes('kube-npm')).join('\n');
      const verifyEmpty = async (d: DesiredState): Promise<void> => {
        const r = await conv(base).syncOnce(d, { dryRun: true });
        expect(planIsEmpty(r.plan), JSON.stringify(r.plan, null, 1).slice(0, 2000)).to.equal(true);
      };

      beforeEach(() => {
        ns = newNetns();
        base = realExec({ netns: ns });
      });
      afterEach(() => delNetns(ns));

      it('applies, reads back equal (round trip of the canonical form), and a no-op sync writes nothing', async () => {
        const rec = recording(base);
        const c = conv(rec.exec);
        const r = await c.sync(small);
        expect(r.lines.iptables).to.be.greaterThan(0);
        await verifyEmpty(small);
        const n = rec.writes().length;
        await c.sync(small);
        await c.sync(small, { forceFull: true });
        expect(rec.writes().length).to.equal(n);
        const fwd = await sh(base, [`iptables-${backend}`, '-S', 'FORWARD']);
        expect(fwd.split('\n')[1]).to.equal(`-A FORWARD ${HOOK_RULE}`);
        // Updates (members moved, a policy removed) converge too, and stale sets are gone.
        await c.sync(changed);
        await verifyEmpty(changed);
        const sets = (await sh(base, ['ipset', 'list', '-n'])).trim().split('\n').sort();
        expect(sets).to.deep.equal([...changed.sets.keys()].sort());
      });

      it('one policy removed / added: the direction chains are patched in place (-D / -I by spec, O(1) lines), any pair order reads back in sync', async () => {
        const items = objects({ namespaces: 3, podsPerNamespace: 6, policiesPerNamespace: 2 });
        const isPol = (o: unknown): boolean => {
          const m = o as { kind: string; metadata: { namespace?: string; name: string } };
          return m.kind === 'NpmRuleSet' && m.metadata.namespace === 'ns1' && m.metadata.name.includes('pol0');
        };
        const less = buildDesired(items.filter((o) => !isPol(o)));
        expect(less.policies).to.equal(small.policies - 1);
        const c = conv(base);
        await c.sync(small);
        const gone = await c.sync(less);
        expect(gone.plan.iptables.changed).to.deep.equal([]);
        expect(gone.plan.iptables.patched.sort()).to.deep.equal(['KNPM-EGRESS', 'KNPM-INGRESS']);
        expect(gone.plan.iptables.lines.filter((l) => l.startsWith('-D ')).length).to.equal(4);
        await verifyEmpty(less);
        const back = await c.sync(small);
        expect(back.plan.iptables.changed.every((x) => x !== 'KNPM-EGRESS' && x !== 'KNPM-INGRESS')).to.equal(true);
        expect(back.plan.iptables.patched.sort()).to.deep.equal(['KNPM-EGRESS', 'KNPM-INGRESS']);
        expect(back.plan.iptables.lines.filter((l) => l.startsWith('-I KNPM-')).length).to.equal(4);
        // The re-added pair is first in the kernel, not where a full render puts it: still in sync.
        const ingress = (await save()).split('\n').filter((l) => l.startsWith('-A KNPM-INGRESS ')).map((l) => l.slice('-A KNPM-INGRESS '.length));
        expect(ingress).to.not.deep.equal(small.chains.get('KNPM-INGRESS'));
        expect([...ingress].sort()).to.deep.equal([...(small.chains.get('KNPM-INGRESS') ?? [])].sort());
        await verifyEmpty(small);
        const r = await c.sync(small, { forceFull: true });
        expect(r.drift).to.deep.equal([]);
        expect(r.lines).to.deep.equal({ ipset: 0, iptables: 0, destroy: 0 });
      });

      it('a restarted agent adopts the kernel state without writing', async () => {
        await conv(base).sync(small);
        const rec = recording(base);
        const r = await conv(rec.exec).sync(small);
        expect(r.drift).to.deep.equal([]);
        expect(rec.writes()).to.deep.equal([]);
      });

      it('repairs and counts drift: flushed chain, destroyed set, foreign rule, reordered chain, extra member, deleted hook (also deleted between resyncs: repaired by the next full one)', async () => {
        const logs: string[] = [];
        const c = conv(base, (s) => logs.push(s));
        await c.sync(small);
        const ipt = `iptables-${backend}`;
        // An ipBlock peer set: flush every chain that references it, then the kernel lets us destroy it.
        const text = await save();
        const peer = /--match-set (KNPM-N-\S+) src/.exec(text)?.[1] as string;
        const users = [...new Set(text.split('\n').filter((l) => l.startsWith('-A ') && l.includes(peer)).map((l) => l.split(' ')[1] as string))];
        expect(users.every((u) => u.startsWith('KNPM-I-'))).to.equal(true);
        for (const u of users) await sh(base, [ipt, '-F', u]);
        await sh(base, ['ipset', 'destroy', peer]);
        await sh(base, [ipt, '-I', 'KNPM-ALLOW', '1', '-j', 'RETURN']);
        await sh(base, [ipt, '-D', 'KNPM-FORWARD', '1']);
        await sh(base, [ipt, '-A', 'KNPM-FORWARD', '-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'RETURN']);
        const target = [...small.sets.keys()].find((s) => s.startsWith('KNPM-S-')) as string;
        await sh(base, ['ipset', 'add', target, '10.99.0.1']);
        await sh(base, [ipt, '-D', 'FORWARD', '1']);
        const r = await c.sync(small, { forceFull: true });
        expect([...new Set(r.drift.map((d) => d.kind))].sort()).to.deep.equal(['chain_flushed', 'chain_foreign_rule', 'chain_reordered', 'hook', 'set_members_extra', 'set_missing']);
        expect(c.counters.driftRepairs.chain_flushed).to.equal(users.length);
        for (const k of ['chain_foreign_rule', 'chain_reordered', 'hook', 'set_members_extra', 'set_missing'] as const) expect(c.counters.driftRepairs[k], k).to.equal(1);
        expect(logs.filter((l) => l.startsWith('drift repaired')).length).to.equal(5 + users.length);
        await verifyEmpty(small);
        // A hook deleted between full resyncs: incremental syncs read nothing (not even FORWARD) and
        // leave it to the next full resync, which puts it back at rule 1 and counts the repair.
        const rec = recording(base);
        const c2 = new Converger({ exec: rec.exec, backend, retry: { attempts: 1 } });
        expect((await c2.sync(small)).full).to.equal(true); // adopts
        await sh(base, [ipt, '-D', 'FORWARD', '1']);
        await sh(base, [ipt, '-A', 'FORWARD', '-j', 'ACCEPT']);
        rec.calls.length = 0;
        const r2 = await c2.sync(small);
        expect(r2.full).to.equal(false);
        expect(r2.drift).to.deep.equal([]);
        expect(rec.calls).to.deep.equal([]);
        expect((await sh(base, [ipt, '-S', 'FORWARD'])).split('\n').slice(1)).to.deep.equal(['-A FORWARD -j ACCEPT', '']);
        const r3 = await c2.sync(small, { forceFull: true });
        expect(r3.drift.map((d) => d.kind)).to.deep.equal(['hook']);
        expect(r3.plan.iptables.lines).to.deep.equal(['*filter', `-I FORWARD 1 ${HOOK_RULE}`, 'COMMIT']);
        expect((await sh(base, [ipt, '-S', 'FORWARD'])).split('\n').slice(1, 3)).to.deep.equal([`-A FORWARD ${HOOK_RULE}`, '-A FORWARD -j ACCEPT']);
        expect(c2.counters.driftRepairs.hook).to.equal(1);
      });

      it('an iptables-restore the kernel rejects half-way leaves the previous state intact, then recovers', async () => {
        await conv(base).sync(small);
        const before = ours(await save());
        let inject = true;
        let injectedAt = 0;
        const rec = recording(base, (argv, stdin) => {
          if (!inject || !argv[0]?.endsWith('-restore')) return undefined;
          const out = stdin.replace(/\nCOMMIT\n$/, '\n-A KNPM-ALLOW -m set --match-set KNPM-S-NOSUCHSETXXXXXXXXXXXXX src -j RETURN\nCOMMIT\n');
          injectedAt = out.split('\n').length - 2;
          return out;
        });
        const c = conv(rec.exec);
        const err = await c.sync(changed).then(() => undefined, (e: Error) => e);
        expect(err?.cause, 'sync should fail').to.be.instanceOf(Error);
        const msg = (err?.cause as Error).message;
        expect(msg, msg).to.match(/Error occurred at line: \d+|line \d+ failed/);
        // The kernel blamed the injected line (the last before COMMIT); the error marks that line
        // number in the input (the injection itself happens below the converger, so it shows COMMIT).
        const line = Number(/at line: (\d+)|line (\d+) failed/.exec(msg)?.slice(1).find((x) => x));
        expect(line).to.equal(injectedAt);
        expect(msg).to.match(new RegExp(`\\n>\\s+${line}: COMMIT`));
        expect(ours(await save())).to.equal(before);
        inject = false;
        const r = await c.sync(changed);
        expect(r.full).to.equal(true);
        await verifyEmpty(changed);
      });

      it('rebuilds a set whose maxelem is too small by temp + swap, keeping the rules', async () => {
        await conv(base).sync(small);
        const victim = [...small.sets.keys()].find((s) => s.startsWith('KNPM-S-')) as string;
        // Make the live set's header wrong behind our back: swap in a tiny copy.
        const tmp = 'KNPM-S-TESTTINY';
        await sh(base, ['ipset', 'create', tmp, 'hash:ip', 'maxelem', '64']);
        await sh(base, ['ipset', 'swap', tmp, victim]);
        await sh(base, ['ipset', 'destroy', tmp]);
        const r = await conv(base).sync(small);
        expect(r.plan.ipset.rebuilt).to.deep.equal([victim]);
        expect(r.plan.ipset.apply.some((l) => l.startsWith(`swap ${tempSetName(victim)} ${victim}`))).to.equal(true);
        await verifyEmpty(small);
      });

      it('runOnce: converge, verify, cleanup removes only ours (foreign chain, set and FORWARD rule survive)', async () => {
        const ipt = `iptables-${backend}`;
        await sh(base, [ipt, '-N', 'FOREIGN-CHAIN']);
        await sh(base, [ipt, '-A', 'FOREIGN-CHAIN', '-j', 'RETURN']);
        await sh(base, [ipt, '-A', 'FORWARD', '-j', 'FOREIGN-CHAIN']);
        await sh(base, ['ipset', 'create', 'foreign-set', 'hash:ip']);
        await sh(base, ['ipset', 'add', 'foreign-set', '192.0.2.1']);
        const items = objects({ namespaces: 3, podsPerNamespace: 6, policiesPerNamespace: 2 });
        const r = await runOnce({ objects: items, nodeName: 'n1', backend, exec: base });
        expect(r.exitCode, r.summary).to.equal(0);
        const fwd = (await sh(base, [ipt, '-S', 'FORWARD'])).trim().split('\n');
        expect(fwd.slice(1)).to.deep.equal([`-A FORWARD ${HOOK_RULE}`, '-A FORWARD -j FOREIGN-CHAIN']);
        // What a daemon's ipset session leaves behind (its end-of-batch marker set): cleanup removes it too.
        await sh(base, ['ipset', 'create', SESSION_PROBE_SET, 'hash:ip', 'hashsize', '64', 'maxelem', '1']);
        const c = await runOnce({ nodeName: 'n1', backend, exec: base, cleanup: true });
        expect(c.exitCode, c.summary).to.equal(0);
        const after = await save();
        expect(after).to.not.contain('KNPM-');
        expect(after).to.contain('-A FORWARD -j FOREIGN-CHAIN');
        expect(after).to.contain('-A FOREIGN-CHAIN -j RETURN');
        expect((await sh(base, ['ipset', 'list', '-n'])).trim()).to.equal('foreign-set');
        expect(await sh(base, ['ipset', 'list', 'foreign-set'])).to.contain('192.0.2.1');
      });

      it('figures: full apply of a few hundred rules, no-op sync, one-policy change', async () => {
        const items = objects({ namespaces: 20, podsPerNamespace: 20, policiesPerNamespace: 3 });
        const d = buildDesired(items);
        const rules = [...d.chains.values()].reduce((a, r) => a + r.length, 1);
        const members = [...d.sets.values()].reduce((a, s) => a + s.members.size, 0);
        const rec = recording(base);
        const c = conv(rec.exec);
        let t = performance.now();
        const r1 = await c.sync(d);
        const full = performance.now() - t;
        t = performance.now();
        const r2 = await c.sync(d);
        const noop = performance.now() - t;
        t = performance.now();
        const r3 = await c.sync(d, { forceFull: true });
        const resync = performance.now() - t;
        const d2 = buildDesired(items.filter((o) => (o as { metadata: { name: string; namespace?: string } }).metadata.namespace !== 'ns7' || (o as { metadata: { name: string } }).metadata.name !== 'pol1'));
        t = performance.now();
        const r4 = await c.sync(d2);
        const one = performance.now() - t;
        console.log(
          `      [${backend}] ${d.chains.size} chains / ${rules} rules, ${d.sets.size} sets / ${members} members: full apply ${full.toFixed(1)} ms (${r1.lines.ipset}+${r1.lines.iptables} lines); ` +
            `no-op incremental ${noop.toFixed(1)} ms (${r2.lines.ipset + r2.lines.iptables + r2.lines.destroy} lines); no-op full resync ${resync.toFixed(1)} ms (${r3.lines.ipset + r3.lines.iptables + r3.lines.destroy} lines); ` +
            `remove one policy ${one.toFixed(1)} ms (${r4.lines.ipset}+${r4.lines.iptables}+${r4.lines.destroy} lines)`,
        );
        expect(r2.lines.ipset + r2.lines.iptables + r2.lines.destroy).to.equal(0);
        expect(r3.lines.ipset + r3.lines.iptables + r3.lines.destroy).to.equal(0);
        await verifyEmpty(d2);
      });
    });
  }
});
