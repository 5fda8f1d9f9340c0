// Agent memory under churn (issue #9 item 7): the daemon rebuilds the desired state on every event,
// deriving a changed set's member Map from the cached one (model.ts deriveMembers + render.ts
// recordDelta). Nothing from an earlier build may stay reachable once a later build replaced it, or
// the agent grows with every pod event until it is OOM-killed (seen: 134 -> 286 MB, limit 256Mi).
import { expect } from 'chai';
import { setFlagsFromString } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { buildDesired, type SetCache } from '../../../operator/src/agent/model.js';
import { deltaOf } from '../../../operator/src/agent/ipset/render.js';
import { translate } from '../../../operator/src/translate/engine.js';

// A real collection (not a heuristic on heap sizes): --expose-gc at run time, gc() from a fresh context.
setFlagsFromString('--expose-gc');
const gc = runInNewContext('gc') as () => void;

type Obj = ReturnType<typeof translate>['items'][number];

const policies = [{ metadata: { name: 'deny', namespace: 'x' }, spec: { podSelector: {} } }];
const pod = (i: number) => ({ metadata: { name: `p${i}`, namespace: 'x' }, status: { phase: 'Running', podIP: `10.244.${1 + (i >> 8)}.${i & 255}` } });

/** Pod churn as the daemon sees it: one pod replaced per round, unchanged objects keep their identity (informer). */
function* churn(rounds: number, pods = 100): Generator<Obj[]> {
  let live = Array.from({ length: pods }, (_, i) => pod(i));
  let prev: Obj[] = [];
  for (let r = 0; r <= rounds; r++) {
    if (r > 0) live = [...live.slice(1), pod(pods + r)];
    const byJson = new Map(prev.map((o) => [JSON.stringify(o), o]));
    const now = translate({ namespaces: [], pods: live, policies }).items.map((o) => byJson.get(JSON.stringify(o)) ?? o);
    prev = now;
    yield now;
  }
}

function targetSet(objects: Obj[]): string {
  const ipset = objects.find((o) => o.kind === 'NpmIPSet') as { spec: { setName: string } } | undefined;
  if (!ipset) throw new Error('no NpmIPSet in the translation');
  return ipset.spec.setName;
}

describe('agent: memory across builds (set cache + member deltas)', () => {
  it('a member Map derived from the cached one does not keep a chain of every earlier Map', () => {
    const cache: SetCache = new Map();
    let members: ReadonlyMap<string, string> | undefined;
    let derived = 0;
    for (const objects of churn(100)) {
      const d = buildDesired(objects, { cache });
      members = d.sets.get(targetSet(objects))!.members;
      if (deltaOf(members)) derived++;
    }
    expect(derived, 'the churn takes the O(delta) path (else this test tests nothing)').to.be.greaterThan(90);
    // The planner uses a delta only against its own base (plan.ts: delta.base === applied), so one
    // step is all that may be reachable from the newest Map.
    let depth = 0;
    for (let m = members; m && deltaOf(m); m = deltaOf(m)!.base) depth++;
    expect(depth, 'Maps reachable through delta.base').to.be.at.most(1);
  });

  it('after many builds the first derived Map is garbage collected', async () => {
    const cache: SetCache = new Map();
    let first: WeakRef<object> | undefined;
    let last: ReadonlyMap<string, string> | undefined;
    let round = 0;
    for (const objects of churn(150)) {
      const d = buildDesired(objects, { cache });
      const m = d.sets.get(targetSet(objects))!.members;
      if (round++ === 1) {
        expect(deltaOf(m), 'round 1 derives its Map from round 0').to.not.equal(undefined);
        first = new WeakRef(m);
      }
      last = m; // the converger keeps the newest state as `applied`
    }
    // WeakRef targets stay alive until the current job ends: collect on a later macrotask.
    await new Promise((r) => setImmediate(r));
    gc();
    expect(last!.size).to.equal(100);
    expect(first!.deref(), 'the Map of round 1, replaced 149 builds ago').to.equal(undefined);
  });
});
