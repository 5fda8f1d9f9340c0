/**
 * Reading Kubernetes objects from files a user wrote: YAML (multi-document) or JSON (parsed as
 * JSON: see api/documents.ts), single objects or Lists. Errors name the file and the document.
 */
import { readFileSync } from 'node:fs';
import { DocumentError, parseDocuments } from '../api/documents.js';

export interface Loaded {
  file: string;
  object: Record<string, unknown>;
  /** "document 2 items[3]": where in the file. */
  where?: string;
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
  let docs;
  try {
    docs = parseDocuments(text);
  } catch (err) {
    if (err instanceof DocumentError) throw new InputError(`${file}: ${err.message}`, { cause: err });
    throw err;
  }
  for (const doc of docs) {
    if (doc.value === null || doc.value === undefined) continue;
    flatten(doc.value, file, doc.where, out);
  }
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
  out.push({ file, object: o, where });
}

/** Kinds whose objects live in a namespace (the API server defaults it to "default"). */
const NAMESPACED = new Set(['Pod', 'NetworkPolicy', 'NpmRuleSet']);

/**
 * Two objects with the same kind, namespace and name: the API server holds one object per name, so
 * a file with both is ambiguous ("last one wins" silently dropped the other). One message per
 * duplicate, naming both places.
 */
export function duplicateErrors(loaded: readonly Loaded[], kinds: readonly string[]): string[] {
  const seen = new Map<string, Loaded>();
  const errors: string[] = [];
  for (const l of loaded) {
    const kind = String(l.object.kind);
    if (!kinds.includes(kind)) continue;
    const meta = (l.object.metadata ?? {}) as { name?: unknown; namespace?: unknown };
    if (typeof meta.name !== 'string') continue; // reported by the object's own checks
    const ns = NAMESPACED.has(kind) ? (typeof meta.namespace === 'string' ? meta.namespace : 'default') : '';
    const id = `${kind} ${ns ? `${ns}/` : ''}${meta.name}`;
    const first = seen.get(id);
    if (first) errors.push(`${l.file}: ${l.where ?? ''}: duplicate ${id}: also defined at ${first.file}: ${first.where ?? ''}`);
    else seen.set(id, l);
  }
  return errors;
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
