// The node and cluster registries as a Prometheus user reads them (issue #12 item 6): labelled
// counters exist at 0 from start-up for every label value, npm_ipset_counts names each set by its
// meaning, the operator's npm_num_ipsets counts ipBlock sets, process/runtime metrics are served,
// and the exec-time summaries are in seconds over a 10-minute window.
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import sinon from 'sinon';
import { Converger } from '../../../operator/src/agent/converge.js';
import { buildDesired } from '../../../operator/src/agent/model.js';
import { API_WRITES, createClusterMetrics, RECONCILE_RESULTS, referencedSets, type SetRefs } from '../../../operator/src/metrics/cluster.js';
import { createNodeMetrics, driftKinds, SYNC_RESULTS } from '../../../operator/src/metrics/node.js';
import { FakeClock, FakeKernel } from '../agent/fakekernel.js';
import { objects } from '../agent/fixtures.js';

const zero = () => 0;
const inertCluster = { policies: zero, rules: zero, ipsets: zero, ipsetEntries: zero, queueDepth: zero, notProgrammed: zero, invalid: zero, isLeader: () => true };

/** `name{labels} value` lines of the exposition text, without HELP/TYPE. */
function samples(text: string, name: string): string[] {
  return text.split('\n').filter((l) => l.startsWith(`${name}{`) || l.startsWith(`${name} `));
}

describe('metrics a Prometheus user can trust', () => {
  describe('node metrics (/node-metrics)', () => {
    it('every labelled counter exists at 0 before anything happened', async () => {
      const k = new FakeKernel();
      const m = createNodeMetrics({ exec: k.exec, backend: 'nft', processMetrics: false });
      const text = await m.registry.metrics();
      expect(driftKinds.length).to.equal(12);
      for (const kind of driftKinds) expect(text, kind).to.contain(`kubenpm_drift_repairs_total{kind="${kind}"} 0\n`);
      expect(samples(text, 'kubenpm_drift_repairs_total')).to.have.length(driftKinds.length);
      for (const tool of ['ipset', 'iptables']) expect(text).to.contain(`kubenpm_restore_failures_total{tool="${tool}"} 0\n`);
      for (const result of SYNC_RESULTS) {
        expect(text, result).to.contain(`kubenpm_sync_duration_seconds_count{result="${result}"} 0\n`);
        expect(text, result).to.contain(`kubenpm_sync_duration_seconds_bucket{le="+Inf",result="${result}"} 0\n`);
      }
    });

    it('npm_ipset_counts: set_name is the meaning from the applied desired state, set_hash the kernel name', async () => {
      const k = new FakeKernel();
      const clock = new FakeClock();
      const desired = buildDesired(objects({ namespaces: 2, podsPerNamespace: 3, policiesPerNamespace: 1 }), { localPods: ['10.0.0.9'] });
      const m = createNodeMetrics({ exec: k.exec, backend: 'nft', clock, processMetrics: false });
      const c = new Converger({ exec: k.exec, backend: 'nft', clock, observer: m.observer });
      await c.sync(desired);
      // Before applied(): nothing tells the metrics what a set means; the kernel name stands in.
      let lines = samples(await m.registry.metrics(), 'npm_ipset_counts');
      expect(lines).to.have.length(desired.sets.size);
      for (const l of lines) expect(/set_name="([^"]+)",set_hash="([^"]+)"/.exec(l)!.slice(1, 3), l).to.satisfy(([a, b]: string[]) => a === b);
      m.applied(desired.sets);
      // A set of ours that the desired state does not name (a leftover): its kernel name.
      k.sets.set('KNPM-S-LEFTOVER', { type: 'hash:ip', hashsize: 64, maxelem: 65536, members: new Map([['10.9.9.9', '10.9.9.9']]) });
      clock.t += 3000; // past the kernel-read cache
      lines = samples(await m.registry.metrics(), 'npm_ipset_counts');
      for (const s of desired.sets.values()) {
        const line = lines.find((l) => l.includes(`set_hash="${s.name}"`));
        expect(line, s.name).to.be.a('string');
        expect(line).to.contain(`set_name="${s.meaning.slice(0, 100)}"`).and.to.match(new RegExp(` ${s.members.size}$`));
        expect(s.meaning, 'a meaning, not the hash').to.not.equal(s.name);
      }
      expect(lines.join('\n')).to.contain(`set_name="this node's own pods"`);
      expect(lines).to.include('npm_ipset_counts{set_name="KNPM-S-LEFTOVER",set_hash="KNPM-S-LEFTOVER"} 1');
    });

    it('exec-time summaries: seconds, quantiles 0.5/0.9/0.99 over a sliding 10-minute window', async () => {
      const clock = sinon.useFakeTimers({ now: 1_000_000, toFake: ['Date'] });
      try {
        const m = createNodeMetrics({ exec: new FakeKernel().exec, backend: 'nft', processMetrics: false });
        m.observer.restore!('iptables', 2, 0.25, true);
        let text = await m.registry.metrics();
        expect(text).to.match(/^# HELP npm_add_iptables_rule_exec_time .*SECONDS.*milliseconds.*10 minutes/m);
        expect(text).to.contain('npm_add_iptables_rule_exec_time{quantile="0.99"} 0.25\n');
        expect(text).to.contain('npm_add_iptables_rule_exec_time_count 1\n');
        clock.tick(11 * 60_000);
        text = await m.registry.metrics();
        // The observation left the window (the quantile reads 0, prom-client's empty value); the count stays.
        expect(text).to.contain('npm_add_iptables_rule_exec_time{quantile="0.99"} 0\n');
        expect(text).to.contain('npm_add_iptables_rule_exec_time_count 1\n');
      } finally {
        clock.restore();
      }
    });

    it('process and Node.js runtime metrics are served unless turned off', async () => {
      const on = await createNodeMetrics({ exec: new FakeKernel().exec, backend: 'nft' }).registry.metrics();
      for (const n of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'process_start_time_seconds', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_p99_seconds', 'nodejs_version_info'])
        expect(on, n).to.match(new RegExp(`^${n}(\\{[^}]*\\})? `, 'm'));
      const off = await createNodeMetrics({ exec: new FakeKernel().exec, backend: 'nft', processMetrics: false }).registry.metrics();
      expect(off).to.not.contain('process_resident_memory_bytes');
    });
  });

  describe('cluster metrics (/cluster-metrics)', () => {
    it('every kind/verb of API writes, every kind of bytes and every reconcile result exists at 0', async () => {
      const text = await createClusterMetrics(inertCluster, undefined, { processMetrics: false }).registry.metrics();
      let pairs = 0;
      for (const [kind, verbs] of Object.entries(API_WRITES)) {
        expect(text).to.contain(`kubenpm_api_write_bytes_total{kind="${kind}"} 0\n`);
        for (const verb of verbs) expect(text).to.contain(`kubenpm_api_writes_total{kind="${kind}",verb="${verb}"} 0\n`);
        pairs += verbs.length;
      }
      expect(samples(text, 'kubenpm_api_writes_total')).to.have.length(pairs);
      for (const result of RECONCILE_RESULTS) expect(text).to.contain(`kubenpm_reconciles_total{result="${result}"} 0\n`);
    });

    it('API_WRITES names every write controller/operator.ts counts (kind and verb)', () => {
      const src = readFileSync(fileURLToPath(new URL('../../../operator/src/controller/operator.ts', import.meta.url)), 'utf8');
      const body = /function countingApi[\s\S]*?\n}\n/.exec(src)?.[0];
      expect(body, 'countingApi() in controller/operator.ts').to.be.a('string');
      // count(kind, 'verb', ...): every kind of NpmApi (OurKind) with that verb; count('Kind', 'verb', ...): that pair.
      const generic = [...body!.matchAll(/count\(kind, '(\w+)'/g)].map((x) => x[1]!);
      const fixed = [...body!.matchAll(/count\('(\w+)', '(\w+)'/g)].map((x) => [x[1]!, x[2]!] as const);
      expect(generic.length + fixed.length, 'count() calls found').to.be.greaterThan(3);
      for (const verb of generic) for (const kind of ['NpmRuleSet', 'NpmIPSet']) expect(API_WRITES[kind], `${kind} ${verb}`).to.include(verb);
      for (const [kind, verb] of fixed) expect(API_WRITES[kind], `${kind} ${verb}`).to.include(verb);
      for (const r of src.matchAll(/reconciles\.inc\(\{ result: ([^}]*) \}\)/g)) for (const v of r[1]!.matchAll(/'(\w+)'/g)) expect(RECONCILE_RESULTS as readonly string[], v[1]).to.include(v[1]);
    });

    it('npm_num_ipsets counts every distinct set the rulesets reference, ipBlock sets included', async () => {
      const rs = (ipsets: SetRefs['spec']['ipsets']): SetRefs => ({ spec: { ipsets } });
      const rulesets = [
        rs([{ name: 'KNPM-S-A', kind: 'PodSelector' }, { name: 'KNPM-S-CIDR', kind: 'IPBlock', members: ['10.0.0.0/8', '10.1.0.0/16 nomatch'] }]),
        rs([{ name: 'KNPM-S-A', kind: 'PodSelector' }, { name: 'KNPM-S-CIDR', kind: 'IPBlock', members: ['10.0.0.0/8', '10.1.0.0/16 nomatch'] }, { name: 'KNPM-S-B', kind: 'NamedPort' }]),
        undefined,
      ];
      expect(referencedSets(rulesets)).to.deep.equal({ sets: 3, ipBlockMembers: 2 });
      const got = referencedSets(rulesets);
      const text = await createClusterMetrics({ ...inertCluster, ipsets: () => got.sets, ipsetEntries: () => 5 + got.ipBlockMembers }, undefined, { processMetrics: false }).registry.metrics();
      expect(text).to.contain('\nnpm_num_ipsets 3\n').and.to.contain('\nnpm_num_ipset_entries 7\n');
    });

    it('process and Node.js runtime metrics are served', async () => {
      const text = await createClusterMetrics(inertCluster).registry.metrics();
      for (const n of ['process_cpu_seconds_total', 'process_resident_memory_bytes', 'nodejs_heap_size_used_bytes', 'nodejs_eventloop_lag_p99_seconds'])
        expect(text, n).to.match(new RegExp(`^${n} `, 'm'));
    });
  });
});
