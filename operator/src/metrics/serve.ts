/**
 * The metrics and probe endpoints of the operator and the agent.
 *
 * Secure by default (issue #9 item 8, docs/adr/0008): the agent runs with hostNetwork, so whatever
 * it serves is reachable on every node address. Metrics go over HTTPS (a mounted pair or a
 * self-signed certificate, cert.ts) and only to callers whose bearer token may `get` the path
 * (auth.ts). /healthz and /readyz, which the kubelet must reach without credentials, live on a
 * separate plain-HTTP listener that serves nothing else. `--metrics-secure=false` is the explicit
 * opt-out (sandbox and tests on loopback): one plain-HTTP listener with metrics and probes, as before.
 */
import { createServer as createHttpServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { KubeSource } from '../framework/kube.js';
import type { Registry } from 'prom-client';
import { MetricsAuthorizer, kubeReviewApi } from './auth.js';
import { loadCertDir, selfSignedCert, type TlsPair } from './cert.js';

export interface ServeMetricsOptions {
  host: string;
  port: number;
  path?: string;
  registry: Registry;
  /** Probe endpoints (e.g. /healthz, /readyz): 200 "ok" when the check returns true, else 503. */
  probes?: Record<string, () => boolean>;
  /** Serve HTTPS with this pair. */
  tls?: TlsPair;
  /** Authorize every metrics request (not the probes) with the caller's bearer token. */
  authorizer?: Pick<MetricsAuthorizer, 'authorize'>;
  log?: (msg: string) => void;
}

/** Resolves once listening; `port: 0` picks a free port (read it from server.address()). */
export function serveMetrics(opts: ServeMetricsOptions): Promise<Server> {
  const path = opts.path ?? '/metrics';
  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const url = (req.url ?? '').split('?')[0] ?? '';
    const probe = opts.probes?.[url];
    if (req.method === 'GET' && probe) {
      const ok = probe();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok\n' : 'not ready\n');
      return;
    }
    if (req.method !== 'GET' || url !== path) {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found\n');
      return;
    }
    const collect = (): void => {
      opts.registry.metrics().then(
        (body) => res.writeHead(200, { 'content-type': opts.registry.contentType }).end(body),
        (e: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`collecting metrics failed: ${e instanceof Error ? e.message : String(e)}\n`),
      );
    };
    if (!opts.authorizer) return collect();
    opts.authorizer.authorize(req.headers.authorization, path).then(
      (d) => {
        if (d.code === 200) return collect();
        // The reason goes to our log, not to the caller: it names users and RBAC details.
        if (d.code === 503) opts.log?.(`metrics request refused: ${d.reason}`);
        const text = d.code === 401 ? 'Unauthorized' : d.code === 403 ? 'Forbidden' : 'Service Unavailable';
        res.writeHead(d.code, { 'content-type': 'text/plain', ...(d.code === 401 ? { 'www-authenticate': 'Bearer' } : {}) }).end(`${text}\n`);
      },
      (e: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`authorization failed: ${e instanceof Error ? e.message : String(e)}\n`),
    );
  };
  const server: Server = opts.tls ? createHttpsServer({ cert: opts.tls.cert, key: opts.tls.key, minVersion: 'TLSv1.2' }, handler) : createHttpServer(handler);
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}

/** "host:port" or ":port" of a listener -> { host, port } (host default 0.0.0.0); `flag` names it in errors. */
export function parseBindAddress(s: string, flag: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  const port = Number(s.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`${flag} must be host:port, not "${s}"`);
  return { host: s.slice(0, i) || '0.0.0.0', port };
}

/** Default probe listener: plain HTTP, /healthz and /readyz only (the kubelet's probes have no token). */
export const DEFAULT_HEALTH_PROBE_ADDRESS = { host: '0.0.0.0', port: 10092 } as const;

export interface EndpointOptions {
  /** For the reviews of the secure metrics endpoint: client-node's KubeConfig or a KubeApi. */
  kc: KubeSource;
  /** false = plain HTTP without authorization (explicit opt-out). */
  secure: boolean;
  /** tls.crt + tls.key; default: a self-signed certificate made at start. */
  certDir?: string;
  metrics: { host: string; port: number };
  /** Probe listener; default the metrics host, port 10092 (0 if the metrics port is 0) when secure;
   *  the metrics listener itself when not. */
  health?: { host: string; port: number };
  path: string;
  registry: Registry;
  probes: Record<string, () => boolean>;
  log: (msg: string) => void;
}

export interface Endpoints {
  metricsPort: number;
  /** The probe listener's port (the metrics port when they share one). */
  healthPort: number;
  /** One line for the log: what is served where, and how. */
  summary: string;
  close(): void;
}

const portOf = (s: Server): number => (s.address() as { port: number }).port;

/** Starts the metrics listener and, unless they share it, the probe listener. */
export async function startEndpoints(o: EndpointOptions): Promise<Endpoints> {
  const servers: Server[] = [];
  const close = () => servers.forEach((s) => s.close());
  try {
    let healthOnMetrics = false;
    let health: { host: string; port: number } | undefined = o.health;
    if (!o.secure && !health) healthOnMetrics = true;
    // On the metrics host; a metrics port of 0 ("any free port", tests) makes the probe port any too,
    // so several processes on one host cannot collide on the fixed default.
    if (o.secure && !health) health = { host: o.metrics.host, port: o.metrics.port === 0 ? 0 : DEFAULT_HEALTH_PROBE_ADDRESS.port };
    const tls = o.secure ? (o.certDir ? await loadCertDir(o.certDir) : selfSignedCert()) : undefined;
    const metrics = await serveMetrics({
      ...o.metrics,
      path: o.path,
      registry: o.registry,
      log: o.log,
      ...(healthOnMetrics ? { probes: o.probes } : {}),
      ...(tls ? { tls, authorizer: new MetricsAuthorizer({ api: kubeReviewApi(o.kc) }) } : {}),
    });
    servers.push(metrics);
    // A path no request line can carry: the probe listener serves the probes and nothing else.
    const probeServer = health ? await serveMetrics({ ...health, path: '\0', registry: o.registry, probes: o.probes }) : undefined;
    if (probeServer) servers.push(probeServer);
    const mp = portOf(metrics);
    const hp = probeServer ? portOf(probeServer) : mp;
    const how = o.secure ? `https, token + SubjectAccessReview, ${o.certDir ? `certificate from ${o.certDir}` : 'self-signed certificate'}` : 'plain http, no authorization (--metrics-secure=false)';
    const summary = `serving ${o.path} on ${o.metrics.host}:${mp} (${how}); ${Object.keys(o.probes).join(', ')} on ${(health ?? o.metrics).host}:${hp}`;
    return { metricsPort: mp, healthPort: hp, summary, close };
  } catch (err) {
    close();
    throw err;
  }
}
