/**
 * bench:scale policy-trial timeline: where the time between a NetworkPolicy create and its
 * NpmRuleSet's Programmed=True goes. Two watches (NpmRuleSets, NpmNodes) stamp, per ruleset:
 *   written   the NpmRuleSet first seen (operator: informer event -> translate -> sets -> ruleset)
 *   labelled  it carries its last node label (node.kubenpm.io/<node>: which agents must program it)
 *   reported  every labelled node's NpmNode lists it at that generation (agents: watch -> sync ->
 *             trailing NpmNode write)
 *   programmed  Programmed=True seen on the ruleset (operator: NpmNode event -> status pass -> write)
 * Stamps are the bench process's arrival times (performance.now()), so each stage includes one
 * watch delivery. Used only by the trial phase; the objects are read as the API server sends them.
 */
import { KubeConfig, Watch } from '@kubernetes/client-node';
import { GROUP, NODE_PLURAL, RULESET_PLURAL, VERSION } from '../../../operator/src/api/types.js';
import { NODE_LABEL_PREFIX } from '../../../operator/src/api/names.js';

export interface Stamps {
  written?: number;
  labelled?: number;
  reported?: number;
  programmed?: number;
}

interface RuleSetObj {
  metadata: { namespace: string; name: string; generation?: number; uid?: string; labels?: Record<string, string> };
  status?: { conditions?: { type: string; status: string }[] };
}
interface NodeObj {
  metadata: { name: string };
  status?: { applied?: { namespace: string; name: string; generation: number; uid?: string }[] };
}

export class TrialTimeline {
  private readonly stamps = new Map<string, Stamps>();
  private readonly rulesets = new Map<string, RuleSetObj>();
  /** Per node: "ns/name" -> generation it reports programmed. */
  private readonly applied = new Map<string, Map<string, number>>();
  private readonly handles: AbortController[] = [];
  /** Only rulesets in this set are stamped (the trial policies). */
  constructor(private readonly keys: ReadonlySet<string>) {}

  async start(kubeconfig: string): Promise<void> {
    const kc = new KubeConfig();
    kc.loadFromFile(kubeconfig);
    const w = new Watch(kc);
    const onErr = (what: string) => (err: unknown) => {
      // stop() aborts the watches: that end is expected.
      if (err && (err as { name?: string }).name !== 'AbortError') process.stderr.write(`timeline: ${what} watch ended: ${String(err)}\n`);
    };
    this.handles.push(
      await w.watch(`/apis/${GROUP}/${VERSION}/${RULESET_PLURAL}`, {}, (type, o: RuleSetObj) => this.onRuleSet(type, o), onErr('ruleset')),
      await w.watch(`/apis/${GROUP}/${VERSION}/${NODE_PLURAL}`, {}, (type, o: NodeObj) => this.onNode(type, o), onErr('npmnode')),
    );
  }

  stop(): void {
    for (const h of this.handles) h.abort();
  }

  get(key: string): Stamps {
    return this.stamps.get(key) ?? {};
  }

  private stamp(key: string): Stamps {
    let s = this.stamps.get(key);
    if (!s) this.stamps.set(key, (s = {}));
    return s;
  }

  private targets(rs: RuleSetObj): string[] {
    return Object.keys(rs.metadata.labels ?? {})
      .filter((k) => k.startsWith(NODE_LABEL_PREFIX))
      .map((k) => k.slice(NODE_LABEL_PREFIX.length));
  }

  private onRuleSet(type: string, o: RuleSetObj): void {
    const key = `${o.metadata.namespace}/${o.metadata.name}`;
    if (!this.keys.has(key) || type === 'DELETED') return;
    const now = performance.now();
    const s = this.stamp(key);
    const before = this.rulesets.get(key);
    this.rulesets.set(key, o);
    s.written ??= now;
    const targets = this.targets(o).sort().join(',');
    if (targets && s.reported === undefined && (!before || this.targets(before).sort().join(',') !== targets)) s.labelled = now;
    if (s.programmed === undefined && o.status?.conditions?.some((c) => c.type === 'Programmed' && c.status === 'True')) s.programmed = now;
    this.checkReported(key, now);
  }

  private onNode(type: string, o: NodeObj): void {
    if (type === 'DELETED') return;
    const m = new Map<string, number>();
    for (const a of o.status?.applied ?? []) m.set(`${a.namespace}/${a.name}`, a.generation);
    this.applied.set(o.metadata.name, m);
    const now = performance.now();
    for (const key of this.keys) this.checkReported(key, now);
  }

  private checkReported(key: string, now: number): void {
    const s = this.stamps.get(key);
    const rs = this.rulesets.get(key);
    if (!s || !rs || s.reported !== undefined) return;
    const targets = this.targets(rs);
    if (targets.length === 0) return;
    const gen = rs.metadata.generation ?? 1;
    if (targets.every((n) => (this.applied.get(n)?.get(key) ?? 0) >= gen)) s.reported = now;
  }
}
