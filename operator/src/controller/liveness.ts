/**
 * Agent liveness from the agents' Leases (agent/lease.ts: `agentLeaseName(node)`, holder = the node,
 * renewed every leaseDuration/3). Nothing happens when an agent dies, so this needs a clock: a node
 * whose Lease was last renewed more than 2 lease durations ago is not reporting. A node without a
 * Lease is not judged (an agent older than the Lease, or one that has not finished its first sync).
 * Pure: times are passed in (epoch ms).
 */
import { agentLeaseName } from '../api/names.js';

export interface AgentLease {
  metadata?: { name?: string };
  spec?: { holderIdentity?: string; leaseDurationSeconds?: number; renewTime?: Date | string; acquireTime?: Date | string };
}

/** Lease periods without a renewal after which an agent is not reporting. */
export const MISSED_PERIODS = 2;

export class Liveness {
  /** node -> last renewal (epoch ms) and the lease duration (ms). */
  private readonly leases = new Map<string, { renewedAt: number; durationMs: number }>();

  /** Record an agent Lease (others in the namespace, the operator's own say, are ignored). */
  update(lease: AgentLease): void {
    const node = lease.spec?.holderIdentity;
    if (!node || lease.metadata?.name !== agentLeaseName(node)) return;
    const t = lease.spec?.renewTime ?? lease.spec?.acquireTime;
    const renewedAt = t === undefined ? NaN : new Date(t).getTime();
    const durationMs = (lease.spec?.leaseDurationSeconds ?? 0) * 1000;
    if (!Number.isFinite(renewedAt) || !(durationMs > 0)) return;
    this.leases.set(node, { renewedAt, durationMs });
  }

  remove(lease: AgentLease): void {
    const node = lease.spec?.holderIdentity;
    if (node && lease.metadata?.name === agentLeaseName(node)) this.leases.delete(node);
  }

  /** Nodes not reporting at `now` (-> ISO time of their last renewal), and when to look again. */
  evaluate(now: number): { stale: Map<string, string>; nextCheckAt: number | undefined } {
    const stale = new Map<string, string>();
    let next: number | undefined;
    for (const [node, l] of this.leases) {
      const deadline = l.renewedAt + MISSED_PERIODS * l.durationMs;
      if (now > deadline) stale.set(node, new Date(l.renewedAt).toISOString());
      else next = Math.min(next ?? Infinity, deadline + 1);
    }
    return { stale, nextCheckAt: next };
  }
}
