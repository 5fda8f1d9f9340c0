// framework/client.ts (the agent's API client, no @kubernetes/client-node) against a real
// kube-apiserver + etcd (hack/controlplane): paged lists, watches with bookmarks, the 404/409 codes
// the framework classifies, the patch content types, token / tokenFile / client certificate /
// in-cluster configuration, the reviews of the secure metrics endpoint and an Informer on the client.
// Not here: a real 410 Gone. The 1.35 API server serves watches and paged lists from its watch
// cache, which replays any revision it retained even after an etcd compaction (tried: compaction,
// then a continue token, a watch from revision 1 and an Exact list at revision 1 all succeed); a 410
// needs the cache window (minutes of events) to pass. The client's 410 (HTTP status and in-stream
// ERROR) is covered by test/unit/framework/client.test.ts and the informer's reaction by
// test/unit/framework/informer.test.ts.
import { execFileSync } from 'node:child_process';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { expect } from 'chai';
import type { KubernetesObject } from '@kubernetes/client-node';
import { startControlPlane, type ControlPlane } from '../support/controlplane.js';
import { KubeApiError, KubeClient, inClusterConfig, loadClientConfig, type KubeApi } from '../../operator/src/framework/client.js';
import { Informer } from '../../operator/src/framework/informer.js';
import { CORE, PatchStrategy, createObject, formatError, isConflict, isNotFound, listObjects, objectPath, patchObject, resourcePath, statusCode } from '../../operator/src/framework/kube.js';
import { kubeReviewApi } from '../../operator/src/metrics/auth.js';
import { leaseApiOf, microTime } from '../../operator/src/agent/lease.js';

const NS = 'client-e2e';
type CM = KubernetesObject & { data?: Record<string, string> };
const NPM_NODES = { group: 'kubenpm.io', version: 'v1alpha1', plural: 'npmnodes', namespaced: false, kind: 'NpmNode' };

async function waitFor(what: string, cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 25));
  }
}

/** Expect `p` to reject with a KubeApiError of HTTP `code`. */
async function rejectsWith(p: Promise<unknown>, code: number): Promise<KubeApiError> {
  try {
    await p;
  } catch (err) {
    expect(err, formatError(err)).to.be.instanceOf(KubeApiError);
    expect(statusCode(err)).to.equal(code);
    return err as KubeApiError;
  }
  throw new Error(`expected HTTP ${code}, got success`);
}

/** A watch of `path` collecting its events until `until` holds or the stream ends. */
async function watchUntil(api: KubeApi, path: string, query: Record<string, string | number | boolean>, until: (events: { type: string; obj: CM }[]) => boolean) {
  const events: { type: string; obj: CM }[] = [];
  let ended: unknown = 'open';
  const h = await api.watch(path, query, (type, obj) => events.push({ type, obj: obj as CM }), (err) => (ended = err));
  try {
    await waitFor(`watch events on ${path}`, () => until(events) || ended !== 'open', 30_000);
    return { events, ended };
  } finally {
    h.abort();
  }
}

describe('framework/client.ts against a real kube-apiserver', function () {
  this.timeout(120_000);
  let cp: ControlPlane | undefined;
  let client: KubeClient;

  before(async function () {
    this.timeout(0); // the first run builds kube-apiserver (cached afterwards)
    cp = await startControlPlane({ log: () => {} });
    client = await KubeClient.load(cp.kubeconfigPath);
    await createObject(client, CORE.namespaces, undefined, { apiVersion: 'v1', kind: 'Namespace', metadata: { name: NS } });
  });

  after(async function () {
    client?.close();
    await cp?.stop();
  });

  const plane = (): ControlPlane => {
    if (!cp) throw new Error('control plane not started');
    return cp;
  };
  const cm = (name: string, data: Record<string, string>) => ({ apiVersion: 'v1', kind: 'ConfigMap', metadata: { name, namespace: NS }, data });

  it('lists in pages (continue tokens), with one resourceVersion; kinds filled in; selectors', async () => {
    for (let i = 0; i < 7; i++) await createObject(client, CORE.configMaps, NS, { ...cm(`page-${i}`, { i: String(i) }), metadata: { name: `page-${i}`, namespace: NS, labels: { page: 'yes' } } });
    const pages: string[] = [];
    const counting: KubeApi = {
      request: async (m, p, o) => {
        pages.push(String(o?.query?.continue ?? ''));
        return client.request(m, p, o);
      },
      watch: client.watch,
    };
    const res = await listObjects<CM>(counting, CORE.configMaps, NS, { labelSelector: 'page=yes', limit: 3 });
    expect(res.items.map((o) => o.metadata?.name)).to.deep.equal([0, 1, 2, 3, 4, 5, 6].map((i) => `page-${i}`));
    expect(pages).to.have.length(3);
    expect(pages[0]).to.equal('');
    expect(pages[1]).to.not.equal('');
    expect(res.items[0]).to.include({ apiVersion: 'v1', kind: 'ConfigMap' });
    expect(Number(res.resourceVersion)).to.be.greaterThan(0);
  });

  it('watches from a resourceVersion: events in order and BOOKMARKs (allowWatchBookmarks)', async () => {
    const list = await listObjects<CM>(client, CORE.configMaps, NS);
    setTimeout(() => void createObject(client, CORE.configMaps, NS, cm('watched', { k: '1' })), 200);
    // The server sends a bookmark ahead of the watch's timeout: with 4 s, within ~2-3 s.
    const { events, ended } = await watchUntil(client, resourcePath(CORE.configMaps, NS), { resourceVersion: list.resourceVersion, allowWatchBookmarks: true, timeoutSeconds: 4 }, (ev) =>
      ev.some((e) => e.type === 'BOOKMARK'),
    );
    expect(ended === 'open' || ended === null, formatError(ended)).to.equal(true);
    expect(events.find((e) => e.type === 'ADDED')?.obj.metadata?.name).to.equal('watched');
    const bookmark = events.find((e) => e.type === 'BOOKMARK');
    expect(bookmark, JSON.stringify(events.map((e) => e.type))).to.not.equal(undefined);
    expect(Number(bookmark!.obj.metadata?.resourceVersion)).to.be.at.least(Number(list.resourceVersion));
  });

  it('a watch ends cleanly (onDone(null)) at its server-side timeout', async () => {
    const { ended } = await watchUntil(client, resourcePath(CORE.configMaps, NS), { timeoutSeconds: 1 }, () => false);
    expect(ended).to.equal(null);
  });

  it('404, 409 AlreadyExists and 409 Conflict as KubeApiError with code, Status body and headers', async () => {
    const nf = await rejectsWith(client.request('GET', objectPath(CORE.configMaps, NS, 'nope')), 404);
    expect(isNotFound(nf)).to.equal(true);
    expect(formatError(nf)).to.equal('HTTP 404 NotFound: configmaps "nope" not found');
    expect(nf.headers['content-type']).to.match(/application\/json/);
    const exists = await rejectsWith(createObject(client, CORE.configMaps, NS, cm('watched', {})), 409);
    expect(isConflict(exists)).to.equal(true);
    expect(formatError(exists)).to.match(/^HTTP 409 AlreadyExists: /);
    const cur = await client.request<CM>('GET', objectPath(CORE.configMaps, NS, 'watched'));
    await client.request('PUT', objectPath(CORE.configMaps, NS, 'watched'), { body: { ...cur, data: { k: '2' } } });
    const stale = await rejectsWith(client.request('PUT', objectPath(CORE.configMaps, NS, 'watched'), { body: { ...cur, data: { k: '3' } } }), 409);
    expect(formatError(stale)).to.match(/^HTTP 409 Conflict: .*the object has been modified/);
    // A DELETE answers the deleted object (or a Status), a 2xx either way.
    await client.request('DELETE', objectPath(CORE.configMaps, NS, 'watched'));
    await rejectsWith(client.request('DELETE', objectPath(CORE.configMaps, NS, 'watched')), 404);
  });

  it('patches with each content type: merge, JSON patch, strategic merge; a status subresource', async () => {
    await createObject(client, CORE.configMaps, NS, cm('patched', { a: '1', b: '2' }));
    let o = await patchObject<CM>(client, CORE.configMaps, NS, 'patched', { data: { b: null, c: '3' } }, PatchStrategy.MergePatch);
    expect(o.data).to.deep.equal({ a: '1', c: '3' });
    o = await patchObject<CM>(client, CORE.configMaps, NS, 'patched', [{ op: 'replace', path: '/data/a', value: 'x' }], PatchStrategy.JsonPatch);
    expect(o.data).to.deep.equal({ a: 'x', c: '3' });
    o = await patchObject<CM>(client, CORE.configMaps, NS, 'patched', { data: { d: '4' } }, PatchStrategy.StrategicMergePatch);
    expect(o.data).to.deep.equal({ a: 'x', c: '3', d: '4' });
    // A JSON patch body sent as a merge patch is refused: the content type is what we said.
    const refused = await patchObject(client, CORE.configMaps, NS, 'patched', [{ op: 'remove', path: '/data' }], PatchStrategy.MergePatch).catch((e: unknown) => e);
    expect(statusCode(refused), formatError(refused)).to.be.within(400, 499);
    // The agent's NpmNode write: status merge patch, 404 until the object exists.
    await rejectsWith(patchObject(client, NPM_NODES, undefined, 'n1', { status: { backend: 'nft' } }, PatchStrategy.MergePatch, 'status'), 404);
    await createObject(client, NPM_NODES, undefined, { apiVersion: 'kubenpm.io/v1alpha1', kind: 'NpmNode', metadata: { name: 'n1' } });
    const n = await patchObject<{ status?: { backend?: string } }>(client, NPM_NODES, undefined, 'n1', { status: { backend: 'nft' } }, PatchStrategy.MergePatch, 'status');
    expect(n.status?.backend).to.equal('nft');
  });

  it('Leases (agent/lease.ts leaseApiOf): create, read, replace; microsecond times accepted', async () => {
    const leases = leaseApiOf(client);
    const now = microTime(Date.now());
    const created = await leases.createNamespacedLease({ namespace: NS, body: { metadata: { name: 'l1', namespace: NS }, spec: { holderIdentity: 'n1', renewTime: now } } });
    const read = await leases.readNamespacedLease({ name: 'l1', namespace: NS });
    expect(read.metadata?.resourceVersion).to.equal(created.metadata?.resourceVersion);
    expect(String(read.spec?.renewTime)).to.match(/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/);
    await leases.replaceNamespacedLease({ name: 'l1', namespace: NS, body: { ...read, spec: { ...read.spec, holderIdentity: 'n2' } } });
    expect(isConflict(await leases.replaceNamespacedLease({ name: 'l1', namespace: NS, body: read }).catch((e: unknown) => e))).to.equal(true);
  });

  describe('authentication and configuration', () => {
    let dir: string;
    const server = () => plane().server;
    const caData = () => Buffer.from(plane().caPem).toString('base64');
    const kubeconfig = (name: string, user: Record<string, unknown>, cluster: Record<string, unknown> = { server: server(), 'certificate-authority-data': caData() }): string => {
      const path = join(dir, name);
      writeFileSync(path, JSON.stringify({ apiVersion: 'v1', kind: 'Config', clusters: [{ name: 'c', cluster }], users: [{ name: 'u', user }], contexts: [{ name: 'x', context: { cluster: 'c', user: 'u' } }], 'current-context': 'x' }), { mode: 0o600 });
      return path;
    };
    const whoami = async (c: KubeClient): Promise<string | undefined> =>
      (await c.request<{ status?: { userInfo?: { username?: string } } }>('POST', '/apis/authentication.k8s.io/v1/selfsubjectreviews', { body: { apiVersion: 'authentication.k8s.io/v1', kind: 'SelfSubjectReview' } })).status?.userInfo?.username;

    before(() => {
      dir = join(plane().dir, 'client-e2e');
      mkdirSync(dir, { recursive: true });
      // A client certificate signed by the API server's client CA (up.sh: --client-ca-file=pki/ca.crt).
      const pki = join(plane().dir, 'pki');
      execFileSync('openssl', ['req', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'client.key'), '-out', join(dir, 'client.csr'), '-subj', '/O=system:masters/CN=client-e2e-cert'], { stdio: 'ignore' });
      execFileSync('openssl', ['x509', '-req', '-in', join(dir, 'client.csr'), '-CA', join(pki, 'ca.crt'), '-CAkey', join(pki, 'ca.key'), '-CAcreateserial', '-out', join(dir, 'client.crt'), '-days', '1'], { stdio: 'ignore' });
    });

    it('token: authenticated as the token user; a wrong token is 401', async () => {
      const ok = await KubeClient.load(kubeconfig('token', { token: plane().token }));
      expect(await whoami(ok)).to.be.a('string');
      ok.close();
      const bad = await KubeClient.load(kubeconfig('bad-token', { token: 'not-a-token' }));
      await rejectsWith(bad.request('GET', '/api/v1/namespaces'), 401);
      bad.close();
    });

    it('tokenFile: read at first use and again after a 401 (a rotated token)', async () => {
      const file = join(dir, 'token-file');
      writeFileSync(file, 'stale-token\n');
      const c = await KubeClient.load(kubeconfig('token-file.kubeconfig', { tokenFile: 'token-file' })); // relative to the kubeconfig's folder
      await rejectsWith(c.request('GET', '/api/v1/namespaces'), 401);
      writeFileSync(file, `${plane().token}\n`);
      expect((await c.request<{ items: unknown[] }>('GET', '/api/v1/namespaces')).items.length).to.be.greaterThan(0);
      c.close();
    });

    it('client certificate: files (relative paths) and inline data; the user is the certificate CN', async () => {
      const files = await KubeClient.load(kubeconfig('cert-files', { 'client-certificate': 'client.crt', 'client-key': 'client.key' }));
      expect(await whoami(files)).to.equal('client-e2e-cert');
      files.close();
      const { readFileSync } = await import('node:fs');
      const data = await KubeClient.load(
        kubeconfig('cert-data', { 'client-certificate-data': readFileSync(join(dir, 'client.crt')).toString('base64'), 'client-key-data': readFileSync(join(dir, 'client.key')).toString('base64') }),
      );
      expect(await whoami(data)).to.equal('client-e2e-cert');
      data.close();
    });

    it('TLS: an unknown CA is refused; insecure-skip-tls-verify connects anyway', async () => {
      const strict = await KubeClient.load(kubeconfig('no-ca', { token: plane().token }, { server: server() }));
      const err = await strict.request('GET', '/version').catch((e: unknown) => e);
      expect(formatError(err)).to.match(/self[- ]signed|unable to verify|certificate/i);
      strict.close();
      const loose = await KubeClient.load(kubeconfig('insecure', { token: plane().token }, { server: server(), 'insecure-skip-tls-verify': true }));
      expect(await loose.request<{ major?: string }>('GET', '/version')).to.have.property('major');
      loose.close();
    });

    it('in-cluster: KUBERNETES_SERVICE_HOST/PORT, the service-account token and ca.crt', async () => {
      const sa = join(dir, 'serviceaccount');
      mkdirSync(sa, { recursive: true });
      writeFileSync(join(sa, 'token'), plane().token);
      writeFileSync(join(sa, 'ca.crt'), plane().caPem);
      const u = new URL(server());
      const cfg = await inClusterConfig({ KUBERNETES_SERVICE_HOST: u.hostname, KUBERNETES_SERVICE_PORT: u.port }, sa);
      const c = new KubeClient(cfg);
      expect(await whoami(c)).to.be.a('string');
      c.close();
      // And what loadClientConfig picks without any kubeconfig.
      const picked = await loadClientConfig({ env: { KUBERNETES_SERVICE_HOST: u.hostname, KUBERNETES_SERVICE_PORT: u.port }, home: join(dir, 'no-home') }).catch((e: unknown) => e);
      expect(formatError(picked)).to.match(/serviceaccount\/ca\.crt|in-cluster/);
    });

    it('metrics reviews (metrics/auth.ts kubeReviewApi): TokenReview and SubjectAccessReview', async () => {
      const reviews = kubeReviewApi(client);
      const user = await reviews.tokenReview(plane().token);
      expect(user?.username).to.be.a('string');
      expect(await reviews.canGet(user!, '/node-metrics')).to.equal(true); // system:masters
      expect(await reviews.tokenReview('not-a-token')).to.equal(undefined);
      expect(await reviews.canGet({ username: 'nobody', groups: [] }, '/node-metrics')).to.equal(false);
    });
  });

  it('an Informer on the client: list, watch, re-watch after server timeouts, stop', async () => {
    const logs: string[] = [];
    const inf = new Informer<CM>({ kc: client, resource: CORE.configMaps, namespace: NS, resyncMs: 0, watchTimeoutSeconds: 2, log: (m) => logs.push(m) });
    const events: string[] = [];
    inf.onAdd((o) => void events.push(`add ${o.metadata?.name}`));
    inf.onDelete((o) => void events.push(`delete ${o.metadata?.name}`));
    await inf.start();
    try {
      expect(inf.get(`${NS}/patched`)?.kind).to.equal('ConfigMap');
      await createObject(client, CORE.configMaps, NS, cm('informed', {}));
      await waitFor('add informed', () => events.includes('add informed'));
      await new Promise((r) => setTimeout(r, 4500)); // outlive two server-side timeouts: re-watch from lastRV
      await client.request('DELETE', objectPath(CORE.configMaps, NS, 'informed'));
      await waitFor('delete informed', () => events.includes('delete informed'));
      expect(logs.filter((l) => /failed/.test(l)), logs.join('\n')).to.deep.equal([]);
    } finally {
      await inf.stop();
    }
  });
});
