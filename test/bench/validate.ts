/**
 * Benchmarks run on valid clusters only (issue #10): a generated snapshot is checked the way
 * `kube-npm translate` checks its input (cli/translate.ts loadCluster: duplicate names, then each
 * Namespace, Pod and NetworkPolicy through the engine's own validation), and a bench aborts with
 * the problems instead of measuring policies the API server would have rejected.
 */
import { duplicateErrors, describeObject, type Loaded } from '../../operator/src/cli/load.js';
import type { ClusterSnapshot } from '../../operator/src/translate/k8s.js';
import { TranslationEngine } from '../../operator/src/translate/engine.js';

/** Every problem `kube-npm translate` would report for this snapshot (empty: valid). */
export function snapshotErrors(snap: ClusterSnapshot, source = 'generated'): string[] {
  const loaded: Loaded[] = [
    ...snap.namespaces.map((n) => ({ apiVersion: 'v1', kind: 'Namespace', ...n })),
    ...snap.pods.map((p) => ({ apiVersion: 'v1', kind: 'Pod', ...p })),
    ...snap.policies.map((p) => ({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', ...p })),
  ].map((object, i) => ({ file: source, object: object as unknown as Record<string, unknown>, where: `items[${i}]` }));
  const errors = duplicateErrors(loaded, ['Namespace', 'Pod', 'NetworkPolicy']);
  const engine = new TranslationEngine();
  const report = (l: Loaded, errs: { field: string; message: string }[]) => {
    for (const e of errs) errors.push(`${l.file}: ${describeObject(l.object)}: ${e.field}: ${e.message}`);
  };
  // Same order as loadCluster: a policy is judged against the namespaces and pods already loaded.
  for (const kind of ['Namespace', 'Pod', 'NetworkPolicy']) {
    for (const l of loaded) {
      if (l.object.kind !== kind) continue;
      if (kind === 'Namespace') report(l, engine.upsertNamespace(l.object as never));
      else if (kind === 'Pod') report(l, engine.upsertPod(l.object as never));
      else report(l, engine.upsertPolicy(l.object as never));
    }
  }
  return errors;
}

/** Throws, listing the first problems, when the snapshot is not a cluster the API server would hold. */
export function assertValidSnapshot(snap: ClusterSnapshot, source = 'generated'): void {
  const errors = snapshotErrors(snap, source);
  if (!errors.length) return;
  throw new Error(`invalid benchmark input (${errors.length} problem(s), as kube-npm translate reports them):\n${errors.slice(0, 20).map((e) => `  ${e}`).join('\n')}${errors.length > 20 ? `\n  ... and ${errors.length - 20} more` : ''}`);
}
