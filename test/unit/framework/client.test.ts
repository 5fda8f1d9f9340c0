/** framework/client.ts without an API server: kubeconfig handling and the HTTP contract on a local server. */
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { expect } from 'chai';
import { KubeApiError, KubeClient, inClusterConfig, kubeconfigClientConfig, loadClientConfig, loadKubeconfigFiles } from '../../../operator/src/framework/client.js';
import { formatError, isConflict, isNotFound, statusCode } from '../../../operator/src/framework/kube.js';
import { retryAfterMs } from '../../../operator/src/framework/backoff.js';

const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('framework/client.ts', () => {
  let dir: string;
  beforeEach(() => (dir = mkdtempSync(join(tmpdir(), 'client-test-'))));
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  const doc = (user: Record<string, unknown>, cluster: Record<string, unknown> = { server: 'https://k:6443/' }) => ({
    'current-context': 'x',
    clusters: [{ name: 'c', cluster }],
    users: [{ name: 'u', user }],
    contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }],
  });

  describe('configuration', () => {
    it('reads server, CA, client certificate and token from the current context', async () => {
      const cfg = await kubeconfigClientConfig(
        doc({ token: 't', 'client-certificate-data': b64('CERT'), 'client-key-data': b64('KEY') }, { server: 'https://k:6443/', 'certificate-authority-data': b64('CA'), 'tls-server-name': 'kubernetes' }),
        'f',
      );
      expect(cfg).to.include({ server: 'https://k:6443', ca: 'CA', cert: 'CERT', key: 'KEY', token: 't', tlsServerName: 'kubernetes' });
    });

    it('names the unsupported field: exec, auth-provider, username, proxy-url', async () => {
      const err = (d: object) => kubeconfigClientConfig(d as never, 'f').then(() => 'no error', (e: Error) => e.message);
      expect(await err(doc({ exec: { command: 'aws' } }))).to.match(/user field "exec" is not supported/);
      expect(await err(doc({ 'auth-provider': { name: 'oidc' } }))).to.match(/user field "auth-provider"/);
      expect(await err(doc({ username: 'a', password: 'b' }))).to.match(/user field "username"/);
      expect(await err(doc({}, { server: 'https://k', 'proxy-url': 'http://p' }))).to.match(/cluster field "proxy-url"/);
      expect(await err(doc({ 'client-certificate-data': b64('C') }))).to.match(/client-certificate and client-key go together/);
      expect(await err({ ...doc({}), 'current-context': 'other' })).to.match(/context "other" not found/);
    });

    it('merges $KUBECONFIG files first-wins and resolves relative paths against each file', async () => {
      mkdirSync(join(dir, 'a'));
      writeFileSync(join(dir, 'a', 'ca.crt'), 'CA-A');
      writeFileSync(join(dir, 'a', 'token'), 'tok');
      writeFileSync(join(dir, 'a', 'config'), `current-context: x\ncontexts: [{name: x, context: {cluster: c, user: u}}]\nclusters: [{name: c, cluster: {server: "https://a", certificate-authority: ca.crt}}]\n`);
      writeFileSync(join(dir, 'b.yaml'), `current-context: y\nclusters: [{name: c, cluster: {server: "https://b"}}]\nusers: [{name: u, user: {tokenFile: a/token}}]\n`);
      const merged = await loadKubeconfigFiles([join(dir, 'a', 'config'), join(dir, 'b.yaml')]);
      expect(merged['current-context']).to.equal('x');
      const cfg = await loadClientConfig({ env: { KUBECONFIG: `${join(dir, 'a', 'config')}:${join(dir, 'b.yaml')}` } });
      expect(cfg).to.include({ server: 'https://a', ca: 'CA-A', tokenFile: join(dir, 'a', 'token') });
    });

    it('in-cluster: service host and port (IPv6 bracketed), token file, CA; a clear error outside a pod', async () => {
      writeFileSync(join(dir, 'ca.crt'), 'CA');
      expect(await inClusterConfig({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' }, dir)).to.deep.equal({ server: 'https://[fd00::1]:443', ca: 'CA', tokenFile: join(dir, 'token'), source: 'in-cluster' });
      const e = await inClusterConfig({}, dir).catch((x: Error) => x.message);
      expect(e).to.match(/KUBERNETES_SERVICE_HOST .* not set/);
      // No kubeconfig anywhere: in-cluster is what loadClientConfig tries.
      expect(await loadClientConfig({ env: {}, home: dir }).catch((x: Error) => x.message)).to.match(/in-cluster config/);
    });
  });

  describe('HTTP', () => {
    let server: Server;
    let handler: (req: IncomingMessage, body: string, res: ServerResponse) => void;
    let url: string;
    beforeEach(async () => {
      server = createServer((req, res) => {
        let body = '';
        req.setEncoding('utf8').on('data', (c: string) => (body += c));
        req.on('end', () => handler(req, body, res));
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      url = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
    });
    afterEach(() => {
      server.closeAllConnections();
      server.close();
    });

    it('request: query, JSON body with its content type and the bearer token; parsed JSON back', async () => {
      let seen: { method?: string; url?: string; ct?: string; auth?: string; body?: string } = {};
      handler = (req, body, res) => {
        seen = { method: req.method, url: req.url, ct: req.headers['content-type'], auth: req.headers.authorization, body };
        res.writeHead(200, { 'content-type': 'application/json' }).end('{"ok":true}');
      };
      const c = new KubeClient({ server: url, token: 'T', source: 'test' });
      expect(await c.request('PATCH', '/api/v1/x', { query: { a: 'b c', skip: undefined }, body: { s: 1 }, contentType: 'application/merge-patch+json' })).to.deep.equal({ ok: true });
      expect(seen).to.deep.equal({ method: 'PATCH', url: '/api/v1/x?a=b+c', ct: 'application/merge-patch+json', auth: 'Bearer T', body: '{"s":1}' });
      c.close();
    });

    it('errors carry code, body and headers: isNotFound, isConflict, formatError, Retry-After', async () => {
      let code = 404;
      handler = (_req, _body, res) =>
        res.writeHead(code, { 'content-type': 'application/json', 'retry-after': '3' }).end(JSON.stringify({ kind: 'Status', code, reason: code === 404 ? 'NotFound' : 'TooManyRequests', message: 'm' }));
      const c = new KubeClient({ server: url, source: 'test' });
      const nf = await c.request('GET', '/x').catch((e: unknown) => e);
      expect(nf).to.be.instanceOf(KubeApiError);
      expect(isNotFound(nf)).to.equal(true);
      expect(isConflict(nf)).to.equal(false);
      expect(formatError(nf)).to.equal('HTTP 404 NotFound: m');
      expect((nf as Error).message).to.equal('GET /x: HTTP 404: NotFound: m');
      code = 429;
      const busy = await c.request('GET', '/x').catch((e: unknown) => e);
      expect(statusCode(busy)).to.equal(429);
      expect(retryAfterMs(busy)).to.equal(3000);
      // A connection error names the request.
      c.close();
      const down = new KubeClient({ server: 'http://127.0.0.1:1', source: 'test' });
      expect(formatError(await down.request('GET', '/y').catch((e: unknown) => e))).to.match(/^GET \/y: .*ECONNREFUSED/);
    });

    it('watch: events per line, onDone(null) at the end; an error status is a KubeApiError with headers', async () => {
      handler = (req, _b, res) => {
        const u = new URL(req.url ?? '', url);
        if (u.searchParams.get('resourceVersion') === 'old') {
          return void res.writeHead(410, { 'content-type': 'application/json' }).end('{"kind":"Status","code":410,"reason":"Expired","message":"too old"}');
        }
        expect(u.searchParams.get('watch')).to.equal('true');
        res.writeHead(200, { 'content-type': 'application/json' });
        res.write(`${JSON.stringify({ type: 'ADDED', object: { metadata: { name: 'a' } } })}\n\n`);
        res.end(`${JSON.stringify({ type: 'BOOKMARK', object: { metadata: { resourceVersion: '9' } } })}\n`);
      };
      const c = new KubeClient({ server: url, source: 'test' });
      const events: string[] = [];
      const done = new Promise<unknown>((r) => void c.watch('/api/v1/pods', { resourceVersion: '5' }, (t) => events.push(t), r));
      expect(await done).to.equal(null);
      expect(events).to.deep.equal(['ADDED', 'BOOKMARK']);
      const gone = await new Promise<unknown>((r) => void c.watch('/api/v1/pods', { resourceVersion: 'old' }, () => {}, r));
      expect(statusCode(gone)).to.equal(410);
      c.close();
    });

    it('a token file is re-read after its reload interval and after a 401', async () => {
      const file = join(dir, 'token');
      writeFileSync(file, 'one\n');
      const auths: string[] = [];
      handler = (req, _b, res) => {
        auths.push(req.headers.authorization ?? '');
        res.writeHead(req.headers.authorization === 'Bearer stale' ? 401 : 200).end('{}');
      };
      let now = 0;
      const c = new KubeClient({ server: url, tokenFile: file, source: 'test' }, { now: () => now, tokenReloadMs: 60_000 });
      await c.request('GET', '/a');
      writeFileSync(file, 'two\n');
      await c.request('GET', '/a'); // still cached
      now = 60_000;
      await c.request('GET', '/a'); // reloaded
      writeFileSync(file, 'stale');
      now = 120_000;
      await c.request('GET', '/a').catch(() => undefined); // 401 with the file's stale token
      writeFileSync(file, 'three');
      await c.request('GET', '/a'); // re-read at once after the 401
      expect(auths).to.deep.equal(['Bearer one', 'Bearer one', 'Bearer two', 'Bearer stale', 'Bearer three']);
      c.close();
    });
  });
});
