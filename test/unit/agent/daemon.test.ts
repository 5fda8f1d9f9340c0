// AgentDaemon with its real parts (informers, selection, model, Converger) over a scripted API
// transport and a fake kernel: what it watches, and how many NpmNode writes it makes.
import { KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import { expect } from 'chai';
import sinon from 'sinon';
import { AgentDaemon } from '../../../operator/src/agent/daemon.js';
import { Converger } from '../../../operator/src/agent/converge.js';
import { nodeLabelKey } from '../../../operator/src/api/names.js';
import { ACK_ANNOTATION, POD_CONDITION, type NpmNodeStatus } from '../../../operator/src/api/types.js';
import type { ResourceRef } from '../../../operator/src/framework/kube.js';
import type { Pod } from '../../../operator/src/translate/k8s.js';
import { FakeTransport, flush } from '../framework/fakes.js';
import { FakeClock, FakeKernel } from './fakekernel.js';
import { objects, snapshot } from './fixtures.js';

interface Harness {
  daemon: AgentDaemon;
  kernel: FakeKernel;
  transports: Map<string, FakeTransport>;
  /** Every list request: plural and its label selector. */
  lists: { plural: string; labelSelector?: string }[];
  writes: NpmNodeStatus[];
  logs: string[];
  /** Waits until no sync runs or is pending. */
  settle(): Promise<void>;
  stop(): Promise<void>;
}

let rv = 100;
const nextRv = (): string => String(++rv);

function withRv<T extends KubernetesObject>(o: T): T {
  return { ...o, metadata: { ...o.metadata, resourceVersion: nextRv() } };
}

const SHAPE = { namespaces: 1, podsPerNamespace: 3, policiesPerNamespace: 1 };

interface HarnessOptions {
  retryMs?: number;
  resyncMs?: number;
  podStartup?: 'strict' | 'open';
  /** The NpmRuleSets are not labelled for this node at start: its watch lists none. */
  noRulesets?: boolean;
  /** NpmNode write delay after a sync; default 100 ms here (the tests' timelines assume it). */
  reportDelayMs?: number;
  /** Default: the instant fake clock (every sleep returns at once, time jumps). */
  clock?: { now(): number; sleep(ms: number): Promise<void> };
}

/** Time moves only by advance(): sleeps resolve when their time has come. */
class ManualClock {
  t = 0;
  private sleepers: { until: number; resolve: () => void }[] = [];
  now = (): number => this.t;
  sleep = (ms: number): Promise<void> => new Promise<void>((resolve) => this.sleepers.push({ until: this.t + ms, resolve }));
  async advance(ms: number): Promise<void> {
    this.t += ms;
    const due = this.sleepers.filter((x) => x.until <= this.t);
    this.sleepers = this.sleepers.filter((x) => x.until > this.t);
    for (const d of due) d.resolve();
    await flush(20);
  }
}

async function harness(opts: HarnessOptions = {}): Promise<Harness & { items: KubernetesObject[] }> {
  const kernel = new FakeKernel();
  const clock = opts.clock ?? new FakeClock();
  const logs: string[] = [];
  const log = (s: string): void => void logs.push(s);
  const items = objects(SHAPE) as KubernetesObject[];
  const pods = snapshot(SHAPE).pods.map((p, i) => withRv({ ...p, metadata: { ...p.metadata, uid: `uid-${i}` } }) as Pod & KubernetesObject);
  const byPlural: Record<string, KubernetesObject[]> = {
    npmrulesets: opts.noRulesets ? [] : items.filter((o) => o.kind === 'NpmRuleSet').map(withRv),
    npmipsets: items.filter((o) => o.kind === 'NpmIPSet').map(withRv),
    pods,
    networkpolicies: snapshot(SHAPE).policies.map((p) => withRv(p as KubernetesObject)),
    npmnodes: [],
  };
  const transports = new Map<string, FakeTransport>();
  const lists: Harness['lists'] = [];
  for (const [plural, objs] of Object.entries(byPlural)) {
    const t = new FakeTransport();
    t.lists = [{ items: objs, resourceVersion: nextRv() }];
    transports.set(plural, t);
  }
  const writes: NpmNodeStatus[] = [];
  const converger = new Converger({ exec: kernel.exec, backend: 'nft', clock, log, resyncIntervalMs: 3_600_000, retry: { attempts: 2, initialDelayMs: 1 } });
  const daemon = new AgentDaemon({
    kc: new KubeConfig(),
    nodeName: 'n1',
    backend: 'nft',
    converger,
    clock,
    log,
    // No periodic resync: on the instant clock every timer is due at once (a periodic one would
    // run forever); the tests that need one pass it on a manual clock.
    resyncMs: opts.resyncMs ?? 0,
    reportDelayMs: opts.reportDelayMs ?? 100,
    resyncJitter: 0,
    tamperCheckMs: 0,
    retryMs: opts.retryMs ?? 3_600_000,
    podStartup: opts.podStartup ?? 'open',
    ...(opts.podStartup === 'strict' ? { podCidrs: ['10.244.0.0/16'] } : {}),
    transport: (r: ResourceRef) => {
      const t = transports.get(r.plural);
      if (!t) throw new Error(`no transport for ${r.plural}`);
      return {
        listFn: (req) => {
          lists.push({ plural: r.plural, ...(req.labelSelector !== undefined ? { labelSelector: req.labelSelector } : {}) });
          return t.listFn(req);
        },
        watchFn: t.watchFn,
      };
    },
    writeStatus: async (s) => void writes.push(JSON.parse(JSON.stringify(s)) as NpmNodeStatus),
  });
  await daemon.start();
  const settle = async (): Promise<void> => {
    await flush(20);
    await daemon.settled();
    await flush(20);
  };
  await settle();
  return { daemon, kernel, transports, lists, writes, logs, settle, stop: () => daemon.stop(), items };
}

describe('AgentDaemon', () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.stop();
    h = undefined;
  });

  it('watches only the NpmRuleSets and NpmIPSets labelled for its node (ADR 0011)', async () => {
    h = await harness();
    const key = nodeLabelKey('n1');
    expect(key).to.equal('node.kubenpm.io/n1');
    for (const plural of ['npmrulesets', 'npmipsets']) {
      expect(h.lists.filter((l) => l.plural === plural), plural).to.deep.equal([{ plural, labelSelector: key }]);
      expect(h.transports.get(plural)!.current.query.labelSelector, `${plural} watch`).to.equal(key);
    }
    // Pods: its own node's, by field selector; NetworkPolicies: all (pod startup needs them).
    expect(h.transports.get('pods')!.current.query.fieldSelector).to.equal('spec.nodeName=n1');
    expect(h.transports.get('networkpolicies')!.current.query.labelSelector).to.equal(undefined);
  });
});

/** A local pod; `gated`: with the membership readiness gate (its node acknowledges seeing it, ADR 0015). */
function newPod(name: string, ip: string, gated = false): Pod & KubernetesObject {
  return withRv({
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: 'ns0', uid: `uid-${name}`, labels: { app: 'app0', role: 'web' } },
    spec: { nodeName: 'n1', containers: [{ name: 'c' }], ...(gated ? { readinessGates: [{ conditionType: POD_CONDITION }] } : {}) },
    status: { phase: 'Running', podIP: ip },
  } as Pod & KubernetesObject);
}

describe('AgentDaemon NpmNode writes', () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.stop();
    h = undefined;
  });

  it('N syncs that change nothing in the kernel write NpmNode once (the first), whatever the watch positions do', async () => {
    h = await harness();
    expect(h.writes).to.have.length(1);
    const first = h.writes[0]!;
    expect(first.lastError).to.equal('');
    expect(first.applied).to.have.length.greaterThan(0);
    expect(first.observed?.pods).to.be.a('string');
    const pods = h.transports.get('pods')!.current;
    const ipsets = h.transports.get('npmipsets')!.current;
    const pod0 = h.transports.get('pods')!.lists[0] as { items: KubernetesObject[] };
    for (let i = 0; i < 10; i++) {
      // An annotation change (no kernel change), bookmarks on both streams, and plain requests.
      pods.emit('MODIFIED', withRv({ ...pod0.items[0]!, metadata: { ...pod0.items[0]!.metadata, annotations: { n: String(i) } } }));
      ipsets.emit('BOOKMARK', { metadata: { resourceVersion: nextRv() } });
      pods.emit('BOOKMARK', { metadata: { resourceVersion: nextRv() } });
      await h.settle();
      h.daemon.request();
      await h.settle();
    }
    expect(h.writes, JSON.stringify(h.writes.slice(1))).to.have.length(1);
  });

  it('its NpmNode deleted while idle is written again (once); it watches only its own', async () => {
    h = await harness();
    const w = h.transports.get('npmnodes')!.current;
    expect(w.query.fieldSelector).to.equal('metadata.name=n1');
    w.emit('ADDED', withRv({ apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: 'n1' }, status: h.writes[0] } as KubernetesObject));
    await h.settle();
    expect(h.writes).to.have.length(1);
    w.emit('DELETED', withRv({ apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: 'n1' } } as KubernetesObject));
    await h.settle();
    expect(h.writes).to.have.length(2);
    expect(h.writes[1]).to.deep.equal(h.writes[0]);
  });

  it('the operator writing several shards of one pod event a few ms apart, asking for an acknowledgment, costs one sync and one NpmNode write', async () => {
    const clock = new ManualClock();
    const started = harness({ clock });
    for (let i = 0; i < 10; i++) await clock.advance(100); // the initial sync waits for nothing but its coalescing
    h = await started;
    await clock.advance(1000); // quiet: past the minimum interval after the first sync
    const w = h.transports.get('npmipsets')!.current;
    const shards = (h.transports.get('npmipsets')!.lists[0] as unknown as { items: (KubernetesObject & { spec: { members: string[]; type: string } })[] }).items.filter((o) => o.spec.type === 'hash:ip').slice(0, 3);
    expect(shards).to.have.length(3);
    const restores = h.kernel.writes().length;
    for (const sh of shards) {
      w.emit('MODIFIED', withRv({ ...sh, metadata: { ...sh.metadata, annotations: { [ACK_ANNOTATION]: 'op.1' } }, spec: { ...sh.spec, members: [...sh.spec.members, '10.244.7.7'].sort() } }));
      await clock.advance(8);
    }
    for (let i = 0; i < 5; i++) await clock.advance(100);
    await h.settle();
    expect(h.writes).to.have.length(2);
    expect(h.kernel.writes().length - restores, 'restore runs').to.be.at.most(2);
  });

  it('two gated pods within the report delay (100 ms) cost one NpmNode write, of the latest state', async () => {
    const clock = new ManualClock();
    const started = harness({ clock });
    for (let i = 0; i < 10; i++) await clock.advance(100);
    h = await started;
    await clock.advance(1000);
    expect(h.writes).to.have.length(1);
    const pods = h.transports.get('pods')!.current;
    pods.emit('ADDED', newPod('a', '10.244.9.1', true));
    await flush(20);
    for (let i = 0; i < 6; i++) await clock.advance(10); // a synced at +25 ms
    const b = newPod('b', '10.244.9.2', true);
    pods.emit('ADDED', b);
    await flush(20);
    for (let i = 0; i < 30; i++) await clock.advance(10); // b synced at +85 ms, the report at +125 ms
    await h.settle();
    expect(h.writes).to.have.length(2);
    // The one write is of the latest state: the second pod's sync.
    expect(Number(h.writes[1]!.observed!.pods)).to.be.at.least(Number(b.metadata!.resourceVersion));
  });

  it('a membership change nobody waits for writes nothing (ADR 0015); a gated pod, or a shard that asks, writes once with the new watch position', async () => {
    h = await harness();
    const before = h.writes[0]!;
    const pods = h.transports.get('pods')!.current;
    const k = h.kernel;
    const local = (): string[] => [...(k.sets.get('KNPM-LOCAL')?.members.keys() ?? [])];
    // An ungated pod: programmed, not acknowledged.
    pods.emit('ADDED', newPod('plain', '10.244.9.8'));
    await h.settle();
    expect(local()).to.include('10.244.9.8');
    expect(h.writes, 'no NpmNode write for an ungated pod').to.have.length(1);
    // A shard change without a request: programmed, not acknowledged.
    const ipsets = h.transports.get('npmipsets')!.current;
    const shard = (h.transports.get('npmipsets')!.lists[0] as unknown as { items: (KubernetesObject & { spec: { members: string[]; type: string; setName: string } })[] }).items.find((o) => o.spec.type === 'hash:ip')!;
    const withMember = withRv({ ...shard, spec: { ...shard.spec, members: [...shard.spec.members, '10.244.7.7'].sort() } });
    ipsets.emit('MODIFIED', withMember);
    await h.settle();
    expect([...(k.sets.get(shard.spec.setName)?.members.keys() ?? [])]).to.include('10.244.7.7');
    expect(h.writes, 'no NpmNode write for a shard nobody waits on').to.have.length(1);
    // The same shard asking: one write, whose position covers the shard's version.
    const asking = withRv({ ...withMember, metadata: { ...withMember.metadata, annotations: { [ACK_ANNOTATION]: 'op.7' } } });
    ipsets.emit('MODIFIED', asking);
    await h.settle();
    expect(h.writes).to.have.length(2);
    expect(Number(h.writes[1]!.observed!.ipsets)).to.be.at.least(Number(asking.metadata!.resourceVersion));
    // Its next version with the same stamp asks nothing.
    ipsets.emit('MODIFIED', withRv({ ...asking, spec: { ...asking.spec, members: [...asking.spec.members, '10.244.7.8'].sort() } }));
    await h.settle();
    expect(h.writes).to.have.length(2);
    // A gated pod: one write, whose position covers the pod.
    const gated = newPod('gated', '10.244.9.9', true);
    pods.emit('ADDED', gated);
    await h.settle();
    h.daemon.request();
    await h.settle();
    expect(h.writes).to.have.length(3);
    const after = h.writes[2]!;
    expect(Number(after.observed!.pods)).to.be.at.least(Number(gated.metadata!.resourceVersion));
    expect(after.kernel, 'counts move with policies, not members').to.deep.equal(before.kernel);
  });

  it('a failed sync writes once, with the kernel tool message in lastError; the same failure again writes nothing; the retry waits for its backoff and applies the newest state', async () => {
    const clock = new ManualClock();
    const started = harness({ clock, retryMs: 5000 });
    for (let i = 0; i < 10; i++) await clock.advance(100);
    h = await started;
    await clock.advance(1000);
    expect(h.writes).to.have.length(1);
    const k = h.kernel;
    const stderr = 'ipset v7.19: Error in line 1: Kernel error received: Cannot allocate memory';
    // The converger makes 2 attempts per sync (harness): both fail.
    const failRestore = (): void => k.failNext((argv) => argv[0] === 'ipset' && argv[1] === 'restore', { applyLines: 0, stderr });
    const failures = (): number => h!.logs.filter((l) => l.includes('sync failed') && l.includes('Cannot allocate memory')).length;
    const local = (): string[] => [...(k.sets.get('KNPM-LOCAL')?.members.keys() ?? [])];
    for (let i = 0; i < 2; i++) failRestore();
    const pods = h.transports.get('pods')!.current;
    pods.emit('ADDED', newPod('new', '10.244.9.9'));
    for (let i = 0; i < 30; i++) await clock.advance(10);
    expect(failures()).to.equal(1);
    expect(h.logs.some((l) => l.includes('sync failed') && l.includes('retrying in 5000 ms'))).to.equal(true);
    expect(h.writes).to.have.length(2);
    const failed = h.writes[1]!;
    expect(failed.lastError).to.contain('Cannot allocate memory');
    expect(failed.lastError).to.contain('ipset restore');
    expect(failed.conditions!.find((c) => c.type === 'Ready')).to.include({ status: 'False', reason: 'SyncFailed' });
    expect(failed.kernel, 'the kernel kept its last good state').to.deep.equal(h.writes[0]!.kernel);
    // The retry, 5 s later, fails the same way: nothing new to write.
    for (let i = 0; i < 2; i++) failRestore();
    await clock.advance(4000);
    expect(failures(), 'no retry before its backoff delay').to.equal(1);
    await clock.advance(1000);
    for (let i = 0; i < 30; i++) await clock.advance(10);
    expect(failures()).to.equal(2);
    expect(h.writes, 'the same failure again').to.have.length(2);
    // Requests during the backoff (10 s now) wait for the retry, which plans from the caches as
    // they are then: it applies the pod added meanwhile.
    const restores = k.writes().length;
    pods.emit('ADDED', newPod('late', '10.244.9.10'));
    h.daemon.request();
    await clock.advance(9000);
    expect(k.writes().length, 'nothing runs before the retry time').to.equal(restores);
    await clock.advance(1000);
    for (let i = 0; i < 30; i++) await clock.advance(10);
    expect(failures()).to.equal(2);
    expect(local()).to.include.members(['10.244.9.9', '10.244.9.10']);
    expect(h.writes).to.have.length(3);
    expect(h.writes[2]!.lastError).to.equal('');
  });

  it('a periodic full resync every resyncMs, told apart from requested syncs; a busy stream does not starve it', async () => {
    const clock = new ManualClock();
    const started = harness({ clock, resyncMs: 10_000 });
    for (let i = 0; i < 10; i++) await clock.advance(100);
    h = await started;
    const k = h.kernel;
    const reads = (): number => k.calls.filter((c) => c.argv[0] === 'ipset' && c.argv[1] === 'list').length;
    const r0 = reads();
    // Requests every 500 ms for 25 s: incremental syncs (no kernel read) and 2 periodic full ones.
    for (let t = 0; t < 25_000; t += 500) {
      h.daemon.request();
      await clock.advance(500);
    }
    expect(reads() - r0).to.equal(2);
    expect(h.writes, 'nothing changed: no NpmNode write').to.have.length(1);
  });
});

describe('AgentDaemon wakeups (issue #10)', () => {
  let h: Harness | undefined;
  let syncs: sinon.SinonSpy | undefined;
  afterEach(async () => {
    syncs?.restore();
    await h?.stop();
    h = undefined;
  });

  it('an update that changes nothing the agent reads runs no sync: a ruleset status, a pod\'s kubelet conditions, a policy in a namespace without a local pod or while no local pod waits', async () => {
    h = await harness();
    syncs = sinon.spy(Converger.prototype, 'sync');
    const first = <T,>(plural: string) => (h!.transports.get(plural)!.lists[0] as unknown as { items: T[] }).items[0]!;
    const rs = first<KubernetesObject & { metadata: { namespace: string } }>('npmrulesets');
    h.transports.get('npmrulesets')!.current.emit('MODIFIED', withRv({ ...rs, status: { conditions: [{ type: 'Programmed', status: 'False', reason: 'Pending', message: '0/3 nodes' }] } } as KubernetesObject));
    const shard = first<KubernetesObject>('npmipsets');
    h.transports.get('npmipsets')!.current.emit('MODIFIED', withRv({ ...shard, metadata: { ...shard.metadata, managedFields: [{ manager: 'x' }] } } as KubernetesObject));
    const pod = first<Pod & KubernetesObject>('pods');
    h.transports.get('pods')!.current.emit('MODIFIED', withRv({ ...pod, status: { ...pod.status, conditions: [{ type: 'Ready', status: 'True' }] } } as KubernetesObject));
    const np = first<KubernetesObject & { spec: object }>('networkpolicies');
    const policies = h.transports.get('networkpolicies')!.current;
    policies.emit('ADDED', withRv({ ...np, metadata: { name: 'elsewhere', namespace: 'no-local-pods', uid: 'u-else' } } as KubernetesObject));
    await h.settle();
    expect(syncs.callCount, 'syncs for updates that change nothing here').to.equal(0);
    // A policy where local pods run, all of them programmed: its NpmRuleSet will bring the sync.
    policies.emit('ADDED', withRv({ ...np, metadata: { name: 'here', namespace: pod.metadata.namespace, uid: 'u-here' } } as KubernetesObject));
    await h.settle();
    expect(syncs.callCount, 'sync for a policy while no local pod waits').to.equal(0);
    // The same kinds of event, changing what the agent reads, each cost a sync.
    h.transports.get('pods')!.current.emit('MODIFIED', withRv({ ...pod, metadata: { ...pod.metadata, labels: { ...pod.metadata.labels, extra: 'x' } } } as KubernetesObject));
    await h.settle();
    expect(syncs.callCount).to.equal(1);
    h.transports.get('npmrulesets')!.current.emit('MODIFIED', withRv({ ...rs, metadata: { ...rs.metadata, generation: 7 } } as KubernetesObject));
    await h.settle();
    expect(syncs.callCount).to.equal(2);
  });

  it('a shard of a set no cached ruleset references runs no sync (a new policy\'s sets arrive before it); the ruleset then costs one sync that programs both', async () => {
    h = await harness();
    syncs = sinon.spy(Converger.prototype, 'sync');
    const shard = (h.transports.get('npmipsets')!.lists[0] as unknown as { items: (KubernetesObject & { spec: { setName: string; type: string; members: string[] } })[] }).items.find((o) => o.spec.type === 'hash:ip')!;
    const fresh = withRv({ ...shard, metadata: { ...shard.metadata, name: 'knpm-s-fresh-0' }, spec: { ...shard.spec, setName: 'KNPM-FRESH', members: ['10.244.5.5'] } });
    h.transports.get('npmipsets')!.current.emit('ADDED', fresh);
    await h.settle();
    expect(syncs.callCount, 'sync for an unreferenced set').to.equal(0);
    expect(h.kernel.sets.has('KNPM-FRESH')).to.equal(false);
    // A ruleset referencing it: one sync, and the set is programmed with it.
    const rs = (h.transports.get('npmrulesets')!.lists[0] as unknown as { items: (KubernetesObject & { spec: { ipsets: object[] } })[] }).items[0]!;
    const ref = { name: 'KNPM-FRESH', type: 'hash:ip', kind: 'PodSelector', family: 'IPv4', meaning: 'test', members: [] };
    h.transports.get('npmrulesets')!.current.emit('MODIFIED', withRv({ ...rs, metadata: { ...rs.metadata, generation: 9 }, spec: { ...rs.spec, ipsets: [...rs.spec.ipsets, ref] } }));
    await h.settle();
    expect(syncs.callCount).to.equal(1);
    expect([...(h.kernel.sets.get('KNPM-FRESH')?.members.keys() ?? [])], 'a referenced set is programmed').to.deep.equal(['10.244.5.5']);
    // Now referenced: its member changes sync.
    h.transports.get('npmipsets')!.current.emit('MODIFIED', withRv({ ...fresh, spec: { ...fresh.spec, members: ['10.244.5.5', '10.244.5.6'] } }));
    await h.settle();
    expect(syncs.callCount).to.equal(2);
    expect([...(h.kernel.sets.get('KNPM-FRESH')?.members.keys() ?? [])], h.logs.slice(-5).join('\n')).to.include('10.244.5.6');
  });
});

describe('AgentDaemon pod startup with node-scoped watches (ADR 0009, 0011)', () => {
  let h: Harness | undefined;
  afterEach(async () => {
    await h?.stop();
    h = undefined;
  });

  it('strict: a new pod whose policy is not yet labelled for this node stays out of KNPM-LOCAL until the operator labels the ruleset and its sets', async () => {
    const hh = await harness({ podStartup: 'strict', noRulesets: true });
    h = hh;
    const local = (): string[] => [...(hh.kernel.sets.get('KNPM-LOCAL')?.members.keys() ?? [])];
    hh.transports.get('pods')!.current.emit('ADDED', newPod('new', '10.244.9.9'));
    await hh.settle();
    expect(local()).to.not.include('10.244.9.9');
    expect(hh.logs.some((l) => l.includes('pod startup: ns0/new') && l.includes('its NpmRuleSet is not programmed yet'))).to.equal(true);
    // The operator labels the sets (new member included) first, then the ruleset.
    const rs = hh.items.find((o) => o.kind === 'NpmRuleSet') as KubernetesObject & { spec: { chains: { targetSet: string }[] } };
    const target = rs.spec.chains[0]!.targetSet;
    const shard = hh.items.find((o) => o.kind === 'NpmIPSet' && (o as unknown as { spec: { setName: string } }).spec.setName === target) as KubernetesObject & { spec: { members: string[] } };
    hh.transports.get('npmipsets')!.current.emit('MODIFIED', withRv({ ...shard, spec: { ...shard.spec, members: [...shard.spec.members, '10.244.9.9'].sort() } }));
    await hh.settle();
    expect(local(), 'sets alone admit nothing').to.not.include('10.244.9.9');
    hh.transports.get('npmrulesets')!.current.emit('ADDED', withRv(rs));
    await hh.settle();
    hh.daemon.request();
    await hh.settle();
    expect(local()).to.include('10.244.9.9');
  });
});

describe('nodeLabelKey', () => {
  it('uses the node name when it is a valid label name part, a digest otherwise', () => {
    expect(nodeLabelKey('worker-1.example')).to.equal('node.kubenpm.io/worker-1.example');
    const long = `${'a'.repeat(60)}.example.com`;
    const k = nodeLabelKey(long);
    expect(k).to.match(/^node\.kubenpm\.io\/h-[a-z2-7]{40}$/);
    expect(nodeLabelKey(long)).to.equal(k);
    expect(nodeLabelKey(`${long}x`)).to.not.equal(k);
    expect(nodeLabelKey('-bad')).to.match(/^node\.kubenpm\.io\/h-/);
  });
});
