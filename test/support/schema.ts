/**
 * A small structural-schema validator (the subset of OpenAPI v3 our CRDs use), so unit tests can
 * check objects against crds/*.yaml without an API server. The e2e tier checks the same objects
 * against the real API server.
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

export interface Schema {
  type?: string;
  required?: string[];
  properties?: Record<string, Schema>;
  items?: Schema;
  enum?: unknown[];
  minimum?: number;
  maximum?: number;
  maxLength?: number;
  minLength?: number;
}

export function crdSchema(file: string): Schema {
  const path = fileURLToPath(new URL(`../../crds/${file}`, import.meta.url));
  const crd = parse(readFileSync(path, 'utf8')) as { spec: { versions: { schema: { openAPIV3Schema: Schema } }[] } };
  return crd.spec.versions[0]!.schema.openAPIV3Schema;
}

export function validate(value: unknown, schema: Schema, path = ''): string[] {
  const errs: string[] = [];
  const at = path || '<root>';
  switch (schema.type) {
    case 'object': {
      if (!value || typeof value !== 'object' || Array.isArray(value)) return [`${at}: want object`];
      const o = value as Record<string, unknown>;
      for (const r of schema.required ?? []) if (!(r in o)) errs.push(`${at}: missing required ${r}`);
      if (schema.properties) {
        for (const [k, v] of Object.entries(o)) {
          const sub = schema.properties[k];
          if (!sub) errs.push(`${at}.${k}: not in schema (would be pruned)`);
          else errs.push(...validate(v, sub, `${path}.${k}`));
        }
      }
      break;
    }
    case 'array':
      if (!Array.isArray(value)) return [`${at}: want array`];
      value.forEach((v, i) => errs.push(...validate(v, schema.items ?? {}, `${path}[${i}]`)));
      break;
    case 'string':
      if (typeof value !== 'string') return [`${at}: want string`];
      if (schema.maxLength !== undefined && value.length > schema.maxLength) errs.push(`${at}: longer than ${schema.maxLength}`);
      if (schema.minLength !== undefined && value.length < schema.minLength) errs.push(`${at}: shorter than ${schema.minLength}`);
      break;
    case 'integer':
      if (!Number.isInteger(value)) return [`${at}: want integer`];
      if (schema.minimum !== undefined && (value as number) < schema.minimum) errs.push(`${at}: below ${schema.minimum}`);
      if (schema.maximum !== undefined && (value as number) > schema.maximum) errs.push(`${at}: above ${schema.maximum}`);
      break;
    default:
      break;
  }
  if (schema.enum && !schema.enum.includes(value)) errs.push(`${at}: ${JSON.stringify(value)} not in ${JSON.stringify(schema.enum)}`);
  return errs;
}

/** Paths of every property the schema declares below `schema` (arrays as []). */
export function schemaPaths(schema: Schema, path = ''): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(schema.properties ?? {})) {
    out.push(`${path}.${k}`);
    out.push(...schemaPaths(v, `${path}.${k}`));
  }
  if (schema.items) out.push(...schemaPaths(schema.items, `${path}[]`));
  return out;
}

/** Paths of every property present in a value (arrays as []). */
export function valuePaths(value: unknown, path = ''): string[] {
  const out: string[] = [];
  if (Array.isArray(value)) for (const v of value) out.push(...valuePaths(v, `${path}[]`));
  else if (value && typeof value === 'object') {
    for (const [k, v] of Object.entries(value)) {
      out.push(`${path}.${k}`);
      out.push(...valuePaths(v, `${path}.${k}`));
    }
  }
  return [...new Set(out)];
}
