/** Tamper detection (agent/tamper.ts) against the fake kernel, and its wiring to a full resync. */
import { expect } from 'chai';
import { Converger, type SyncResult } from '../../../operator/src/agent/converge.js';
import type { Backend } from '../../../operator/src/agent/backend.js';
import { HOOK_RULE } from '../../../operator/src/agent/iptables/render.js';
import { buildDesired, cleanupDesired } from '../../../operator/src/agent/model.js';
import { TamperWatcher, tamperProbes } from '../../../operator/src/agent/tamper.js';
import { binaries } from '../../../operator/src/agent/backend.js';
import { FakeClock, FakeKernel } from './fakekernel.js';
import { objects } from './fixtures.js';

const two = objects({ namespaces: 2, podsPerNamespace: 4, policiesPerNamespace: 2 });
const all = buildDesired(two, { localPods: ['10.244.0.1'] });
const isPol = (o: unknown): boolean => (o as { kind: string; metadata: { name: string } }).kind === 'NpmRuleSet' && (o as { metadata: { name: string } }).metadata.name.includes('pol1');
const fewer = buildDesired(two.filter((o) => !isPol(o)), { localPods: ['10.244.0.1'] });

async function synced(backend: Backend): Promise<{ k: FakeKernel; c: Converger; clock: FakeClock }> {
  const k = new FakeKernel();
  k.chains.set('KUBE-FORWARD', ['-j ACCEPT']);
  k.chains.get('FORWARD')?.push('-j KUBE-FORWARD');
  const clock = new FakeClock();
  const c = new Converger({ exec: k.exec, backend, clock, retry: { attempts: 1 }, resyncIntervalMs: 60_000 });
  await c.sync(all);
  return { k, c, clock };
}

for (const backend of ['nft', 'legacy'] as const) {
  describe(`tamper check (${backend}, fake kernel)`, () => {
    it('finds nothing on the state just written, after a policy came and went (pairs in another order), and before any sync', async () => {
      const { k, c } = await synced(backend);
      expect(await c.checkTamper()).to.deep.equal([]);
      await c.sync(fewer);
      await c.sync(all);
      // The pair put back sits at the top now, unlike a full render: still in order.
      expect(k.chains.get('KNPM-INGRESS')).to.not.deep.equal(all.chains.get('KNPM-INGRESS'));
      expect(await c.checkTamper()).to.deep.equal([]);
      const fresh = new Converger({ exec: k.exec, backend, clock: new FakeClock() });
      expect(await fresh.checkTamper()).to.deep.equal([]);
    });

    const tampers: { name: string; act: (k: FakeKernel) => void; finding: RegExp }[] = [
      { name: 'KNPM-INGRESS flushed', act: (k) => k.chains.set('KNPM-INGRESS', []), finding: /KNPM-INGRESS/ },
      { name: 'KNPM-EGRESS flushed', act: (k) => k.chains.set('KNPM-EGRESS', []), finding: /KNPM-EGRESS/ },
      { name: 'hook deleted', act: (k) => k.chains.set('FORWARD', ['-j KUBE-FORWARD']), finding: /hook/ },
      { name: 'hook moved below an ACCEPT', act: (k) => k.chains.set('FORWARD', ['-j KUBE-FORWARD', HOOK_RULE]), finding: /hook|FORWARD rule 1/ },
      { name: 'a RETURN inserted at the top of KNPM-INGRESS', act: (k) => k.chains.get('KNPM-INGRESS')?.unshift('-j RETURN'), finding: /KNPM-INGRESS/ },
      { name: 'KNPM-FORWARD flushed', act: (k) => k.chains.set('KNPM-FORWARD', []), finding: /KNPM-FORWARD/ },
      { name: 'KNPM-FORWARD deleted', act: (k) => k.chains.delete('KNPM-FORWARD'), finding: /KNPM-FORWARD/ },
      { name: 'KNPM-ALLOW flushed', act: (k) => k.chains.set('KNPM-ALLOW', []), finding: /KNPM-ALLOW/ },
    ];
    for (const t of tampers) {
      it(`detects: ${t.name}`, async () => {
        const { k, c } = await synced(backend);
        t.act(k);
        const f = await c.checkTamper();
        expect(f.join('; ')).to.match(t.finding);
      });
    }

    it('a cleaned-up kernel (no layout expected) is not checked', async () => {
      const { k, c } = await synced(backend);
      await c.sync(cleanupDesired());
      k.calls = [];
      expect(await c.checkTamper()).to.deep.equal([]);
      expect(k.calls).to.deep.equal([]);
    });
  });
}

describe('tamper check: what it reads', () => {
  it('nft: a fixed number of small reads whatever the number of policies; legacy: one save', async () => {
    const { c } = await synced('nft');
    const small = buildDesired(objects({ namespaces: 1, podsPerNamespace: 2, policiesPerNamespace: 1 }), { localPods: ['10.244.0.1'] });
    const big = buildDesired(objects({ namespaces: 20, podsPerNamespace: 4, policiesPerNamespace: 10 }), { localPods: ['10.244.0.1'] });
    expect(big.policies).to.be.greaterThan(100);
    const expected = (d: typeof small) => ({ chains: d.chains as Map<string, readonly string[]>, hook: { copies: [HOOK_RULE], first: HOOK_RULE } });
    const argvs = (d: typeof small) => tamperProbes(binaries('nft'), expected(d)).map((p) => p.argv.join(' '));
    expect(argvs(big)).to.deep.equal(argvs(small));
    expect(argvs(big)).to.deep.equal([
      'iptables-nft -w 5 -S FORWARD 1',
      'iptables-nft -w 5 -S KNPM-FORWARD',
      'iptables-nft -w 5 -S KNPM-INGRESS 1',
      'iptables-nft -w 5 -S KNPM-EGRESS 1',
      'iptables-nft -w 5 -S KNPM-ALLOW',
    ]);
    expect(tamperProbes(binaries('legacy'), expected(big)).map((p) => p.argv.join(' '))).to.deep.equal(['iptables-legacy-save -t filter']);
    expect(await c.checkTamper()).to.deep.equal([]);
  });

  it('legacy compares every chain of ours: a flushed policy chain is found too', async () => {
    const { k, c } = await synced('legacy');
    const pol = [...k.chains.keys()].find((x) => x.startsWith('KNPM-I-')) as string;
    k.chains.set(pol, []);
    expect((await c.checkTamper()).join()).to.include(pol);
  });

  it('a write that starts while a check runs voids the check (no false alarm from a stale model)', async () => {
    const { k } = await synced('nft');
    let midway: (() => Promise<unknown>) | undefined;
    const inner = k.exec;
    Object.defineProperty(k, 'exec', {
      value: async (argv: string[], stdin?: string) => {
        if (midway && argv.includes('-S')) {
          const f = midway;
          midway = undefined;
          await f();
        }
        return inner(argv, stdin);
      },
    });
    // A converger on the wrapped exec; a policy is added (its pair goes to the top of the direction
    // chains) in the middle of a check that compares with the model from before.
    const c2 = new Converger({ exec: k.exec, backend: 'nft', clock: new FakeClock(), retry: { attempts: 1 } });
    await c2.sync(fewer);
    midway = () => c2.sync(all);
    expect(await c2.checkTamper()).to.deep.equal([]);
    expect(midway).to.equal(undefined);
    expect(await c2.checkTamper()).to.deep.equal([]);
  });
});

describe('tamper watcher wiring: detection -> full resync -> repaired (fake kernel and clock)', () => {
  it('a flushed KNPM-INGRESS and a deleted hook are found at the next tick and repaired by the full resync it triggers', async () => {
    const { k, c } = await synced('nft');
    const clock = new FakeClock();
    const resyncs: string[][] = [];
    let repair: Promise<SyncResult | undefined> = Promise.resolve(undefined);
    const w = new TamperWatcher({
      check: () => c.checkTamper(),
      clock,
      intervalMs: 1000,
      onTamper: (f) => {
        resyncs.push(f);
        // What the daemon asks for: iptables re-read, sets trusted (no `ipset list`).
        repair = c.sync(all, { rereadIptables: true });
      },
    });
    expect(await w.tick()).to.deep.equal([]);
    expect(resyncs).to.deep.equal([]);
    k.chains.set('KNPM-INGRESS', []);
    k.chains.set('FORWARD', ['-j KUBE-FORWARD']);
    k.calls = [];
    const f = await w.tick();
    expect(f.length).to.equal(2);
    const r = await repair;
    expect(r?.drift.map((d) => d.kind).sort()).to.deep.equal(['chain_flushed', 'hook']);
    expect(k.calls.some((x) => x.argv[0] === 'ipset' && x.argv[1] === 'list')).to.equal(false);
    expect(resyncs.length).to.equal(1);
    expect(k.chains.get('FORWARD')).to.deep.equal([HOOK_RULE, '-j KUBE-FORWARD']);
    expect(k.chains.get('KNPM-INGRESS')?.length).to.equal(all.chains.get('KNPM-INGRESS')?.length);
    expect(c.counters.driftRepairs).to.deep.include({ chain_flushed: 1, hook: 1 });
    expect(await w.tick()).to.deep.equal([]);
    expect(w.stats).to.deep.include({ checks: 3, detections: 1, errors: 0 });
  });

  it('the loop ticks once per interval of the injected clock, and stops', async () => {
    let ticks = 0;
    let release: (() => void) | undefined;
    const clock = {
      t: 0,
      now: () => clock.t,
      sleep: (ms: number) =>
        new Promise<void>((r) => {
          clock.t += ms;
          release = r;
        }),
    };
    const w = new TamperWatcher({ check: async () => (++ticks === 2 ? ['x'] : []), clock, intervalMs: 1000, onTamper: () => undefined });
    w.start();
    for (let i = 0; i < 3; i++) {
      await new Promise((r) => setImmediate(r));
      release?.();
      await new Promise((r) => setImmediate(r));
    }
    expect(ticks).to.equal(3);
    expect(w.stats.detections).to.equal(1);
    const stopping = w.stop();
    release?.();
    await stopping;
    expect(ticks).to.equal(3);
    expect(clock.t).to.equal(4000);
  });

  it('a costly check stretches the interval (bounded share of a core), up to the bound that keeps detection under 5 s', async () => {
    const clock = new FakeClock();
    let cost = 10;
    const w = new TamperWatcher({ check: async () => ((clock.t += cost), []), clock, intervalMs: 1000, onTamper: () => undefined });
    await w.tick();
    expect(w.nextWaitMs()).to.equal(1000);
    cost = 100;
    await w.tick();
    expect(w.nextWaitMs()).to.equal(1900);
    cost = 400;
    await w.tick();
    expect(w.nextWaitMs()).to.equal(3000);
  });

  it('a check that cannot run is logged and counted, never thrown', async () => {
    const logs: string[] = [];
    const w = new TamperWatcher({ check: () => Promise.reject(new Error('spawn iptables-nft ENOENT')), clock: new FakeClock(), onTamper: () => expect.fail('no finding'), log: (s) => logs.push(s) });
    expect(await w.tick()).to.deep.equal([]);
    expect(w.stats.errors).to.equal(1);
    expect(logs[0]).to.match(/ENOENT/);
  });
});
