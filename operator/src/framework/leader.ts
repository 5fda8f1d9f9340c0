/**
 * Leader election on a coordination.k8s.io/v1 Lease (after client-go's leaderelection package).
 *
 * Model
 *  - Every retryPeriod each candidate reads the Lease. It is free when it does not exist (create
 *    it; a 409 means another candidate created it first), when holderIdentity is '' (released), or
 *    when it has expired: renewTime + leaseDurationSeconds is past AND this process has seen the
 *    record unchanged for leaseDurationSeconds on its own clock. The second half is client-go's
 *    guard against clock skew: a candidate whose clock runs ahead of the leader's must not steal a
 *    lease the leader is renewing. (Cost: a fresh process facing a stale lease of a crashed holder
 *    waits one lease duration.)
 *  - Taking or renewing the Lease is a replace carrying the resourceVersion we read: of two racing
 *    candidates exactly one write succeeds, the other gets 409 and stays a follower.
 *  - The leader renews every retryPeriod. If it has not renewed successfully for
 *    renewDeadlineSeconds (< leaseDurationSeconds, so before anyone else may take over) it steps
 *    down: isLeader() turns false and onStoppedLeading runs. It then campaigns again.
 *  - stop(): the loop ends; if leading, onStoppedLeading runs (awaited) and THEN the lease is
 *    released (holderIdentity '', leaseDurationSeconds 1), so a successor starts only after our
 *    work has stopped and does not have to wait for expiry.
 *  - onStartedLeading is not awaited (it may run for as long as we lead); errors are logged.
 *    onStoppedLeading may therefore be called while onStartedLeading is still running.
 * Times written are V1MicroTime (the API server wants microseconds). Effects: the LeaseApi and
 * the Clock (wall-clock epoch ms).
 */
import { CoordinationV1Api, V1MicroTime, type KubeConfig, type V1Lease } from '@kubernetes/client-node';
import { realClock, type Clock } from './backoff.js';
import { formatError, isConflict, isNotFound } from './kube.js';

/** The three CoordinationV1Api calls used; CoordinationV1Api itself satisfies it. */
export interface LeaseApi {
  readNamespacedLease(p: { name: string; namespace: string }): Promise<V1Lease>;
  createNamespacedLease(p: { namespace: string; body: V1Lease }): Promise<V1Lease>;
  replaceNamespacedLease(p: { name: string; namespace: string; body: V1Lease }): Promise<V1Lease>;
}

export interface LeaderOptions {
  kc: KubeConfig;
  namespace: string;
  name: string;
  /** Unique per process (pod name + random suffix, say). */
  identity: string;
  /** How long a lease is valid after its last renewal; default 15. */
  leaseDurationSeconds?: number;
  /** The leader steps down after failing to renew for this long; default 10. */
  renewDeadlineSeconds?: number;
  /** Interval between attempts (candidates) and renewals (leader); default 2. */
  retryPeriodSeconds?: number;
  clock?: Clock;
  log?: (msg: string) => void;
  /** Injectable API (unit tests); default kc.makeApiClient(CoordinationV1Api). */
  api?: LeaseApi;
}

export interface LeaderCallbacks {
  onStartedLeading: () => void | Promise<void>;
  onStoppedLeading: () => void | Promise<void>;
}

/** Parse a Lease time: the client returns the wire string (V1MicroTime is not deserialized) or a Date. */
function millis(t: Date | string | undefined): number | undefined {
  if (t === undefined || t === null) return undefined;
  const v = t instanceof Date ? t.getTime() : Date.parse(t);
  return Number.isFinite(v) ? v : undefined;
}

export class LeaderElector {
  private readonly api: LeaseApi;
  private readonly clock: Clock;
  private readonly log: (msg: string) => void;
  private readonly leaseMs: number;
  private readonly renewDeadlineMs: number;
  private readonly retryMs: number;
  private readonly stopAc = new AbortController();
  private leader = false;
  private stopping = false;
  private running: Promise<void> | undefined;
  /** The Lease as we last wrote it (for release). */
  private held: V1Lease | undefined;
  /** Local time of our last successful acquire/renew. */
  private lastRenew = 0;
  /** holderIdentity of the last record read ('' when free or unknown). */
  private lastHolder = '';
  /** The record's resourceVersion and the local time we first saw it. */
  private observed: { rv: string; at: number } | undefined;

  constructor(private readonly o: LeaderOptions) {
    this.api = o.api ?? o.kc.makeApiClient(CoordinationV1Api);
    this.clock = o.clock ?? realClock;
    const sink = o.log ?? ((m: string) => void process.stderr.write(`${m}\n`));
    this.log = (m) => sink(`leader ${o.namespace}/${o.name} (${o.identity}): ${m}`);
    this.leaseMs = (o.leaseDurationSeconds ?? 15) * 1000;
    this.renewDeadlineMs = (o.renewDeadlineSeconds ?? 10) * 1000;
    this.retryMs = (o.retryPeriodSeconds ?? 2) * 1000;
    if (!(this.leaseMs > this.renewDeadlineMs && this.renewDeadlineMs > this.retryMs && this.retryMs > 0)) {
      throw new Error('leader election needs leaseDuration > renewDeadline > retryPeriod > 0');
    }
    if (!o.identity) throw new Error('leader election needs a non-empty identity');
  }

  isLeader(): boolean {
    return this.leader;
  }

  /** Campaign (and lead) until stop(); resolves after stop() has released the lease. */
  run(callbacks: LeaderCallbacks): Promise<void> {
    if (this.running) throw new Error('LeaderElector.run() called twice');
    this.running = this.loop(callbacks);
    return this.running;
  }

  /** Stop campaigning; if leading, run onStoppedLeading and release the lease. Idempotent. */
  async stop(): Promise<void> {
    this.stopping = true;
    this.stopAc.abort();
    await this.running;
  }

  private async loop(cb: LeaderCallbacks): Promise<void> {
    while (!this.stopping) {
      let ok = false;
      try {
        ok = await this.withDeadline(this.tryAcquireOrRenew());
      } catch (err) {
        this.log(`${this.leader ? 'renew' : 'acquire'} failed: ${formatError(err)}`);
      }
      if (this.stopping) break;
      if (ok && !this.leader) {
        this.leader = true;
        this.log('became leader');
        void Promise.resolve()
          .then(() => cb.onStartedLeading())
          .catch((err: unknown) => this.log(`onStartedLeading failed: ${formatError(err)}`));
      } else if (!ok && this.leader) {
        // Someone else holds the record (it expired on their clock, or was taken by hand): step down
        // at once. Otherwise keep leading until the renew deadline, which ends before expiry.
        const since = this.clock.now() - this.lastRenew;
        const other = this.lastHolder !== '' && this.lastHolder !== this.o.identity;
        if (other || since >= this.renewDeadlineMs) {
          this.leader = false;
          this.log(other ? `lost the lease to ${this.lastHolder}` : `lost the lease: no renewal for ${since} ms`);
          await this.callStopped(cb);
        }
      }
      await this.clock.sleep(this.retryMs, this.stopAc.signal);
    }
    if (this.leader) {
      this.leader = false;
      await this.callStopped(cb);
      await this.release();
    }
  }

  private async callStopped(cb: LeaderCallbacks): Promise<void> {
    try {
      await cb.onStoppedLeading();
    } catch (err) {
      this.log(`onStoppedLeading failed: ${formatError(err)}`);
    }
  }

  /** A hung API call must not keep a leader that cannot renew believing it leads. */
  private async withDeadline<R>(p: Promise<R>): Promise<R> {
    const ac = new AbortController();
    const timeout = this.clock.sleep(this.renewDeadlineMs, ac.signal).then(() => {
      if (!ac.signal.aborted) throw new Error(`lease request took longer than ${this.renewDeadlineMs} ms`);
      return undefined as never;
    });
    try {
      return await Promise.race([p, timeout]);
    } finally {
      ac.abort();
    }
  }

  /** One attempt; true when we hold the lease afterwards. Throws on unexpected API errors. */
  private async tryAcquireOrRenew(): Promise<boolean> {
    const { name, namespace, identity } = this.o;
    const now = this.clock.now();
    this.lastHolder = '';
    let lease: V1Lease;
    try {
      lease = await this.api.readNamespacedLease({ name, namespace });
    } catch (err) {
      if (!isNotFound(err)) throw err;
      const body: V1Lease = {
        apiVersion: 'coordination.k8s.io/v1',
        kind: 'Lease',
        metadata: { name, namespace },
        spec: {
          holderIdentity: identity,
          leaseDurationSeconds: this.leaseMs / 1000,
          acquireTime: new V1MicroTime(now),
          renewTime: new V1MicroTime(now),
          leaseTransitions: 0,
        },
      };
      try {
        this.held = await this.api.createNamespacedLease({ namespace, body });
      } catch (e) {
        if (isConflict(e)) return false; // another candidate created it first
        throw e;
      }
      this.lastRenew = now;
      this.observed = { rv: this.held.metadata?.resourceVersion ?? '', at: now };
      return true;
    }

    const spec = lease.spec ?? {};
    const holder = spec.holderIdentity ?? '';
    this.lastHolder = holder;
    const rv = lease.metadata?.resourceVersion ?? '';
    if (this.observed?.rv !== rv) this.observed = { rv, at: now };
    if (holder !== identity && holder !== '') {
      const duration = (spec.leaseDurationSeconds ?? this.leaseMs / 1000) * 1000;
      const renewed = millis(spec.renewTime) ?? 0;
      const expired = renewed + duration <= now && this.observed.at + duration <= now;
      if (!expired) return false;
      this.log(`lease of ${holder} expired (renewed ${new Date(renewed).toISOString()}); taking over`);
    }
    const body: V1Lease = {
      ...lease,
      spec: {
        ...spec,
        holderIdentity: identity,
        leaseDurationSeconds: this.leaseMs / 1000,
        acquireTime: holder === identity && spec.acquireTime ? spec.acquireTime : new V1MicroTime(now),
        renewTime: new V1MicroTime(now),
        leaseTransitions: (spec.leaseTransitions ?? 0) + (holder === identity ? 0 : 1),
      },
    };
    try {
      this.held = await this.api.replaceNamespacedLease({ name, namespace, body });
    } catch (e) {
      if (isConflict(e)) return false; // someone wrote since our read: lost the race
      throw e;
    }
    this.lastRenew = now;
    this.observed = { rv: this.held.metadata?.resourceVersion ?? '', at: now };
    return true;
  }

  /** Hand the lease over at once: holderIdentity '' and a 1 s duration, guarded by resourceVersion. */
  private async release(): Promise<void> {
    const lease = this.held;
    if (!lease) return;
    const now = new V1MicroTime(this.clock.now());
    try {
      await this.api.replaceNamespacedLease({
        name: this.o.name,
        namespace: this.o.namespace,
        body: { ...lease, spec: { ...lease.spec, holderIdentity: '', leaseDurationSeconds: 1, acquireTime: now, renewTime: now } },
      });
      this.log('released the lease');
    } catch (err) {
      // 409: someone else holds it already; anything else: it expires on its own.
      this.log(`release failed (the lease will expire): ${formatError(err)}`);
    }
    this.held = undefined;
  }
}
