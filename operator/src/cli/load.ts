/**
 * Reading Kubernetes objects from files a user wrote: YAML (multi-document) or JSON, single objects
 * or Lists. Errors name the file and the document.
 */
import { readFileSync } from 'node:fs';
import { parseAllDocuments } from 'yaml';

export interface Loaded {
  file: string;
  object: Record<string, unknown>;
}

export class InputError extends Error {}

export function loadObjects(file: string, read: (f: string) => string = (f) => readFileSync(f, 'utf8')): Loaded[] {
  let text: string;
  try {
    text = read(file);
  } catch (err) {
    throw new InputError(`${file}: cannot read: ${(err as Error).message}`);
  }
  const out: Loaded[] = [];
  const docs = parseAllDocuments(text);
  (Array.isArray(docs) ? docs : [docs]).forEach((doc, i) => {
    if (doc.errors.length) throw new InputError(`${file}: document ${i + 1}: ${doc.errors[0]!.message}`);
    const value: unknown = doc.toJS();
    if (value === null || value === undefined) return;
    flatten(value, file, `document ${i + 1}`, out);
  });
  return out;
}

function flatten(value: unknown, file: string, where: string, out: Loaded[]): void {
  if (typeof value !== 'object' || Array.isArray(value) || value === null) {
    throw new InputError(`${file}: ${where}: not a Kubernetes object`);
  }
  const o = value as Record<string, unknown>;
  if (typeof o.kind !== 'string') throw new InputError(`${file}: ${where}: field kind is missing`);
  if (o.kind === 'List' || (o.kind.endsWith('List') && Array.isArray(o.items))) {
    if (!Array.isArray(o.items)) throw new InputError(`${file}: ${where}: ${o.kind} has no items list`);
    o.items.forEach((item, j) => flatten(item, file, `${where} items[${j}]`, out));
    return;
  }
  out.push({ file, object: o });
}

export function describeObject(o: Record<string, unknown>): string {
  const meta = (o.metadata ?? {}) as { name?: string; namespace?: string };
  return `${String(o.kind)} ${meta.namespace ? `${meta.namespace}/` : ''}${meta.name ?? '<unnamed>'}`;
}

/**
 * Walks command-line arguments: calls `on(flag, value)` for each flag, where `value()` takes the
 * flag's value (`--flag value` or `--flag=value`) and fails with a clear message when it is missing.
 */
export function readArgs(args: readonly string[], on: (flag: string, value: () => string) => void): void {
  const list = args.flatMap((x) => (x.startsWith('--') && x.includes('=') ? [x.slice(0, x.indexOf('=')), x.slice(x.indexOf('=') + 1)] : [x]));
  for (let i = 0; i < list.length; i++) {
    const flag = list[i]!;
    on(flag, () => {
      const v = list[++i];
      if (v === undefined) throw new InputError(`${flag} needs a value`);
      return v;
    });
  }
}
