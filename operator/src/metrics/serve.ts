/** A minimal metrics endpoint on node:http: GET <path> -> registry.metrics(), anything else 404. */
import { createServer, type Server } from 'node:http';
import type { Registry } from 'prom-client';

export interface ServeMetricsOptions {
  host: string;
  port: number;
  path?: string;
  registry: Registry;
  /** Probe endpoints (e.g. /healthz, /readyz): 200 "ok" when the check returns true, else 503. */
  probes?: Record<string, () => boolean>;
}

/** Resolves once listening; `port: 0` picks a free port (read it from server.address()). */
export function serveMetrics(opts: ServeMetricsOptions): Promise<Server> {
  const path = opts.path ?? '/metrics';
  const server = createServer((req, res) => {
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
    opts.registry.metrics().then(
      (body) => res.writeHead(200, { 'content-type': opts.registry.contentType }).end(body),
      (e: unknown) => res.writeHead(500, { 'content-type': 'text/plain' }).end(`collecting metrics failed: ${e instanceof Error ? e.message : String(e)}\n`),
    );
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve(server);
    });
  });
}
