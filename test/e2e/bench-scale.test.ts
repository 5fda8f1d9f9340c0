// Smoke run of bench:scale (test/bench/scale.bench.ts) at a tiny size: the instrument issue #10's
// fixes are measured with must keep working end to end (real kube-apiserver + etcd, the operator
// process, agents with the real daemon on fake kernels). Figures are not judged here, only that
// every key is measured and that the counters see the traffic a pod add and a policy cause.
import { expect } from 'chai';
import { parseScaleArgs, runScaleBench } from '../bench/scale.bench.js';

describe('bench:scale smoke (2 nodes, 60 pods, 8 policies)', function () {
  this.timeout(300_000);

  it('measures every key of the issue on a running cluster', async () => {
    const r = await runScaleBench(
      parseScaleArgs(['--nodes', '2', '--pods', '60', '--policies', '8', '--namespaces', '4', '--idle-seconds', '3', '--pod-events', '2', '--trials', '2', '--settle-ms', '300', '--agents-per-worker', '1']),
    );
    for (const k of ['idle_writes_per_min', 'heartbeat_writes_per_min', 'writes_per_pod_event', 'watch_bytes_per_pod_event', 'agent_wakeups_per_pod_event', 'policy_programmed_ms', 'operator_rss_mib', 'operator_cpu_s_per_min_idle', 'agent_rss_mib']) {
      expect(r, k).to.have.property(k);
    }
    // A pod add is seen: the bench's own pod writes, the operator's NpmIPSet writes, agents waking.
    const raw = r.writes_per_pod_event_raw as Record<string, number>;
    expect(raw.pods, 'pod create').to.equal(1);
    expect(raw['pods/status'], 'pod status').to.equal(1);
    expect(raw.npmipsets ?? 0, 'NpmIPSet writes per pod add').to.be.greaterThan(0);
    expect(r.agent_wakeups_per_pod_event).to.be.greaterThan(0);
    expect((r.watch_bytes_per_pod_event_raw as Record<string, number>).npmipsets ?? 0).to.be.greaterThan(0);
    expect(r.policy_programmed_ms.p50).to.be.greaterThan(0);
    expect(r.operator_rss_mib).to.be.greaterThan(0);
    expect(r.agent_rss_mib).to.be.greaterThan(0);
  });
});
