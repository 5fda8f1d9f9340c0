/**
 * The operator (NpmOperator, unchanged) against an in-memory API server: every informer's list/watch
 * is a FakeTransport, and the NpmApi writes land in the store and come back as watch events, as on
 * the real server. Counts every write in order (`writes`) for the fan-out and ordering tests.
 */
import { KubeConfig, type KubernetesObject } from '@kubernetes/client-node';
import jsonpatch, { type Operation } from 'fast-json-patch';
import type { NpmIPSet, NpmNode, NpmRuleSet, NpmRuleSetStatus } from '../../../operator/src/api/types.js';
import type { NpmApi, OurKind } from '../../../operator/src/controller/api.js';
import { NpmOperator, type OperatorOptions } from '../../../operator/src/controller/operator.js';
import type { ResourceRef } from '../../../operator/src/framework/kube.js';
import { FakeTransport, flush } from '../framework/fakes.js';

const PLURAL: Record<OurKind, string> = { NpmRuleSet: 'npmrulesets', NpmIPSet: 'npmipsets' };

export class FakeCluster {
  private rv = 100;
  readonly transports = new Map<string, FakeTransport>();
  readonly store = new Map<string, KubernetesObject>();
  /** Every write, in order: "<verb> <Kind> <name>[ <detail>]". */
  readonly writes: string[] = [];
  op!: NpmOperator;

  constructor(initial: Record<string, KubernetesObject[]>) {
    for (const plural of ['networkpolicies', 'pods', 'namespaces', 'npmrulesets', 'npmipsets', 'npmnodes', 'leases']) {
      const t = new FakeTransport();
      const items = (initial[plural] ?? []).map((o) => this.stamp(structuredClone(o)));
      for (const o of items) this.store.set(this.key(plural, o), o);
      t.lists = [{ items, resourceVersion: String(this.rv) }];
      this.transports.set(plural, t);
    }
  }

  private key(plural: string, o: KubernetesObject): string {
    return `${plural}/${o.metadata?.namespace ?? ''}/${o.metadata?.name ?? ''}`;
  }
  private stamp<T extends KubernetesObject>(o: T): T {
    o.metadata = { ...o.metadata, resourceVersion: String(++this.rv) };
    return o;
  }
  get(plural: string, ns: string | undefined, name: string): KubernetesObject | undefined {
    return this.store.get(`${plural}/${ns ?? ''}/${name}`);
  }

  /** Store and announce an object (a client's write, or one of ours). */
  put(plural: string, obj: KubernetesObject): void {
    const k = this.key(plural, obj);
    const type = this.store.has(k) ? 'MODIFIED' : 'ADDED';
    const o = this.stamp(structuredClone(obj));
    this.store.set(k, o);
    this.transports.get(plural)!.current.emit(type, structuredClone(o));
  }
  remove(plural: string, ns: string | undefined, name: string): void {
    const k = `${plural}/${ns ?? ''}/${name}`;
    const o = this.store.get(k);
    if (!o) return;
    this.store.delete(k);
    this.transports.get(plural)!.current.emit('DELETED', structuredClone(o));
  }

  readonly api: NpmApi = {
    create: async (kind, obj) => {
      const plural = PLURAL[kind];
      if (this.get(plural, obj.metadata.namespace, obj.metadata.name)) throw Object.assign(new Error('exists'), { code: 409 });
      const o = structuredClone(obj) as NpmRuleSet;
      o.metadata.generation = 1;
      o.metadata.uid = `uid-${obj.metadata.name}`;
      this.writes.push(`create ${kind} ${obj.metadata.name}`);
      this.put(plural, o as unknown as KubernetesObject);
    },
    patch: async (kind, ns, name, ops: Operation[]) => {
      const plural = PLURAL[kind];
      const cur = this.get(plural, ns, name) as NpmRuleSet | undefined;
      if (!cur) throw Object.assign(new Error('not found'), { code: 404 });
      const [test, ...rest] = ops;
      if ((test as { value?: unknown }).value !== cur.metadata.resourceVersion) throw Object.assign(new Error('test failed'), { code: 422 });
      const next = jsonpatch.applyPatch(structuredClone(cur), rest, true).newDocument;
      if (rest.some((op) => op.path.startsWith('/spec'))) next.metadata.generation = (cur.metadata.generation ?? 1) + 1;
      this.writes.push(`patch ${kind} ${name} ${rest.map((op) => `${op.op} ${op.path}`).join(', ')}`);
      this.put(plural, next as unknown as KubernetesObject);
    },
    delete: async (kind, ns, name) => {
      this.writes.push(`delete ${kind} ${name}`);
      this.remove(PLURAL[kind], ns, name);
    },
    get: async (kind, ns, name) => structuredClone(this.get(PLURAL[kind], ns, name)) as NpmRuleSet | NpmIPSet | undefined,
    patchNodeConditions: async (name, conditions, resourceVersion) => {
      const cur = this.get('npmnodes', undefined, name) as NpmNode | undefined;
      if (!cur) throw Object.assign(new Error('not found'), { code: 404 });
      if (resourceVersion !== undefined && resourceVersion !== cur.metadata.resourceVersion) throw Object.assign(new Error('conflict'), { code: 409 });
      this.writes.push(`status NpmNode ${name} ${conditions.map((c) => `${c.type}=${c.status}/${c.reason}`).join(',')}`);
      this.put('npmnodes', { ...cur, status: { ...cur.status, conditions } } as unknown as KubernetesObject);
    },
    patchRuleSetStatus: async (ns: string, name: string, status: NpmRuleSetStatus) => {
      const cur = this.get('npmrulesets', ns, name) as NpmRuleSet | undefined;
      if (!cur) throw Object.assign(new Error('not found'), { code: 404 });
      this.writes.push(`status NpmRuleSet ${name}`);
      this.put('npmrulesets', { ...cur, status } as KubernetesObject);
    },
  };

  async start(extra: Partial<OperatorOptions> = {}): Promise<void> {
    const kc = new KubeConfig();
    kc.loadFromOptions({ clusters: [{ name: 'c', server: 'http://127.0.0.1:9' }], users: [{ name: 'u' }], contexts: [{ name: 'x', cluster: 'c', user: 'u' }], currentContext: 'x' });
    this.op = new NpmOperator({
      kc,
      log: () => undefined,
      resyncMs: 0,
      coalesceMs: 1,
      api: this.api,
      patchPodCondition: async () => undefined,
      transport: (r: ResourceRef) => {
        const t = this.transports.get(r.plural)!;
        return { listFn: t.listFn as never, watchFn: t.watchFn };
      },
      ...extra,
    });
    await this.op.start();
    await this.settle();
  }

  /** Wait until the operator has nothing queued, running or due soon (timers included). */
  async settle(quietMs = 60): Promise<void> {
    let quietSince = Date.now();
    for (;;) {
      await flush(3);
      const s = this.op.queue.stats();
      if (s.queued || s.inFlight) quietSince = Date.now();
      else if (Date.now() - quietSince >= quietMs) return;
      await new Promise((r) => setTimeout(r, 5));
    }
  }

  /** An agent's report for a node: applied = the rulesets it programmed (current generation and uid). */
  report(node: string, rulesets: string[], extra: Partial<NonNullable<NpmNode['status']>> = {}): void {
    const applied = rulesets.map((k) => {
      const [ns, name] = k.split('/') as [string, string];
      const rs = this.get('npmrulesets', ns, name) as NpmRuleSet;
      return { namespace: ns, name, generation: rs.metadata.generation ?? 1, uid: rs.metadata.uid };
    });
    const cur = this.get('npmnodes', undefined, node) as NpmNode | undefined;
    this.put('npmnodes', { apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: node }, status: { ...cur?.status, applied, ...extra } } as KubernetesObject);
  }
}

export const ns = (name: string): KubernetesObject => ({ apiVersion: 'v1', kind: 'Namespace', metadata: { name, labels: { 'kubernetes.io/metadata.name': name } } });
export const pod = (namespace: string, name: string, node: string, ip: string, labels: Record<string, string>): KubernetesObject =>
  ({ apiVersion: 'v1', kind: 'Pod', metadata: { namespace, name, labels }, spec: { nodeName: node, containers: [{ name: 'c' }] }, status: { phase: 'Running', podIP: ip, podIPs: [{ ip }] } }) as KubernetesObject;
export const policy = (namespace: string, name: string, match: Record<string, string>): KubernetesObject =>
  ({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', metadata: { namespace, name, uid: `np-${name}` }, spec: { podSelector: { matchLabels: match }, ingress: [{ from: [{ podSelector: { matchLabels: { role: 'client' } } }] }] } }) as KubernetesObject;
