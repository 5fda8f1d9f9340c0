/** runOnce wiring (file parsing, dry run, verify, cleanup) and node metrics, on the fake kernel. */
import { expect } from 'chai';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { Converger } from '../../../operator/src/agent/converge.js';
import { buildDesired } from '../../../operator/src/agent/model.js';
import { objectsFromText, runOnce } from '../../../operator/src/agent/once.js';
import { createNodeMetrics } from '../../../operator/src/metrics/node.js';
import { serveMetrics } from '../../../operator/src/metrics/serve.js';
import { FakeClock, FakeKernel } from './fakekernel.js';
import { objects } from './fixtures.js';

const items = objects({ namespaces: 2, podsPerNamespace: 3, policiesPerNamespace: 1 });

describe('agent runOnce (fake kernel)', () => {
  let dir = '';
  before(() => (dir = mkdtempSync(join(tmpdir(), 'knpm-once-'))));
  after(() => rmSync(dir, { recursive: true, force: true }));

  it('reads a YAML List as translate writes it, converges, verifies, summarises', async () => {
    const file = join(dir, 'l.yaml');
    writeFileSync(file, stringify({ apiVersion: 'v1', kind: 'List', items }, { lineWidth: 0 }));
    const k = new FakeKernel();
    const r = await runOnce({ file, nodeName: 'n1', backend: 'nft', exec: k.exec });
    expect(r.exitCode, r.summary).to.equal(0);
    expect(r.summary).to.match(/^node n1: converged 8 sets \(\d+ members\), 8 chains \(\d+ rules\) in \d+ ms; wrote \d+ ipset lines, \d+ iptables lines; backend nft$/);
    const again = await runOnce({ file, nodeName: 'n1', backend: 'nft', exec: k.exec });
    expect(again.summary).to.contain('wrote 0 ipset lines, 0 iptables lines');
  });

  it('JSON works too; dry run writes nothing and shows the input', async () => {
    const k = new FakeKernel();
    expect(objectsFromText(JSON.stringify({ apiVersion: 'v1', kind: 'List', items })).map((o) => o.value)).to.deep.equal(items);
    const r = await runOnce({ objects: items, nodeName: 'n1', backend: 'legacy', exec: k.exec, dryRun: true });
    expect(r.exitCode).to.equal(0);
    expect(r.summary).to.contain('# phase 2: iptables-restore --noflush');
    expect(k.writes()).to.deep.equal([]);
  });

  it('refuses invalid input whole: exit 2, the object and field named, nothing written (issue #9 item 2)', async () => {
    const k = new FakeKernel();
    const bad = { apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmRuleSet', metadata: { name: 'evil', namespace: 'x' }, spec: { policy: { namespace: 'x', name: 'evil' }, policyTypes: ['Ingress'], summary: '', ipsets: [], chains: [{ name: 'FORWARD', direction: 'Ingress', targetSet: 'KNPM-S-X', guards: '', rules: [] }] } };
    const r = await runOnce({ objects: [...items, bad], nodeName: 'n1', backend: 'nft', exec: k.exec });
    expect(r.exitCode).to.equal(2);
    expect(r.summary).to.match(/input refused, nothing written .*objects\[\d+\]: NpmRuleSet x\/evil: chain name "FORWARD" is not an owned kernel chain name/s);
    expect(k.writes()).to.deep.equal([]);
  });

  it('a kernel failure gives a non-zero exit with the reason', async () => {
    const k = new FakeKernel();
    for (let i = 0; i < 3; i++) k.failNext((a) => a[0] === 'iptables-nft-restore', { line: 3 });
    const r = await runOnce({ objects: items, nodeName: 'n1', backend: 'nft', exec: k.exec });
    expect(r.exitCode).to.equal(1);
    expect(r.summary).to.match(/failed: sync failed after 3 attempt\(s\): iptables-nft-restore --noflush -w 5 \(phase 2\) failed with exit 1: .*line 3 failed/s);
  });

  it('cleanup removes ours only', async () => {
    const k = new FakeKernel();
    k.sets.set('other', { type: 'hash:ip', hashsize: 1, maxelem: 1, members: new Map() });
    await runOnce({ objects: items, nodeName: 'n1', backend: 'nft', exec: k.exec });
    const r = await runOnce({ nodeName: 'n1', backend: 'nft', exec: k.exec, cleanup: true });
    expect(r.exitCode, r.summary).to.equal(0);
    expect([...k.sets.keys()]).to.deep.equal(['other']);
    expect([...k.chains.keys()]).to.deep.equal(['INPUT', 'FORWARD', 'OUTPUT']);
  });
});

describe('node metrics', () => {
  it('reads counts from the kernel at scrape time (cached briefly) and records sync figures', async () => {
    const k = new FakeKernel();
    const clock = new FakeClock();
    const desired = buildDesired(items);
    const m = createNodeMetrics({ exec: k.exec, backend: 'nft', clock, meanings: () => new Map([...desired.sets.values()].map((s) => [s.name, s.meaning])) });
    const c = new Converger({ exec: k.exec, backend: 'nft', clock, observer: m.observer });
    let text = await m.registry.metrics();
    expect(text).to.match(/^npm_num_iptables_rules 0$/m);
    await c.sync(desired);
    clock.t += 3000; // past the cache
    text = await m.registry.metrics();
    const rules = [...desired.chains.values()].reduce((a, r) => a + r.length, 1);
    expect(text).to.match(new RegExp(`^npm_num_iptables_rules ${rules}$`, 'm'));
    expect(text).to.match(/^npm_num_policies 2$/m);
    expect(text).to.match(/^npm_num_ipsets 8$/m);
    expect(text).to.match(/^npm_ipset_counts\{set_name="pods with role=web in namespace ns0",set_hash="KNPM-S-[A-Z2-7]+"\} \d+$/m);
    expect(text).to.match(/^npm_add_ipset_exec_time_count 1$/m);
    expect(text).to.match(/^npm_add_policy_exec_time_count 1$/m);
    expect(text).to.contain('kubenpm_restore_failures_total{tool="iptables"} 0');
    // Counts come from the kernel, not from desired state: a set deleted behind our back shows.
    k.chains.set('KNPM-ALLOW', []);
    expect(await m.registry.metrics()).to.match(new RegExp(`^npm_num_iptables_rules ${rules}$`, 'm')); // still cached
    clock.t += 3000;
    expect(await m.registry.metrics()).to.match(new RegExp(`^npm_num_iptables_rules ${rules - 1}$`, 'm'));
    k.chains.set('KNPM-ALLOW', []);
    await c.sync(desired, { forceFull: true });
    expect(await m.registry.metrics()).to.contain('kubenpm_drift_repairs_total{kind="chain_flushed"} 1');
  });

  it('serves the registry over HTTP with its content type', async () => {
    const k = new FakeKernel();
    const m = createNodeMetrics({ exec: k.exec, backend: 'nft' });
    const server = await serveMetrics({ host: '127.0.0.1', port: 0, path: '/metrics', registry: m.registry });
    try {
      const port = (server.address() as AddressInfo).port;
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      expect(res.status).to.equal(200);
      expect(res.headers.get('content-type')).to.equal(m.registry.contentType);
      expect(await res.text()).to.contain('npm_num_ipsets 0');
      expect((await fetch(`http://127.0.0.1:${port}/other`)).status).to.equal(404);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });
});
