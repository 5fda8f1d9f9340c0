/**
 * Kubernetes plumbing shared by the framework: resource references, URL paths, error
 * classification, a raw JSON request client, list paging and patching.
 *
 * Objects travel as plain JSON everywhere (list, watch, patch responses). client-node's typed API
 * classes deserialize timestamps into Date objects while its Watch hands out raw JSON; mixing both
 * in one cache makes `old` and `new` objects differ in shape. `RawApi` therefore reuses client-node's
 * request pipeline (auth, TLS, proxies, middleware) but returns the parsed body untouched.
 */
import {
  ApiException,
  CustomObjectsApi,
  HttpMethod,
  KubernetesObjectApi,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type KubernetesObject,
  type RequestContext,
  type ResponseContext,
} from '@kubernetes/client-node';

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
 * The HTTP status behind an error: ApiException.code, the `statusCode` client-node's Watch sets on
 * a non-200 response, or the `code` of a metav1.Status (an in-stream watch ERROR event).
 */
export function statusCode(err: unknown): number | undefined {
  if (err instanceof ApiException) return err.code;
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

/** One line describing any error; ApiException bodies are reduced to the Status reason and message. */
export function formatError(err: unknown): string {
  if (err instanceof ApiException) {
    const s = parseStatus(err.body);
    if (s?.message) return `HTTP ${err.code}${s.reason ? ` ${s.reason}` : ''}: ${s.message}`;
    const raw = typeof err.body === 'string' ? err.body.trim().slice(0, 300) : '';
    return `HTTP ${err.code}${raw ? `: ${raw}` : ''}`;
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
// Raw JSON client

export interface RawRequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  body?: unknown;
  contentType?: string;
}

/**
 * client-node's request pipeline with the body returned as parsed JSON (no model deserialization).
 * Errors are ApiException { code, body: string, headers } like every other client-node call.
 */
export class RawApi extends KubernetesObjectApi {
  static forConfig(kc: KubeConfig): RawApi {
    return kc.makeApiClient(RawApi);
  }

  async request<R = unknown>(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', path: string, opts: RawRequestOptions = {}): Promise<R> {
    const ctx: RequestContext = this.configuration.baseServer.makeRequestContext(path, HttpMethod[method]);
    ctx.setHeaderParam('Accept', 'application/json');
    for (const [k, v] of Object.entries(opts.query ?? {})) {
      if (v !== undefined) ctx.setQueryParam(k, String(v));
    }
    if (opts.body !== undefined) {
      ctx.setHeaderParam('Content-Type', opts.contentType ?? 'application/json');
      ctx.setBody(JSON.stringify(opts.body));
    }
    // requestPromise's type parameter is bounded by KubernetesObject; our processResponse returns R.
    return (await this.requestPromise(ctx)) as unknown as R;
  }

  protected override async processResponse<T extends KubernetesObject>(response: ResponseContext): Promise<T> {
    const text = await response.body.text();
    if (response.httpStatusCode >= 200 && response.httpStatusCode <= 299) {
      return (text === '' ? undefined : JSON.parse(text)) as T;
    }
    throw new ApiException<string>(response.httpStatusCode, `HTTP-Code: ${response.httpStatusCode}`, text, response.headers);
  }
}

export interface ListResult<T> {
  items: T[];
  /** The list's resourceVersion: where a watch must start to miss nothing. */
  resourceVersion: string;
}

export interface ListOptions {
  labelSelector?: string;
  fieldSelector?: string;
  /** Page size; default 500. */
  limit?: number;
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
  api: RawApi,
  ref: ResourceRef,
  namespace: string | undefined,
  opts: ListOptions = {},
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
      items.push({ apiVersion: apiVersionOf(ref), kind: ref.kind, ...it });
    }
    // All pages of one list are served from the same snapshot and carry its resourceVersion.
    resourceVersion = page.metadata?.resourceVersion ?? resourceVersion;
    cont = page.metadata?.continue || undefined;
  } while (cont);
  return { items, resourceVersion };
}

/**
 * Patch one object (or its subresource) with an explicit patch type. Group resources go through
 * CustomObjectsApi with the Content-Type set by setHeaderOptions (without it client-node sends
 * application/json-patch+json whatever the body is); core resources, which CustomObjectsApi cannot
 * address, go through RawApi.
 */
export async function patchObject<T = KubernetesObject>(
  kc: KubeConfig,
  ref: ResourceRef,
  namespace: string | undefined,
  name: string,
  patch: unknown,
  strategy: PatchStrategy,
  subresource?: 'status',
): Promise<T> {
  if (ref.group === '') {
    return RawApi.forConfig(kc).request<T>('PATCH', objectPath(ref, namespace, name, subresource), {
      body: patch,
      contentType: strategy,
    });
  }
  const api = kc.makeApiClient(CustomObjectsApi);
  const options = setHeaderOptions('Content-Type', strategy);
  const base = { group: ref.group, version: ref.version, plural: ref.plural, name, body: patch as object };
  if (ref.namespaced) {
    if (!namespace) throw new Error(`${ref.kind} "${name}" is namespaced; no namespace given`);
    const p = { ...base, namespace };
    return (await (subresource === 'status'
      ? api.patchNamespacedCustomObjectStatus(p, options)
      : api.patchNamespacedCustomObject(p, options))) as T;
  }
  return (await (subresource === 'status'
    ? api.patchClusterCustomObjectStatus(base, options)
    : api.patchClusterCustomObject(base, options))) as T;
}

export { PatchStrategy };
