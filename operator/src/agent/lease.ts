/**
 * The agent's liveness heartbeat: a coordination.k8s.io/v1 Lease per node
 * (`agentLeaseName(node)`, holder = the node name) renewed every leaseDuration/3.
 *
 * Why a Lease and not NpmNode status: a heartbeat in NpmNode would make an idle cluster write every
 * NpmNode and wake every NpmNode watcher (the operator's status fan-out) each period; a Lease is
 * the object Kubernetes itself uses for node heartbeats (kube-node-lease), watched by nobody but the
 * operator. Cost: one write per node per renew period, nothing else: the Lease we last wrote
 * (with its resourceVersion) is replaced directly, without a read; only a conflict (someone else
 * wrote it) costs a read before the write.
 *
 * The first write happens after the agent's first sync (the caller starts us then), so a renewed
 * Lease also says "this agent ran and reports"; the operator turns NpmNode Ready False when the
 * Lease is older than 2 lease periods. Stopping does not release the Lease: a restarting agent
 * keeps its node's state (the kernel keeps its rules), and a dead one ages out.
 * Effects: the LeaseApi and the Clock (wall-clock epoch ms, written into the Lease).
 */
import type { V1Lease } from '@kubernetes/client-node';
import { agentLeaseName } from '../api/names.js';
import { realClock, type Clock } from '../framework/backoff.js';
import { CORE, formatError, isConflict, isNotFound, kubeApi, objectPath, resourcePath, type KubeSource } from '../framework/kube.js';
import type { LeaseApi } from '../framework/leader.js';

/**
 * A time the API server stores as a MicroTime: JSON gives microseconds (what client-node's
 * V1MicroTime does, without loading client-node).
 */
class MicroTime extends Date {
  override toISOString(): string {
    return `${super.toISOString().slice(0, -1)}000Z`;
  }
}
export const microTime = (ms: number): Date => new MicroTime(ms);

/** The three Lease calls as plain JSON requests: the Lease comes back as on the wire (times are strings). */
export function leaseApiOf(src: KubeSource): LeaseApi {
  const api = kubeApi(src);
  return {
    readNamespacedLease: ({ name, namespace }) => api.request<V1Lease>('GET', objectPath(CORE.leases, namespace, name)),
    createNamespacedLease: ({ namespace, body }) => api.request<V1Lease>('POST', resourcePath(CORE.leases, namespace), { body }),
    replaceNamespacedLease: ({ name, namespace, body }) => api.request<V1Lease>('PUT', objectPath(CORE.leases, namespace, name), { body }),
  };
}

export const DEFAULT_LEASE_NAMESPACE = 'kube-npm-system';
export const DEFAULT_LEASE_SECONDS = 30;

export interface AgentLeaseOptions {
  node: string;
  namespace: string;
  /** leaseDurationSeconds written into the Lease; renewed every third of it. Default 30. */
  durationSeconds?: number;
  /** The API server (the agent's KubeClient, or a client-node KubeConfig). */
  kc?: KubeSource;
  /** Default: leaseApiOf(kc). */
  api?: LeaseApi;
  clock?: Clock;
  log: (s: string) => void;
}

export class AgentLease {
  readonly name: string;
  private readonly api: LeaseApi;
  private readonly clock: Clock;
  private readonly durationSeconds: number;
  private readonly stopAc = new AbortController();
  /** The Lease as we last wrote it (its resourceVersion makes the next replace a single write). */
  private held: V1Lease | undefined;
  private running: Promise<void> | undefined;
  /** The last renewal failed (logged once per outage, not every period). */
  private failing = false;

  constructor(private readonly o: AgentLeaseOptions) {
    this.name = agentLeaseName(o.node);
    if (!o.api && !o.kc) throw new Error('AgentLease needs kc or api');
    this.api = o.api ?? leaseApiOf(o.kc!);
    this.clock = o.clock ?? realClock;
    this.durationSeconds = o.durationSeconds ?? DEFAULT_LEASE_SECONDS;
    if (!(this.durationSeconds > 0)) throw new Error('lease duration must be > 0');
  }

  get renewMs(): number {
    return (this.durationSeconds * 1000) / 3;
  }

  start(): void {
    this.running ??= this.loop();
  }

  async stop(): Promise<void> {
    this.stopAc.abort();
    await this.running;
  }

  private async loop(): Promise<void> {
    while (!this.stopAc.signal.aborted) {
      try {
        await this.renew();
        if (this.failing) this.o.log(`lease ${this.o.namespace}/${this.name} renewed again`);
        this.failing = false;
      } catch (err) {
        if (!this.failing) this.o.log(`renewing lease ${this.o.namespace}/${this.name} failed (retrying every ${Math.round(this.renewMs)} ms): ${formatError(err)}`);
        this.failing = true;
      }
      await this.clock.sleep(this.renewMs, this.stopAc.signal);
    }
  }

  /** One renewal: exactly one write (plus a read only after a conflict or on the first call). */
  async renew(): Promise<void> {
    const { namespace } = this.o;
    const name = this.name;
    if (!this.held) {
      try {
        this.held = await this.api.readNamespacedLease({ name, namespace });
      } catch (err) {
        if (!isNotFound(err)) throw err;
        const now = microTime(this.clock.now());
        this.held = await this.api.createNamespacedLease({
          namespace,
          body: {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: { name, namespace, labels: { 'app.kubernetes.io/name': 'kube-npm', 'app.kubernetes.io/component': 'agent' } },
            spec: { holderIdentity: this.o.node, leaseDurationSeconds: this.durationSeconds, acquireTime: now, renewTime: now, leaseTransitions: 0 },
          },
        });
        return;
      }
    }
    try {
      this.held = await this.api.replaceNamespacedLease({ name, namespace, body: this.renewed(this.held) });
    } catch (err) {
      // Someone else wrote it (an admin, a previous agent process): read it and write once more.
      this.held = undefined;
      if (!isConflict(err)) throw err;
      const fresh = await this.api.readNamespacedLease({ name, namespace });
      this.held = await this.api.replaceNamespacedLease({ name, namespace, body: this.renewed(fresh) });
    }
  }

  private renewed(l: V1Lease): V1Lease {
    const now = microTime(this.clock.now());
    const spec = l.spec ?? {};
    const ours = spec.holderIdentity === this.o.node;
    return {
      ...l,
      spec: {
        ...spec,
        holderIdentity: this.o.node,
        leaseDurationSeconds: this.durationSeconds,
        acquireTime: ours && spec.acquireTime ? spec.acquireTime : now,
        renewTime: now,
        leaseTransitions: (spec.leaseTransitions ?? 0) + (ours ? 0 : 1),
      },
    };
  }
}
