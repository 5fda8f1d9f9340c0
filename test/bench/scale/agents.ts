/**
 * bench:scale agent worker: runs the real AgentDaemon (informers, selection, planning, NpmNode
 * reporting) for several nodes in this one process, each against its own fake kernel (the injected
 * Exec: test/unit/agent/fakekernel.ts, which parses restore input like the real tools) and with its
 * own API client (framework/client.ts, as the agent CLI; own connections), so that 100 agents fit on 2 cores. No root, no real kernel.
 *
 *   node --import tsx test/bench/scale/agents.ts KUBECONFIG NODE[,NODE...]   (forked, IPC channel)
 *
 * Agent wakeups are counted by wrapping each agent's Converger.sync (one call = one sync the daemon
 * ran). Messages to the parent: {type:'ready', nodes} after every agent started; on {type:'stats'}:
 * {type:'stats', syncs: {node: n}, rssBytes, heapUsedBytes}.
 */
import { KubeClient } from '../../../operator/src/framework/client.js';
import { AgentDaemon } from '../../../operator/src/agent/daemon.js';
import { Converger } from '../../../operator/src/agent/converge.js';
import { realClock } from '../../../operator/src/agent/exec.js';
import { FakeKernel } from '../../unit/agent/fakekernel.js';
import { AgentLease } from '../../../operator/src/agent/lease.js';

export interface WorkerStats {
  type: 'stats';
  /**
   * Per node: syncs the daemon ran for a change (event), periodic full resyncs (full), and the
   * event syncs that changed the kernel (changed: wrote at least one restore line or repaired drift).
   */
  syncs: Record<string, { event: number; full: number; changed: number }>;
  rssBytes: number;
  heapUsedBytes: number;
}

const [kubeconfig, nodeList] = process.argv.slice(2);
if (!kubeconfig || !nodeList) throw new Error('usage: agents.ts KUBECONFIG NODE[,NODE...]');
const env = (k: string, d: number) => (process.env[k] ? Number(process.env[k]) : d);
const nodes = nodeList.split(',');
const syncs: WorkerStats['syncs'] = {};
const daemons: AgentDaemon[] = [];
const leases: AgentLease[] = [];
const quiet = process.env.SCALE_AGENT_LOG !== '1';

async function main(): Promise<void> {
  for (const node of nodes) {
    // The agent's own API client (as `kube-npm agent` uses it), one per agent: own connections.
    const kc = await KubeClient.load(kubeconfig!);
    const kernel = new FakeKernel();
    // The kernel's own call log would grow with every sync: this bench runs for minutes.
    kernel.calls = { push: () => 0 } as unknown as FakeKernel['calls'];
    const log = (s: string) => {
      if (!quiet || /fail|error/i.test(s)) process.stderr.write(`${new Date().toISOString()} agent ${node}: ${s}\n`);
    };
    const converger = new Converger({ exec: kernel.exec, backend: 'nft', log, resyncIntervalMs: env('SCALE_RESYNC_MS', 60_000) });
    const count = (syncs[node] = { event: 0, full: 0, changed: 0 });
    const sync = converger.sync.bind(converger);
    converger.sync = async (...a: Parameters<Converger['sync']>) => {
      // The daemon asks for a full sync only on its periodic timer (and after a failure).
      const full = !!a[1]?.forceFull;
      if (full) count.full++;
      else count.event++;
      const r = await sync(...a);
      if (!full && r.lines.ipset + r.lines.iptables + r.lines.destroy + r.drift.length > 0) count.changed++;
      return r;
    };
    const d = new AgentDaemon({
      kc, nodeName: node, backend: 'nft', converger, clock: realClock, log,
      resyncMs: env('SCALE_RESYNC_MS', 60_000),
      minIntervalMs: env('SCALE_MIN_INTERVAL_MS', 50),
      // The tamper check reads the (fake) kernel every second per agent: kernel-local work with no
      // API traffic, which 100 agents in one process would turn into the bottleneck of this bench.
      tamperCheckMs: 0,
      podStartup: 'open',
    });
    daemons.push(d);
    // The liveness heartbeat, as the agent CLI runs it (kube-system: the bench's operator watches
    // agent Leases there): one renew per third of the lease duration, counted as heartbeat writes.
    leases.push(new AgentLease({ kc, node, namespace: 'kube-system', log }));
  }
  // Start a few at a time: 25 initial lists at once on a loaded API server time out.
  for (let i = 0; i < daemons.length; i += 5) await Promise.all(daemons.slice(i, i + 5).map((d) => d.start()));
  for (const l of leases) l.start();
  process.send?.({ type: 'ready', nodes });
}

process.on('message', (m: { type: string }) => {
  if (m.type === 'stats') {
    const mu = process.memoryUsage();
    process.send?.({ type: 'stats', syncs: structuredClone(syncs), rssBytes: mu.rss, heapUsedBytes: mu.heapUsed } satisfies WorkerStats);
  } else if (m.type === 'stop') {
    void Promise.all([...daemons.map((d) => d.stop()), ...leases.map((l) => l.stop())]).finally(() => process.exit(0));
  }
});
process.on('disconnect', () => process.exit(0));
main().catch((err: unknown) => {
  process.stderr.write(`agent worker failed: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
