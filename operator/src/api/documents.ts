/**
 * Kubernetes objects from text: one JSON document, or YAML (multi-document). Pure.
 *
 * JSON goes through JSON.parse, not the YAML parser: JSON is YAML, but the YAML parser builds a
 * node tree with positions for every scalar first, which made `translate` on 50k pods spend 17 of
 * its 22 s (and most of its 1.6 GB) parsing. Text whose first non-space character is `{` or `[` is
 * tried as JSON; if that fails it may still be YAML flow style (`{kind: List, items: []}`), so the
 * YAML parser gets it, and when both fail the error names both (the YAML one has line and column).
 */
import { parseAllDocuments } from 'yaml';

export interface Document {
  /** "document 2" (YAML) or "JSON" */
  where: string;
  value: unknown;
}

export class DocumentError extends Error {}

export function parseDocuments(text: string): Document[] {
  const first = /\S/.exec(text)?.[0];
  let jsonError: Error | undefined;
  if (first === '{' || first === '[') {
    try {
      return [{ where: 'JSON', value: JSON.parse(text) as unknown }];
    } catch (err) {
      jsonError = err as Error;
    }
  }
  const out: Document[] = [];
  const docs = parseAllDocuments(text);
  const list = Array.isArray(docs) ? docs : [docs];
  for (let i = 0; i < list.length; i++) {
    const doc = list[i]!;
    if (doc.errors.length) {
      // Node 20's JSON.parse names no position; the YAML parser's error (JSON is YAML) has one.
      if (jsonError) throw new DocumentError(`invalid JSON: ${jsonError.message.split('\n')[0]}; ${doc.errors[0]!.message}`, { cause: jsonError });
      throw new DocumentError(`document ${i + 1}: ${doc.errors[0]!.message}`, { cause: doc.errors[0] });
    }
    out.push({ where: `document ${i + 1}`, value: doc.toJS() as unknown });
  }
  return out;
}
