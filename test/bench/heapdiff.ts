/**
 * Compares two V8 heap snapshots by constructor, the way Chrome's "Comparison" view would (there is
 * no Chrome on the test machines): count, shallow size and retained size per constructor, sorted by
 * the retained growth. Used to find the agent's growth (issue #9 item 7) and by bench:soak
 * (--heap-snapshots) to say what grew.
 *
 *   npx tsx test/bench/heapdiff.ts BEFORE.heapsnapshot AFTER.heapsnapshot [--top N]
 *
 * Then the growth by shortest retainer path (growthByPath): which field holds what accumulates.
 *
 * Retained sizes come from the dominator tree (Cooper, Harvey and Kennedy's iterative algorithm over
 * a reverse postorder), ignoring weak edges as V8 does. A constructor's retained size counts only its
 * outermost instances (those with no instance of the same constructor among their dominators), so a
 * linked chain of Maps is counted once, not once per link.
 */
import { readFileSync } from 'node:fs';

interface RawSnapshot {
  snapshot: { meta: { node_fields: string[]; node_types: [string[], ...unknown[]]; edge_fields: string[]; edge_types: [string[], ...unknown[]] }; node_count: number };
  nodes: number[];
  edges: number[];
  strings: string[];
}

export interface ClassStats {
  count: number;
  shallow: number;
  retained: number;
}

export interface HeapSummary {
  total: number;
  nodes: number;
  byClass: Map<string, ClassStats>;
  /** Reachable objects: self size, and how the first breadth-first path from the root reaches it
   *  ("Class.edge > Class.edge > ... > Class", the last 10 steps, indices erased). */
  objects: { self: number; path: () => string }[];
}

/** Per-constructor count, shallow and retained bytes of one snapshot (JSON text). */
export function summarize(text: string): HeapSummary {
  const raw = JSON.parse(text) as RawSnapshot;
  const nf = raw.snapshot.meta.node_fields;
  const ef = raw.snapshot.meta.edge_fields;
  const NF = nf.length;
  const EF = ef.length;
  const nType = nf.indexOf('type');
  const nName = nf.indexOf('name');
  const nSelf = nf.indexOf('self_size');
  const nEdges = nf.indexOf('edge_count');
  const eType = ef.indexOf('type');
  const eTo = ef.indexOf('to_node');
  const nodeTypes = raw.snapshot.meta.node_types[0];
  const edgeTypes = raw.snapshot.meta.edge_types[0];
  const weak = edgeTypes.indexOf('weak');
  const shortcut = edgeTypes.indexOf('shortcut');
  const n = raw.nodes.length / NF;

  // Edges of node i are firstEdge[i] .. firstEdge[i+1] (in edge-array units).
  const firstEdge = new Uint32Array(n + 1);
  for (let i = 0, e = 0; i < n; i++) {
    firstEdge[i] = e;
    e += raw.nodes[i * NF + nEdges]! * EF;
    firstEdge[i + 1] = e;
  }
  const strong = (e: number) => {
    const t = raw.edges[e + eType]!;
    return t !== weak && t !== shortcut;
  };

  // Reverse postorder from the root (node 0), iteratively.
  const order = new Int32Array(n).fill(-1); // node -> postorder number
  const post: number[] = [];
  const stack: number[] = [0];
  const cursor = new Uint32Array(n);
  const seen = new Uint8Array(n);
  seen[0] = 1;
  cursor[0] = firstEdge[0]!;
  while (stack.length) {
    const v = stack[stack.length - 1]!;
    let pushed = false;
    while (cursor[v]! < firstEdge[v + 1]!) {
      const e = cursor[v]!;
      cursor[v] = e + EF;
      if (!strong(e)) continue;
      const w = raw.edges[e + eTo]! / NF;
      if (seen[w]) continue;
      seen[w] = 1;
      cursor[w] = firstEdge[w]!;
      stack.push(w);
      pushed = true;
      break;
    }
    if (!pushed) {
      order[v] = post.length;
      post.push(v);
      stack.pop();
    }
  }
  // Predecessors (reachable ones only), CSR.
  const predCount = new Uint32Array(n + 1);
  for (const v of post) for (let e = firstEdge[v]!; e < firstEdge[v + 1]!; e += EF) if (strong(e)) predCount[raw.edges[e + eTo]! / NF]!++;
  const predStart = new Uint32Array(n + 1);
  for (let i = 0; i < n; i++) predStart[i + 1] = predStart[i]! + predCount[i]!;
  const preds = new Uint32Array(predStart[n]!);
  const fill = predStart.slice(0, n);
  for (const v of post) for (let e = firstEdge[v]!; e < firstEdge[v + 1]!; e += EF) if (strong(e)) preds[fill[raw.edges[e + eTo]! / NF]!++] = v;

  // Dominators over postorder numbers.
  const m = post.length;
  const idom = new Int32Array(m).fill(-1);
  const rootPo = m - 1;
  idom[rootPo] = rootPo;
  const intersect = (a: number, b: number) => {
    while (a !== b) {
      while (a < b) a = idom[a]!;
      while (b < a) b = idom[b]!;
    }
    return a;
  };
  for (let changed = true; changed; ) {
    changed = false;
    for (let po = m - 2; po >= 0; po--) {
      const v = post[po]!;
      let d = -1;
      for (let p = predStart[v]!; p < predStart[v + 1]!; p++) {
        const q = order[preds[p]!]!;
        if (q < 0 || idom[q] === -1) continue;
        d = d === -1 ? q : intersect(q, d);
      }
      if (d !== -1 && idom[po] !== d) {
        idom[po] = d;
        changed = true;
      }
    }
  }

  const className = (v: number): string => {
    const t = nodeTypes[raw.nodes[v * NF + nType]!];
    const name = raw.strings[raw.nodes[v * NF + nName]!] ?? '';
    if (t === 'object' || t === 'native') return name;
    if (t === 'closure') return '(closure)';
    if (t === 'string' || t === 'concatenated string' || t === 'sliced string') return '(string)';
    return `(${t})`;
  };
  // Retained sizes bottom-up (postorder visits children before their dominator).
  const retained = new Float64Array(m);
  for (let po = 0; po < m; po++) retained[po]! += raw.nodes[post[po]! * NF + nSelf]!;
  for (let po = 0; po < rootPo; po++) retained[idom[po]!]! += retained[po]!;

  // Outermost instances per class: walk the dominator tree top-down with a per-class depth count.
  const childStart = new Uint32Array(m + 1);
  for (let po = 0; po < rootPo; po++) childStart[idom[po]! + 1]!++;
  for (let i = 0; i < m; i++) childStart[i + 1]! += childStart[i]!;
  const children = new Uint32Array(Math.max(0, m - 1));
  const cfill = childStart.slice(0, m);
  for (let po = 0; po < rootPo; po++) children[cfill[idom[po]!]!++] = po;
  const byClass = new Map<string, ClassStats>();
  const open = new Map<string, number>();
  const walk: { po: number; cls: string; next: number }[] = [{ po: rootPo, cls: className(post[rootPo]!), next: childStart[rootPo]! }];
  open.set(walk[0]!.cls, 1);
  const enter = (po: number, cls: string, outermost: boolean) => {
    const s = byClass.get(cls) ?? { count: 0, shallow: 0, retained: 0 };
    s.count++;
    s.shallow += raw.nodes[post[po]! * NF + nSelf]!;
    if (outermost) s.retained += retained[po]!;
    byClass.set(cls, s);
  };
  enter(rootPo, walk[0]!.cls, true);
  while (walk.length) {
    const top = walk[walk.length - 1]!;
    if (top.next < childStart[top.po + 1]!) {
      const c = children[top.next++]!;
      const cls = className(post[c]!);
      const depth = open.get(cls) ?? 0;
      enter(c, cls, depth === 0);
      open.set(cls, depth + 1);
      walk.push({ po: c, cls, next: childStart[c]! });
    } else {
      open.set(top.cls, open.get(top.cls)! - 1);
      walk.pop();
    }
  }
  // Shortest retainer path from the root (breadth first over strong edges), for the new-object report.
  const eName = ef.indexOf('name_or_index');
  const parent = new Int32Array(n).fill(-1);
  const parentEdge = new Int32Array(n).fill(-1);
  const queue = new Uint32Array(n);
  let qh = 0;
  let qt = 0;
  queue[qt++] = 0;
  parent[0] = 0;
  while (qh < qt) {
    const v = queue[qh++]!;
    for (let e = firstEdge[v]!; e < firstEdge[v + 1]!; e += EF) {
      if (!strong(e)) continue;
      const w = raw.edges[e + eTo]! / NF;
      if (parent[w] !== -1) continue;
      parent[w] = v;
      parentEdge[w] = e;
      queue[qt++] = w;
    }
  }
  const element = new Set(['element', 'hidden'].map((t) => edgeTypes.indexOf(t)));
  // Indices are erased so that the N entries of one collection share a path.
  const edgeName = (e: number) => {
    const name = element.has(raw.edges[e + eType]!) ? '[]' : String(raw.strings[raw.edges[e + eName]!] ?? raw.edges[e + eName]);
    return /^\d+$/.test(name) ? '[]' : name;
  };
  const path = (v: number): string => {
    const steps: string[] = [];
    for (let x = v; x !== 0 && steps.length < 10; x = parent[x]!) {
      const p = parent[x]!;
      steps.push(`${className(p)}.${edgeName(parentEdge[x]!)}`);
    }
    return `${steps.reverse().join(' > ')} > ${className(v)}`;
  };
  const objects = post.map((v) => ({ self: raw.nodes[v * NF + nSelf]!, path: () => path(v) }));
  return { total: retained[rootPo]!, nodes: m, byClass, objects };
}

const mib = (b: number) => `${(b / 1048576).toFixed(2)} MiB`;

/**
 * Growth by retainer path: objects counted per shortest path from the root in each snapshot, the
 * paths that gained the most bytes first. Objects replaced by newer ones (churn) cancel out; what is
 * left is what accumulates, and the path names the field that holds it.
 */
export function growthByPath(a: HeapSummary, b: HeapSummary, top = 10): string {
  const count = (h: HeapSummary) => {
    const m = new Map<string, { count: number; bytes: number }>();
    for (const o of h.objects) {
      const p = o.path();
      const g = m.get(p) ?? { count: 0, bytes: 0 };
      g.count++;
      g.bytes += o.self;
      m.set(p, g);
    }
    return m;
  };
  const x = count(a);
  const y = count(b);
  const rows = [...new Set([...x.keys(), ...y.keys()])].map((p) => ({ p, count: (y.get(p)?.count ?? 0) - (x.get(p)?.count ?? 0), bytes: (y.get(p)?.bytes ?? 0) - (x.get(p)?.bytes ?? 0) }));
  rows.sort((r, q) => q.bytes - r.bytes);
  return ['growth by retainer path (shortest from the root, last 10 steps):', ...rows.slice(0, top).map((r) => `  ${String(r.count).padStart(7)} ${mib(r.bytes).padStart(11)}  ${r.p}`)].join('\n');
}

/** The comparison as text: the top constructors by retained growth. */
export function diffReport(a: HeapSummary, b: HeapSummary, top = 20): string {
  const names = new Set([...a.byClass.keys(), ...b.byClass.keys()]);
  const zero: ClassStats = { count: 0, shallow: 0, retained: 0 };
  const rows = [...names].map((name) => {
    const x = a.byClass.get(name) ?? zero;
    const y = b.byClass.get(name) ?? zero;
    return { name, count: y.count - x.count, shallow: y.shallow - x.shallow, retained: y.retained - x.retained, after: y.retained };
  });
  rows.sort((p, q) => q.retained - p.retained);
  const out = [`reachable heap ${mib(a.total)} -> ${mib(b.total)} (${b.total >= a.total ? '+' : ''}${mib(b.total - a.total)}); objects ${a.nodes} -> ${b.nodes}`];
  out.push(`  ${'constructor'.padEnd(40)} ${'Δcount'.padStart(9)} ${'Δshallow'.padStart(13)} ${'Δretained'.padStart(13)} ${'retained'.padStart(13)}`);
  for (const r of rows.slice(0, top)) {
    out.push(`  ${r.name.slice(0, 40).padEnd(40)} ${String(r.count).padStart(9)} ${mib(r.shallow).padStart(13)} ${mib(r.retained).padStart(13)} ${mib(r.after).padStart(13)}`);
  }
  return out.join('\n');
}

if (process.argv[1] && import.meta.url.endsWith(process.argv[1].split('/').pop()!)) {
  const args = process.argv.slice(2);
  const t = args.indexOf('--top');
  const top = t >= 0 ? Number(args.splice(t, 2)[1]) : 20;
  if (args.length !== 2) {
    console.error('usage: tsx test/bench/heapdiff.ts BEFORE.heapsnapshot AFTER.heapsnapshot [--top N]');
    process.exit(2);
  }
  const [a, b] = args.map((f) => summarize(readFileSync(f!, 'utf8')));
  console.log(diffReport(a!, b!, top));
  console.log(growthByPath(a!, b!, top));
}
