/**
 * Kubernetes plumbing shared by the framework: resource references, URL paths, error
 * classification, the JSON API a source stands for, list paging and patching.
 *
 * A source (KubeSource) is either client-node's KubeConfig (the operator) or a KubeApi such as the
 * in-tree KubeClient of framework/client.ts (the agent). This module imports client-node for types
 * only: kubeApi() loads the client-node transport (framework/kube-node.ts) on first use of a
 * KubeConfig, so the agent, which never makes one, never loads client-node (~70 MiB of RSS).
 * Objects travel as plain JSON everywhere (list, watch, patch responses).
 */
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import type { KubeApi, Method, RequestOptions, WatchFn } from './client.js';

export interface ResourceRef {
  /** API group; '' for the core group. */
  group: string;
  version: string;
  /** Lower-case plural resource name as in the URL ("networkpolicies"). */
  plural: string;
  namespaced: boolean;
  kind: string;
}

export const CORE = {
  pods: { group: '', version: 'v1', plural: 'pods', namespaced: true, kind: 'Pod' },
  namespaces: { group: '', version: 'v1', plural: 'namespaces', namespaced: false, kind: 'Namespace' },
  configMaps: { group: '', version: 'v1', plural: 'configmaps', namespaced: true, kind: 'ConfigMap' },
  networkPolicies: {
    group: 'networking.k8s.io',
    version: 'v1',
    plural: 'networkpolicies',
    namespaced: true,
    kind: 'NetworkPolicy',
  },
  leases: { group: 'coordination.k8s.io', version: 'v1', plural: 'leases', namespaced: true, kind: 'Lease' },
  events: { group: 'events.k8s.io', version: 'v1', plural: 'events', namespaced: true, kind: 'Event' },
} as const satisfies Record<string, ResourceRef>;

/** "ns/name" for namespaced objects, "name" for cluster-scoped ones (client-go's MetaNamespaceKey). */
export function objectKey(o: { metadata?: { namespace?: string; name?: string } }): string {
  const name = o.metadata?.name ?? '';
  const ns = o.metadata?.namespace;
  return ns ? `${ns}/${name}` : name;
}

/** Split a key made by objectKey(). */
export function splitKey(key: string): { namespace?: string; name: string } {
  const i = key.indexOf('/');
  return i < 0 ? { name: key } : { namespace: key.slice(0, i), name: key.slice(i + 1) };
}

/** "v1" for core, "group/version" otherwise. */
export function apiVersionOf(ref: ResourceRef): string {
  return ref.group === '' ? ref.version : `${ref.group}/${ref.version}`;
}

/**
 * Collection path: /api/v1/pods, /api/v1/namespaces/ns/pods, /apis/g/v/plural, ...
 * A namespaced resource without a namespace means "all namespaces".
 */
export function resourcePath(ref: ResourceRef, namespace?: string): string {
  const root = ref.group === '' ? `/api/${ref.version}` : `/apis/${ref.group}/${ref.version}`;
  if (namespace !== undefined && namespace !== '') {
    if (!ref.namespaced) throw new Error(`${ref.kind} is cluster-scoped; got namespace "${namespace}"`);
    return `${root}/namespaces/${encodeURIComponent(namespace)}/${ref.plural}`;
  }
  return `${root}/${ref.plural}`;
}

/** Path of one object (optionally a subresource such as "status"). */
export function objectPath(ref: ResourceRef, namespace: string | undefined, name: string, subresource?: string): string {
  if (ref.namespaced && !namespace) throw new Error(`${ref.kind} "${name}" is namespaced; no namespace given`);
  const base = `${resourcePath(ref, ref.namespaced ? namespace : undefined)}/${encodeURIComponent(name)}`;
  return subresource ? `${base}/${subresource}` : base;
}

// ---------------------------------------------------------------------------------------------
// Errors

interface StatusLike {
  kind?: string;
  code?: number;
  reason?: string;
  message?: string;
}

function parseStatus(body: unknown): StatusLike | undefined {
  if (body === undefined || body === null) return undefined;
  if (typeof body === 'object' && !Buffer.isBuffer(body)) return body as StatusLike;
  const text = Buffer.isBuffer(body) ? body.toString('utf8') : String(body);
  try {
    const v: unknown = JSON.parse(text);
    return v && typeof v === 'object' ? (v as StatusLike) : undefined;
  } catch {
    return undefined; // not JSON: a proxy's HTML page, say; formatError() shows the text
  }
}

/**
 * An HTTP error answer with its body: client-node's ApiException or client.ts KubeApiError (both
 * Errors with a numeric `code`; recognised by shape so that this module needs no client-node).
 */
function apiErrorOf(err: unknown): { code: number; body: unknown } | undefined {
  if (!(err instanceof Error)) return undefined;
  const e = err as Error & { code?: unknown; body?: unknown };
  return typeof e.code === 'number' && 'body' in e ? { code: e.code, body: e.body } : undefined;
}

/**
 * The HTTP status behind an error: the `code` of ApiException / KubeApiError, the `statusCode`
 * client-node's Watch sets on a non-200 response, or the `code` of a metav1.Status (an in-stream
 * watch ERROR event).
 */
export function statusCode(err: unknown): number | undefined {
  const api = apiErrorOf(err);
  if (api) return api.code;
  if (err && typeof err === 'object') {
    const e = err as { statusCode?: unknown; code?: unknown; kind?: unknown };
    if (typeof e.statusCode === 'number') return e.statusCode;
    if (e.kind === 'Status' && typeof e.code === 'number') return e.code;
  }
  return undefined;
}

export const isNotFound = (err: unknown): boolean => statusCode(err) === 404;
export const isConflict = (err: unknown): boolean => statusCode(err) === 409;
/** 410: a watch or list continue token older than etcd's compaction; relist. */
export const isGone = (err: unknown): boolean => statusCode(err) === 410;

/** One line describing any error; API error bodies are reduced to the Status reason and message. */
export function formatError(err: unknown): string {
  const api = apiErrorOf(err);
  if (api) {
    const s = parseStatus(api.body);
    if (s?.message) return `HTTP ${api.code}${s.reason ? ` ${s.reason}` : ''}: ${s.message}`;
    const raw = typeof api.body === 'string' ? api.body.trim().slice(0, 300) : '';
    return `HTTP ${api.code}${raw ? `: ${raw}` : ''}`;
  }
  if (err instanceof Error) {
    const code = statusCode(err);
    let msg = code !== undefined && !err.message.includes(String(code)) ? `HTTP ${code} ${err.message}` : err.message;
    if (err.cause !== undefined) msg += ` (cause: ${formatError(err.cause)})`;
    return msg;
  }
  const s = parseStatus(err);
  if (s?.kind === 'Status') return `Status ${s.code ?? '?'}${s.reason ? ` ${s.reason}` : ''}: ${s.message ?? ''}`;
  return String(err);
}

// ---------------------------------------------------------------------------------------------
// The API behind a source

/** What the framework talks to: client-node's KubeConfig (operator) or a KubeApi (agent, tests). */
export type KubeSource = KubeConfig | KubeApi;

function isKubeConfig(src: KubeSource): src is KubeConfig {
  return typeof (src as Partial<KubeConfig>).makeApiClient === 'function';
}

const viaClientNode = new WeakMap<KubeConfig, KubeApi>();

/**
 * The JSON API of a source: a KubeApi as it is; for a KubeConfig, client-node's request pipeline
 * (kube-node.ts, loaded on the first call: only a process that made a KubeConfig loads it), one
 * per KubeConfig.
 */
export function kubeApi(src: KubeSource): KubeApi {
  if (!isKubeConfig(src)) return src;
  let api = viaClientNode.get(src);
  if (!api) {
    let loaded: Promise<KubeApi> | undefined;
    const load = (): Promise<KubeApi> => (loaded ??= import('./kube-node.js').then((m) => m.clientNodeApi(src)));
    const watch: WatchFn = async (...args) => (await load()).watch(...args);
    api = { request: async <R>(method: Method, path: string, opts?: RequestOptions) => (await load()).request<R>(method, path, opts), watch };
    viaClientNode.set(src, api);
  }
  return api;
}

/**
 * The JSON API as callers before framework/client.ts knew it (`RawApi.forConfig(kc).request(...)`):
 * now simply kubeApi().
 */
export type RawApi = KubeApi;
export const RawApi = { forConfig: kubeApi } as const;

export interface ListResult<T> {
  items: T[];
  /** The list's resourceVersion: where a watch must start to miss nothing. */
  resourceVersion: string;
  /** The items already went through the requested `transform` (ListOptions.transform). */
  transformed?: boolean;
}

export interface ListOptions<T = KubernetesObject> {
  labelSelector?: string;
  fieldSelector?: string;
  /** Page size; default 500. */
  limit?: number;
  /**
   * Applied to each item as its page arrives: only one page is ever held untransformed (an
   * informer's trim at 10,000 pods: the initial list's peak is one page, not the whole list).
   */
  transform?: (obj: T) => T;
}

interface RawList<T> {
  apiVersion?: string;
  kind?: string;
  metadata?: { resourceVersion?: string; continue?: string };
  items?: T[];
}

/**
 * List a collection, following `continue` tokens. The items lack apiVersion/kind on the wire (the
 * list carries them); they are filled in so list and watch objects look alike.
 */
export async function listObjects<T extends KubernetesObject>(
  api: Pick<KubeApi, 'request'>,
  ref: ResourceRef,
  namespace: string | undefined,
  opts: ListOptions<T> = {},
): Promise<ListResult<T>> {
  const path = resourcePath(ref, namespace);
  const items: T[] = [];
  let cont: string | undefined;
  let resourceVersion = '';
  do {
    const page = await api.request<RawList<T>>('GET', path, {
      query: { labelSelector: opts.labelSelector, fieldSelector: opts.fieldSelector, limit: opts.limit ?? 500, continue: cont },
    });
    for (const it of page.items ?? []) {
      const obj = { apiVersion: apiVersionOf(ref), kind: ref.kind, ...it };
      items.push(opts.transform && obj.metadata?.name ? opts.transform(obj) : obj);
    }
    // All pages of one list are served from the same snapshot and carry its resourceVersion.
    resourceVersion = page.metadata?.resourceVersion ?? resourceVersion;
    cont = page.metadata?.continue || undefined;
  } while (cont);
  return { items, resourceVersion, ...(opts.transform ? { transformed: true } : {}) };
}

/** Patch content types (the values of client-node's PatchStrategy, without loading it). */
export const PatchStrategy = {
  JsonPatch: 'application/json-patch+json',
  MergePatch: 'application/merge-patch+json',
  StrategicMergePatch: 'application/strategic-merge-patch+json',
  ServerSideApply: 'application/apply-patch+yaml',
} as const;
export type PatchStrategy = (typeof PatchStrategy)[keyof typeof PatchStrategy];

/** Patch one object (or its subresource) with an explicit patch type; resolves with the patched object. */
export function patchObject<T = KubernetesObject>(
  src: KubeSource,
  ref: ResourceRef,
  namespace: string | undefined,
  name: string,
  patch: unknown,
  strategy: PatchStrategy,
  subresource?: 'status',
): Promise<T> {
  return kubeApi(src).request<T>('PATCH', objectPath(ref, namespace, name, subresource), { body: patch, contentType: strategy });
}

/** Create an object; resolves with it as stored. */
export function createObject<T = KubernetesObject>(src: KubeSource, ref: ResourceRef, namespace: string | undefined, body: unknown): Promise<T> {
  if (ref.namespaced && !namespace) throw new Error(`${ref.kind} is namespaced; no namespace given`);
  return kubeApi(src).request<T>('POST', resourcePath(ref, ref.namespaced ? namespace : undefined), { body });
}
