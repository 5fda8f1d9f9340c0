/**
 * `kube-npm agent --node-name NODE`: wiring of the agent daemon (agent/daemon.ts), its node metrics
 * on /node-metrics and its probes, and graceful shutdown. Stopping never flushes the kernel: the
 * rules stay enforced while the agent restarts, and the next agent adopts them.
 * The agent talks to the API server through framework/client.ts, never @kubernetes/client-node
 * (which alone costs ~70 MiB of RSS; docs/scale.md "Agent memory"): nothing on this import path
 * may load it at runtime (test/unit/framework/client-imports.test.ts).
 */
import { AgentDaemon } from '../agent/daemon.js';
import { AgentLease, DEFAULT_LEASE_NAMESPACE, DEFAULT_LEASE_SECONDS } from '../agent/lease.js';
import { detectBackend, type BackendChoice } from '../agent/backend.js';
import { Converger } from '../agent/converge.js';
import { realClock, realExec, realSpawn } from '../agent/exec.js';
import { IpsetSession } from '../agent/ipset/session.js';
import { createNodeMetrics } from '../metrics/node.js';
import { parseBindAddress as parseAddress, startEndpoints } from '../metrics/serve.js';
import type { CliIO } from './translate.js';
import type { V1Node } from '@kubernetes/client-node';
import { decidePodStartup, type PodStartupMode } from '../agent/podstartup.js';
import { KubeClient } from '../framework/client.js';
import { statusCode } from '../framework/kube.js';

/** The Node's spec.podCIDRs (or spec.podCIDR), or why they could not be read. */
async function nodePodCidrs(api: KubeClient, name: string): Promise<string[] | { error: string }> {
  try {
    const node = await api.request<V1Node>('GET', `/api/v1/nodes/${encodeURIComponent(name)}`);
    const cidrs = node.spec?.podCIDRs?.length ? node.spec.podCIDRs : node.spec?.podCIDR ? [node.spec.podCIDR] : [];
    return cidrs.length ? cidrs : { error: `Node ${name} has no spec.podCIDRs` };
  } catch (err) {
    const code = statusCode(err);
    return { error: `reading Node ${name}: ${code ? `HTTP ${code}` : err instanceof Error ? err.message : String(err)}` };
  }
}

export interface DaemonFlags {
  nodeName: string;
  backend: BackendChoice;
  kubeconfig?: string;
  'metrics-bind-address'?: string;
  /** "false": plain HTTP without authorization, probes on the metrics port (sandbox, tests). */
  'metrics-secure'?: string;
  'metrics-cert-dir'?: string;
  'health-probe-bind-address'?: string;
  'resync-seconds'?: string;
  'min-sync-interval-ms'?: string;
  /** Program the kernel of this network namespace instead of our own (sandbox and e2e tests: the
   *  process stays where the API server is reachable, its ipset/iptables commands run in NETNS). */
  netns?: string;
  /** strict | open; absent: strict when the pod CIDR is known (agent/podstartup.ts decidePodStartup). */
  'pod-startup'?: string;
  /** This node's pod CIDR(s), comma-separated; default: the Node's spec.podCIDRs. */
  'pod-cidr'?: string;
  /** Namespace of the liveness Lease; default $POD_NAMESPACE, else kube-npm-system. */
  'lease-namespace'?: string;
  /** leaseDurationSeconds of the liveness Lease (renewed every third of it); default 30. */
  'lease-duration'?: string;
}

export async function runDaemon(f: DaemonFlags, io: CliIO): Promise<number> {
  const log = (s: string) => io.stderr(`${new Date().toISOString()} agent ${f.nodeName}: ${s}\n`);
  const api = await KubeClient.load(f.kubeconfig);
  const startup = decidePodStartup(f['pod-startup'] as PodStartupMode | undefined, f['pod-cidr']?.split(','), f['pod-cidr'] ? [] : await nodePodCidrs(api, f.nodeName));
  if ('error' in startup) {
    io.stderr(`error: ${startup.error}\n`);
    return 2;
  }
  for (const l of startup.log) log(l);
  const exec = realExec(f.netns ? { netns: f.netns } : {});
  const backend = await detectBackend(exec, f.backend, log);
  const metrics = createNodeMetrics({ exec, backend, podStartup: startup.mode });
  // One long-lived `ipset restore` for small member writes: a pod change without a process start
  // (ADR 0010). It falls back to a process per write by itself after failing repeatedly.
  const ipsetSession = new IpsetSession({ spawn: realSpawn(f.netns ? { netns: f.netns } : {}), log });
  const converger = new Converger({ exec, backend, log, observer: metrics.observer, resyncIntervalMs: Number(f['resync-seconds'] ?? 60) * 1000, ipsetSession });
  const daemon = new AgentDaemon({
    kc: api,
    nodeName: f.nodeName, backend, converger, clock: realClock, log, metrics,
    resyncMs: Number(f['resync-seconds'] ?? 60) * 1000,
    minIntervalMs: Number(f['min-sync-interval-ms'] ?? 50),
    podStartup: startup.mode, podCidrs: startup.cidrs,
  });
  const addr = parseAddress(f['metrics-bind-address'] ?? '0.0.0.0:10091', '--metrics-bind-address');
  const server = await startEndpoints({
    kc: api, secure: f['metrics-secure'] !== 'false', metrics: addr, path: '/node-metrics', registry: metrics.registry, log,
    ...(f['metrics-cert-dir'] ? { certDir: f['metrics-cert-dir'] } : {}),
    ...(f['health-probe-bind-address'] ? { health: parseAddress(f['health-probe-bind-address'], '--health-probe-bind-address') } : {}),
    probes: { '/healthz': () => true, '/readyz': () => daemon.ready },
  });
  log(`backend ${backend}; ${server.summary}`);
  await daemon.start();
  // The heartbeat starts once the first sync ran: a renewed Lease says this agent syncs and
  // reports (the operator turns NpmNode Ready False when it ages past 2 lease periods).
  await daemon.settled();
  const lease = new AgentLease({
    kc: api, node: f.nodeName, log,
    namespace: f['lease-namespace'] || process.env.POD_NAMESPACE || DEFAULT_LEASE_NAMESPACE,
    durationSeconds: Number(f['lease-duration'] ?? DEFAULT_LEASE_SECONDS),
  });
  lease.start();
  log(`liveness: Lease ${lease.name} renewed every ${Math.round(lease.renewMs)} ms`);
  return new Promise<number>((resolve) => {
    const stop = () => {
      log('stopping (kernel state is kept)');
      void Promise.all([lease.stop(), daemon.stop()]).finally(() => {
        ipsetSession.close();
        server.close();
        api.close();
        resolve(0);
      });
    };
    process.once('SIGTERM', stop);
    process.once('SIGINT', stop);
  });
}
