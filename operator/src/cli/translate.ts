/**
 * `kube-npm translate -f FILE [-f FILE ...] [-o json|yaml]`: Namespaces, Pods and NetworkPolicies
 * in, the objects the operator would write out (a v1 List), byte-identical for the same input.
 * Invalid input: exit 2, a message naming file, object and field, nothing on stdout.
 */
import { stringify } from 'yaml';
import { TranslationEngine } from '../translate/engine.js';
import type { Namespace, NetworkPolicy, Pod } from '../translate/k8s.js';
import { describeObject, duplicateErrors, InputError, loadObjects, readArgs, type Loaded } from './load.js';

export interface CliIO {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
}

export function parseTranslateArgs(args: string[]): { files: string[]; output: 'json' | 'yaml' } {
  const files: string[] = [];
  let output: 'json' | 'yaml' = 'yaml';
  readArgs(args, (a, val) => {
    if (a === '-f' || a === '--filename') files.push(val());
    else if (a === '-o' || a === '--output') {
      const o = val();
      if (o !== 'json' && o !== 'yaml') throw new InputError(`-o must be json or yaml, not "${o}"`);
      output = o;
    } else throw new InputError(`unknown argument "${a}"`);
  });
  if (!files.length) throw new InputError('no input: give at least one -f FILE');
  return { files, output };
}

export function loadCluster(files: string[], io: CliIO): { engine: TranslationEngine; errors: string[]; loaded: Loaded[] } {
  const loaded = files.flatMap((f) => loadObjects(f));
  const engine = new TranslationEngine();
  const errors: string[] = duplicateErrors(loaded, ['Namespace', 'Pod', 'NetworkPolicy', 'NpmRuleSet', 'NpmIPSet']);
  const byKind = (k: string) => loaded.filter((l) => l.object.kind === k);
  for (const l of loaded) {
    if (!['Namespace', 'Pod', 'NetworkPolicy', 'NpmRuleSet', 'NpmIPSet'].includes(String(l.object.kind))) {
      io.stderr(`warning: ${l.file}: ignoring ${describeObject(l.object)} (translate reads Namespaces, Pods and NetworkPolicies)\n`);
    }
  }
  const report = (l: Loaded, errs: { field: string; message: string }[]) => {
    for (const e of errs) errors.push(`${l.file}: ${describeObject(l.object)}: ${e.field}: ${e.message}`);
  };
  for (const l of byKind('Namespace')) report(l, engine.upsertNamespace(l.object as unknown as Namespace));
  for (const l of byKind('Pod')) report(l, engine.upsertPod(l.object as unknown as Pod));
  for (const l of byKind('NetworkPolicy')) {
    report(l, engine.upsertPolicy(l.object as unknown as NetworkPolicy));
    const meta = (l.object.metadata ?? {}) as { uid?: string };
    if (!meta.uid) io.stderr(`note: ${l.file}: ${describeObject(l.object)} has no metadata.uid (not read from a cluster): its NpmRuleSet has no ownerReference\n`);
  }
  return { engine, errors, loaded };
}

export function runTranslate(args: string[], io: CliIO): number {
  try {
    const { files, output } = parseTranslateArgs(args);
    const { engine, errors } = loadCluster(files, io);
    if (errors.length) {
      io.stderr(`error: invalid input:\n${errors.map((e) => `  ${e}`).join('\n')}\n`);
      return 2;
    }
    const list = { apiVersion: 'v1', kind: 'List', items: engine.all() };
    io.stdout(output === 'json' ? `${JSON.stringify(list, null, 2)}\n` : stringify(list, { lineWidth: 0 }));
    return 0;
  } catch (err) {
    if (err instanceof InputError) {
      io.stderr(`error: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
}
