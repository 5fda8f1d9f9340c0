/**
 * The API server's own counters, read from its /metrics with the admin token: API writes by
 * verb and resource (apiserver_request_total) and bytes sent on watches by kind
 * (apiserver_watch_events_sizes_sum; apiserver_watch_events_total for the event count). Diffs of
 * two scrapes give a phase's cost. They count every client: the bench does no writes of its own
 * during a measured phase except the pod it adds (reported under "pods").
 */
import { Agent, request } from 'node:https';

export interface ApiCounters {
  /** "resource[/subresource]" -> writes (POST, PUT, PATCH, DELETE, APPLY, DELETECOLLECTION). */
  writes: Map<string, number>;
  /** kind -> bytes sent to watchers. */
  watchBytes: Map<string, number>;
  /** kind -> watch events sent. */
  watchEvents: Map<string, number>;
}

const WRITE_VERBS = new Set(['POST', 'PUT', 'PATCH', 'DELETE', 'APPLY', 'DELETECOLLECTION', 'CREATE', 'UPDATE']);

function labels(s: string): Record<string, string> {
  const out: Record<string, string> = {};
  for (const m of s.matchAll(/(\w+)="((?:[^"\\]|\\.)*)"/g)) out[m[1]!] = m[2]!;
  return out;
}

export function parseCounters(text: string): ApiCounters {
  const c: ApiCounters = { writes: new Map(), watchBytes: new Map(), watchEvents: new Map() };
  const add = (m: Map<string, number>, k: string, v: number) => m.set(k, (m.get(k) ?? 0) + v);
  for (const line of text.split('\n')) {
    if (line.startsWith('#')) continue;
    const m = /^(apiserver_request_total|apiserver_watch_events_sizes_sum|apiserver_watch_events_total)\{(.*)\}\s+(\S+)$/.exec(line);
    if (!m) continue;
    const l = labels(m[2]!);
    const v = Number(m[3]);
    if (m[1] === 'apiserver_request_total') {
      if (!WRITE_VERBS.has(l.verb ?? '')) continue;
      add(c.writes, `${l.resource ?? '?'}${l.subresource ? `/${l.subresource}` : ''}`, v);
    } else {
      // The kind label (older servers) or the resource label (newer ones) names what was sent.
      const kind = l.kind ?? l.resource ?? '?';
      add(m[1] === 'apiserver_watch_events_total' ? c.watchEvents : c.watchBytes, kind, v);
    }
  }
  return c;
}

export function diff(a: Map<string, number>, b: Map<string, number>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [k, v] of b) {
    const d = v - (a.get(k) ?? 0);
    if (d) out[k] = d;
  }
  return out;
}

export function total(r: Record<string, number>): number {
  return Object.values(r).reduce((a, b) => a + b, 0);
}

export function scraper(server: string, token: string, caPem: string): () => Promise<ApiCounters> {
  const agent = new Agent({ ca: caPem, keepAlive: true });
  return () =>
    new Promise((resolve, reject) => {
      const req = request(`${server}/metrics`, { agent, headers: { Authorization: `Bearer ${token}` } }, (res) => {
        let body = '';
        res.setEncoding('utf8');
        res.on('data', (d: string) => (body += d));
        res.on('end', () => (res.statusCode === 200 ? resolve(parseCounters(body)) : reject(new Error(`GET /metrics: HTTP ${res.statusCode}: ${body.slice(0, 200)}`))));
      });
      req.on('error', (err) => reject(new Error('GET /metrics failed', { cause: err })));
      req.end();
    });
}
