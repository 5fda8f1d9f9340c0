/**
 * A small Kubernetes API client on node:http(s): what the node agent needs and nothing more.
 *
 * Why not @kubernetes/client-node: a Node.js process that merely imports it is at ~111 MiB RSS
 * (node alone: ~40 MiB), and the agent's own data at 10,000 local pods is ~23 MiB of heap
 * (docs/scale.md, "Agent memory"). The agent talks to the API server in a handful of ways (paged
 * lists, watches, status patches, a Lease, one Node read, Token/SubjectAccessReviews) that all go
 * through the two calls below, on plain JSON.
 *
 *  - request(method, path, {query, body, contentType}) resolves with the parsed JSON body (undefined
 *    for an empty one). A non-2xx answer rejects with KubeApiError { code, body, headers }, which
 *    framework/kube.ts statusCode/isNotFound/formatError and backoff.ts retryAfterMs understand
 *    like client-node's ApiException.
 *  - watch(path, query, onEvent, onDone): the WatchFn contract of framework/informer.ts (that of
 *    client-node's Watch.watch): resolves once the response head arrived or the request failed,
 *    onEvent per JSON line, onDone exactly once (null on a clean end, KubeApiError on an HTTP error
 *    status, with its headers so Retry-After is honoured).
 *
 * Configuration (loadClientConfig): a kubeconfig file (--kubeconfig, else $KUBECONFIG, a
 * colon-separated list merged first-wins like kubectl, else ~/.kube/config when it exists) or the
 * in-cluster service account (KUBERNETES_SERVICE_HOST/PORT, token and ca.crt). Supported: server,
 * certificate-authority(-data), insecure-skip-tls-verify, tls-server-name, client-certificate(-data)
 * + client-key(-data), token, tokenFile. Anything else that changes how to connect or authenticate
 * (exec, auth-provider, username/password, impersonation, proxy-url) is an error naming the field:
 * silently connecting without it would fail later and obscurely.
 * A token file (in-cluster: a bound token the kubelet rotates) is re-read at most once a minute,
 * and at the next request after a 401, as client-go does.
 * Effects: HTTP(S) to the configured server, reads of the configured files, the wall clock.
 */
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Agent as HttpAgent, request as httpRequest, type ClientRequest, type IncomingHttpHeaders, type IncomingMessage } from 'node:http';
import { Agent as HttpsAgent, request as httpsRequest } from 'node:https';
import { homedir } from 'node:os';
import { delimiter, isAbsolute, join, resolve as resolvePath, dirname } from 'node:path';
import { createInterface } from 'node:readline';

export type WatchQuery = Record<string, string | number | boolean | undefined>;

/** Something that can be aborted: client-node's Watch returns an AbortController. */
export interface WatchHandle {
  abort(): void;
}

/**
 * Same contract as client-node's `Watch.watch(path, query, callback, done)`: `onEvent(type, object)`
 * per line, `onDone(err | null)` once when the stream ends (possibly before the promise resolves,
 * e.g. on an HTTP error status).
 */
export type WatchFn = (
  path: string,
  query: WatchQuery,
  onEvent: (type: string, obj: unknown) => void,
  onDone: (err: unknown) => void,
) => Promise<WatchHandle>;

export type Method = 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';

export interface RequestOptions {
  query?: Record<string, string | number | boolean | undefined>;
  /** Sent as JSON. */
  body?: unknown;
  /** Default application/json; a patch names its type (application/merge-patch+json, ...). */
  contentType?: string;
}

/** The API server as the framework uses it: this client, or client-node's pipeline (framework/kube-node.ts). */
export interface KubeApi {
  request<R = unknown>(method: Method, path: string, opts?: RequestOptions): Promise<R>;
  watch: WatchFn;
}

/** A non-2xx answer: the HTTP status as `code`, the body text and the headers (lower-case names). */
export class KubeApiError extends Error {
  constructor(
    readonly code: number,
    readonly body: string,
    readonly headers: Record<string, string>,
    what: string,
  ) {
    let detail = body.trim().slice(0, 300);
    try {
      const s = JSON.parse(body) as { message?: string; reason?: string };
      if (s.message) detail = `${s.reason ? `${s.reason}: ` : ''}${s.message}`;
    } catch {
      /* not a Status (a proxy's page, say): keep the text */
    }
    super(`${what}: HTTP ${code}${detail ? `: ${detail}` : ''}`);
    this.name = 'KubeApiError';
  }
}

// ---------------------------------------------------------------------------------------------
// Configuration

export interface ClientConfig {
  /** https://host:port, possibly with a path prefix; no trailing slash. */
  server: string;
  /** PEM bundle the serving certificate must chain to; default: the system roots. */
  ca?: string;
  insecureSkipTLSVerify?: boolean;
  /** SNI and certificate name to check, when not the server's host. */
  tlsServerName?: string;
  /** Client certificate and key (PEM). */
  cert?: string;
  key?: string;
  token?: string;
  /** Bearer token re-read from this file (rotating service-account tokens). */
  tokenFile?: string;
  /** Where this came from, for messages: the kubeconfig file(s) and context, or "in-cluster". */
  source: string;
}

export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** In-cluster: the API server's service address and this pod's service account. */
export async function inClusterConfig(env: NodeJS.ProcessEnv = process.env, dir = SERVICE_ACCOUNT_DIR): Promise<ClientConfig> {
  const host = env.KUBERNETES_SERVICE_HOST;
  const port = env.KUBERNETES_SERVICE_PORT;
  if (!host || !port) throw new Error('in-cluster config: KUBERNETES_SERVICE_HOST and KUBERNETES_SERVICE_PORT are not set (not in a pod? give --kubeconfig)');
  const tokenFile = join(dir, 'token');
  const ca = await readFile(join(dir, 'ca.crt'), 'utf8').catch((err: unknown) => {
    throw new Error(`in-cluster config: reading ${join(dir, 'ca.crt')}`, { cause: err });
  });
  return { server: `https://${host.includes(':') ? `[${host}]` : host}:${port}`, ca, tokenFile, source: 'in-cluster' };
}

type Named<K extends string> = { name?: string } & { [k in K]?: Record<string, unknown> };
interface KubeconfigDoc {
  'current-context'?: string;
  clusters?: Named<'cluster'>[];
  users?: Named<'user'>[];
  contexts?: Named<'context'>[];
}

const CLUSTER_FIELDS = new Set(['server', 'certificate-authority', 'certificate-authority-data', 'insecure-skip-tls-verify', 'tls-server-name', 'disable-compression', 'extensions']);
const USER_FIELDS = new Set(['token', 'tokenFile', 'client-certificate', 'client-certificate-data', 'client-key', 'client-key-data', 'extensions']);
const PATH_FIELDS = ['certificate-authority', 'client-certificate', 'client-key', 'tokenFile'];

/**
 * The ClientConfig of a kubeconfig (already parsed; several files merged) for its current context,
 * or `context`. Relative file paths must already be absolute (loadKubeconfigFiles does that).
 */
export async function kubeconfigClientConfig(doc: KubeconfigDoc, source: string, context?: string): Promise<ClientConfig> {
  const ctxName = context || doc['current-context'];
  if (!ctxName) throw new Error(`kubeconfig ${source}: no current-context`);
  const find = <K extends 'cluster' | 'user' | 'context'>(list: Named<K>[] | undefined, key: K, name: string): Record<string, unknown> => {
    const e = list?.find((x) => x.name === name)?.[key];
    if (!e) throw new Error(`kubeconfig ${source}: ${key} "${name}" not found`);
    return e;
  };
  const ctx = find(doc.contexts, 'context', ctxName);
  const where = `kubeconfig ${source}, context "${ctxName}"`;
  const cluster = find(doc.clusters, 'cluster', String(ctx.cluster ?? ''));
  const user: Record<string, unknown> = ctx.user ? find(doc.users, 'user', String(ctx.user)) : {};
  for (const k of Object.keys(cluster)) {
    if (!CLUSTER_FIELDS.has(k)) throw new Error(`${where}: cluster field "${k}" is not supported by kube-npm's agent client`);
  }
  for (const k of Object.keys(user)) {
    if (!USER_FIELDS.has(k)) throw new Error(`${where}: user field "${k}" is not supported by kube-npm's agent client (it authenticates with token, tokenFile or a client certificate)`);
  }
  const str = (o: Record<string, unknown>, k: string): string | undefined => (typeof o[k] === 'string' && o[k] !== '' ? (o[k] as string) : undefined);
  const pem = async (o: Record<string, unknown>, file: string, data: string): Promise<string | undefined> => {
    const d = str(o, data);
    if (d) return Buffer.from(d, 'base64').toString('utf8');
    const f = str(o, file);
    if (!f) return undefined;
    return readFile(f, 'utf8').catch((err: unknown) => {
      throw new Error(`${where}: reading ${file} ${f}`, { cause: err });
    });
  };
  const server = str(cluster, 'server');
  if (!server) throw new Error(`${where}: cluster has no server`);
  const cfg: ClientConfig = { server: server.replace(/\/+$/, ''), source: where };
  const ca = await pem(cluster, 'certificate-authority', 'certificate-authority-data');
  if (ca) cfg.ca = ca;
  if (cluster['insecure-skip-tls-verify'] === true) cfg.insecureSkipTLSVerify = true;
  const sni = str(cluster, 'tls-server-name');
  if (sni) cfg.tlsServerName = sni;
  const cert = await pem(user, 'client-certificate', 'client-certificate-data');
  const key = await pem(user, 'client-key', 'client-key-data');
  if (!cert !== !key) throw new Error(`${where}: client-certificate and client-key go together`);
  if (cert && key) Object.assign(cfg, { cert, key });
  const token = str(user, 'token');
  if (token) cfg.token = token;
  const tokenFile = str(user, 'tokenFile');
  if (tokenFile && !token) cfg.tokenFile = tokenFile;
  return cfg;
}

/** Parse and merge kubeconfig files, first wins per name (kubectl's rule); relative paths made absolute. */
export async function loadKubeconfigFiles(files: string[]): Promise<KubeconfigDoc> {
  const { parse } = await import('yaml'); // only for kubeconfig files: the in-cluster agent never loads it
  const merged: Required<KubeconfigDoc> = { 'current-context': '', clusters: [], users: [], contexts: [] };
  for (const file of files) {
    let doc: KubeconfigDoc;
    try {
      doc = (parse(await readFile(file, 'utf8')) ?? {}) as KubeconfigDoc;
    } catch (err) {
      throw new Error(`reading kubeconfig ${file}`, { cause: err });
    }
    const base = dirname(resolvePath(file));
    merged['current-context'] ||= doc['current-context'] ?? '';
    for (const [list, key] of [['clusters', 'cluster'], ['users', 'user'], ['contexts', 'context']] as const) {
      for (const e of (doc[list] ?? []) as Named<typeof key>[]) {
        if ((merged[list] as Named<typeof key>[]).some((m) => m.name === e.name)) continue;
        const body = { ...(e[key] ?? {}) };
        for (const f of PATH_FIELDS) {
          const v = body[f];
          if (typeof v === 'string' && v !== '' && !isAbsolute(v)) body[f] = resolvePath(base, v);
        }
        (merged[list] as Named<typeof key>[]).push({ name: e.name, [key]: body });
      }
    }
  }
  return merged;
}

/**
 * What to connect to: `kubeconfig` if given, else $KUBECONFIG, else ~/.kube/config when it exists,
 * else the in-cluster service account (client-node's loadFromDefault order).
 */
export async function loadClientConfig(o: { kubeconfig?: string; context?: string; env?: NodeJS.ProcessEnv; home?: string } = {}): Promise<ClientConfig> {
  const env = o.env ?? process.env;
  let files: string[] = [];
  if (o.kubeconfig) files = [o.kubeconfig];
  else if (env.KUBECONFIG) files = env.KUBECONFIG.split(delimiter).filter((f) => f !== '');
  else {
    const home = join(o.home ?? env.HOME ?? homedir(), '.kube', 'config');
    if (existsSync(home)) files = [home];
  }
  if (files.length === 0) {
    if (o.context) throw new Error(`context "${o.context}" given but no kubeconfig found (--kubeconfig, $KUBECONFIG, ~/.kube/config)`);
    return inClusterConfig(env);
  }
  return kubeconfigClientConfig(await loadKubeconfigFiles(files), files.join(delimiter), o.context);
}

// ---------------------------------------------------------------------------------------------
// Client

const flatHeaders = (h: IncomingHttpHeaders): Record<string, string> => {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(h)) if (v !== undefined) out[k] = Array.isArray(v) ? v.join(', ') : v;
  return out;
};

/**
 * Runs one watch request made by `send` (not yet ended) under the WatchFn contract: resolves once
 * the response head arrived or the request failed; onDone exactly once; abort() ends the request.
 * Shared by KubeClient and the client-node transport (kube-node.ts).
 */
export function streamWatch(send: () => ClientRequest, what: string, onEvent: (type: string, obj: unknown) => void, onDone: (err: unknown) => void): Promise<WatchHandle> {
  let done = false;
  let req: ClientRequest | undefined;
  const finish = (err: unknown): void => {
    if (done) return;
    done = true;
    req?.destroy();
    onDone(err);
  };
  const handle: WatchHandle = { abort: () => finish(Object.assign(new Error('The operation was aborted.'), { name: 'AbortError' })) };
  return new Promise<WatchHandle>((opened) => {
    req = send();
    // A dead peer (a node that lost its route) is noticed by TCP keepalive, not only by the informer's grace timer.
    req.on('socket', (s) => s.setKeepAlive(true, 30_000));
    req.on('error', (err) => {
      finish(err);
      opened(handle);
    });
    req.on('response', (res: IncomingMessage) => {
      res.on('error', finish);
      if (res.statusCode !== 200) {
        const chunks: Buffer[] = [];
        let size = 0;
        res.on('data', (c: Buffer) => {
          if (size < 65_536) chunks.push(c);
          size += c.length;
        });
        res.on('end', () => {
          finish(new KubeApiError(res.statusCode ?? 0, Buffer.concat(chunks).toString('utf8'), flatHeaders(res.headers), what));
          opened(handle);
        });
        return;
      }
      const lines = createInterface({ input: res, crlfDelay: Infinity });
      lines.on('line', (line) => {
        if (done || line.trim() === '') return;
        let ev: { type?: string; object?: unknown };
        try {
          ev = JSON.parse(line) as { type?: string; object?: unknown };
        } catch (err) {
          finish(new Error(`${what}: invalid JSON line: ${line.slice(0, 200)}`, { cause: err }));
          return;
        }
        onEvent(String(ev.type), ev.object);
      });
      // readline re-emits the response's errors (e.g. "aborted" when the server goes away).
      lines.on('error', finish);
      lines.on('close', () => finish(null));
      opened(handle);
    });
    req.end();
  });
}

export interface KubeClientOptions {
  /** Bound on a request (not a watch) from sending to the end of the answer; default 60 s. */
  timeoutMs?: number;
  /** How long a token read from a file is used before it is read again; default 60 s. */
  tokenReloadMs?: number;
  now?: () => number;
}

export class KubeClient implements KubeApi {
  private readonly agent: HttpAgent;
  private readonly https: boolean;
  private readonly now: () => number;
  private fileToken: { value: string; readAt: number } | undefined;

  constructor(
    readonly config: ClientConfig,
    private readonly opts: KubeClientOptions = {},
  ) {
    const url = new URL(config.server);
    this.https = url.protocol === 'https:';
    if (!this.https && url.protocol !== 'http:') throw new Error(`${config.source}: server ${config.server} is neither https nor http`);
    this.now = opts.now ?? Date.now;
    // One keep-alive pool: each watch holds a connection, requests reuse the idle ones.
    this.agent = this.https
      ? new HttpsAgent({
          keepAlive: true,
          maxFreeSockets: 4,
          ...(config.ca ? { ca: config.ca } : {}),
          ...(config.cert && config.key ? { cert: config.cert, key: config.key } : {}),
          ...(config.tlsServerName ? { servername: config.tlsServerName } : {}),
          rejectUnauthorized: !config.insecureSkipTLSVerify,
        })
      : new HttpAgent({ keepAlive: true, maxFreeSockets: 4 });
  }

  /** loadClientConfig + a client. */
  static async load(kubeconfig?: string, opts?: KubeClientOptions): Promise<KubeClient> {
    return new KubeClient(await loadClientConfig(kubeconfig ? { kubeconfig } : {}), opts);
  }

  /** Closes idle connections; open watches end on their own (abort them first). */
  close(): void {
    this.agent.destroy();
  }

  async request<R = unknown>(method: Method, path: string, opts: RequestOptions = {}): Promise<R> {
    const url = this.url(path, opts.query);
    const body = opts.body === undefined ? undefined : JSON.stringify(opts.body);
    const headers = await this.headers(body === undefined ? undefined : (opts.contentType ?? 'application/json'));
    if (body !== undefined) headers['content-length'] = String(Buffer.byteLength(body));
    const what = `${method} ${url.pathname}`;
    const res = await new Promise<{ code: number; text: string; headers: Record<string, string> }>((resolve, reject) => {
      const req = this.send(url, method, headers);
      req.setTimeout(this.opts.timeoutMs ?? 60_000, () => req.destroy(new Error(`${what}: no answer within ${this.opts.timeoutMs ?? 60_000} ms`)));
      req.on('error', reject);
      req.on('response', (r: IncomingMessage) => {
        const chunks: Buffer[] = [];
        r.on('data', (c: Buffer) => chunks.push(c));
        r.on('error', reject);
        r.on('end', () => resolve({ code: r.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), headers: flatHeaders(r.headers) }));
      });
      req.end(body);
    }).catch((err: unknown) => {
      throw err instanceof Error && err.message.startsWith(what) ? err : new Error(`${what}: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
    });
    if (res.code === 401) this.fileToken = undefined; // a rotated token: read the file again next time
    if (res.code < 200 || res.code > 299) throw new KubeApiError(res.code, res.text, res.headers, what);
    return (res.text === '' ? undefined : JSON.parse(res.text)) as R;
  }

  readonly watch: WatchFn = async (path, query, onEvent, onDone) => {
    const url = this.url(path, { ...query, watch: true });
    const headers = await this.headers(undefined);
    return streamWatch(() => this.send(url, 'GET', headers), `watch ${url.pathname}`, onEvent, (err) => {
      if (err instanceof KubeApiError && err.code === 401) this.fileToken = undefined;
      onDone(err);
    });
  };

  private url(path: string, query: RequestOptions['query']): URL {
    const url = new URL(this.config.server + path);
    for (const [k, v] of Object.entries(query ?? {})) if (v !== undefined) url.searchParams.set(k, String(v));
    return url;
  }

  private send(url: URL, method: Method, headers: Record<string, string>): ClientRequest {
    return (this.https ? httpsRequest : httpRequest)(url, { method, headers, agent: this.agent });
  }

  private async headers(contentType: string | undefined): Promise<Record<string, string>> {
    const h: Record<string, string> = { accept: 'application/json', 'user-agent': 'kube-npm' };
    if (contentType) h['content-type'] = contentType;
    const token = await this.token();
    if (token) h.authorization = `Bearer ${token}`;
    return h;
  }

  private async token(): Promise<string | undefined> {
    const { token, tokenFile } = this.config;
    if (token || !tokenFile) return token;
    const cached = this.fileToken;
    if (cached && this.now() - cached.readAt < (this.opts.tokenReloadMs ?? 60_000)) return cached.value;
    try {
      const value = (await readFile(tokenFile, 'utf8')).trim();
      this.fileToken = { value, readAt: this.now() };
      return value;
    } catch (err) {
      // A failed re-read keeps the token we have (the kubelet rewrites the file atomically, but be safe).
      if (cached) return cached.value;
      throw new Error(`${this.config.source}: reading token file ${tokenFile}`, { cause: err });
    }
  }
}
