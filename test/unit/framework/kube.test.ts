/** Paths, keys and error classification. */
import { expect } from 'chai';
import { ApiException } from '@kubernetes/client-node';
import { CORE, apiVersionOf, formatError, isConflict, isGone, isNotFound, objectKey, objectPath, resourcePath, splitKey, statusCode } from '../../../operator/src/framework/kube.js';
import { WatchStatusError } from '../../../operator/src/framework/informer.js';
import { Backoff } from '../../../operator/src/framework/backoff.js';
import { KubeApiError } from '../../../operator/src/framework/client.js';
import { httpError } from './fakes.js';

const nrs = { group: 'kubenpm.io', version: 'v1alpha1', plural: 'npmrulesets', namespaced: true, kind: 'NpmRuleSet' };
const nips = { group: 'kubenpm.io', version: 'v1alpha1', plural: 'npmipsets', namespaced: false, kind: 'NpmIPSet' };

describe('framework kube helpers', () => {
  it('builds collection and object paths for core, group, namespaced and cluster resources', () => {
    expect(resourcePath(CORE.pods)).to.equal('/api/v1/pods');
    expect(resourcePath(CORE.pods, 'prod')).to.equal('/api/v1/namespaces/prod/pods');
    expect(resourcePath(CORE.namespaces)).to.equal('/api/v1/namespaces');
    expect(resourcePath(CORE.networkPolicies, 'a b')).to.equal('/apis/networking.k8s.io/v1/namespaces/a%20b/networkpolicies');
    expect(resourcePath(nips)).to.equal('/apis/kubenpm.io/v1alpha1/npmipsets');
    expect(() => resourcePath(nips, 'x')).to.throw(/cluster-scoped/);
    expect(objectPath(nrs, 'prod', 'web', 'status')).to.equal('/apis/kubenpm.io/v1alpha1/namespaces/prod/npmrulesets/web/status');
    expect(objectPath(CORE.namespaces, undefined, 'prod')).to.equal('/api/v1/namespaces/prod');
    expect(() => objectPath(nrs, undefined, 'web')).to.throw(/namespaced/);
    expect(apiVersionOf(CORE.pods)).to.equal('v1');
    expect(apiVersionOf(CORE.leases)).to.equal('coordination.k8s.io/v1');
  });

  it('makes and splits object keys', () => {
    expect(objectKey({ metadata: { namespace: 'prod', name: 'web' } })).to.equal('prod/web');
    expect(objectKey({ metadata: { name: 'prod' } })).to.equal('prod');
    expect(splitKey('prod/web')).to.deep.equal({ namespace: 'prod', name: 'web' });
    expect(splitKey('prod')).to.deep.equal({ name: 'prod' });
  });

  it('classifies ApiException, watch HTTP errors and in-stream Status errors', () => {
    const notFound = new ApiException(404, 'HTTP-Code: 404', '{"kind":"Status","code":404,"reason":"NotFound","message":"leases \\"x\\" not found"}', {});
    expect(isNotFound(notFound)).to.equal(true);
    expect(isConflict(new ApiException(409, '', '', {}))).to.equal(true);
    expect(isGone(httpError(410))).to.equal(true);
    expect(isGone(new WatchStatusError({ kind: 'Status', code: 410, reason: 'Expired' }))).to.equal(true);
    expect(statusCode(new Error('x'))).to.equal(undefined);
    expect(isNotFound('404')).to.equal(false);
    expect(formatError(notFound)).to.equal('HTTP 404 NotFound: leases "x" not found');
    expect(formatError(new ApiException(502, '', '<html>bad gateway</html>', {}))).to.equal('HTTP 502: <html>bad gateway</html>');
    expect(formatError(httpError(500, 'Internal Server Error'))).to.equal('HTTP 500 Internal Server Error');
    expect(formatError(new Error('outer', { cause: notFound }))).to.equal('outer (cause: HTTP 404 NotFound: leases "x" not found)');
    expect(formatError('plain')).to.equal('plain');
  });

  it('classifies KubeApiError (framework/client.ts) like ApiException; system error codes are not HTTP statuses', () => {
    const nf = new KubeApiError(404, '{"kind":"Status","code":404,"reason":"NotFound","message":"pods \\"x\\" not found"}', { 'content-type': 'application/json' }, 'GET /api/v1/namespaces/a/pods/x');
    expect(isNotFound(nf)).to.equal(true);
    expect(statusCode(new KubeApiError(409, '', {}, 'PUT /x'))).to.equal(409);
    expect(formatError(nf)).to.equal('HTTP 404 NotFound: pods "x" not found');
    expect(formatError(new KubeApiError(502, '<html>bad gateway</html>', {}, 'GET /x'))).to.equal('HTTP 502: <html>bad gateway</html>');
    expect(statusCode(Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }))).to.equal(undefined);
  });

  it('Backoff doubles up to the cap and resets', () => {
    const b = new Backoff({ initialMs: 100, maxMs: 1000 });
    expect([b.next(), b.next(), b.next(), b.next(), b.next()]).to.deep.equal([100, 200, 400, 800, 1000]);
    for (let i = 0; i < 200; i++) b.next();
    expect(b.next()).to.equal(1000);
    b.reset();
    expect(b.next()).to.equal(100);
    const j = new Backoff({ initialMs: 100, maxMs: 1000, jitter: 0.5, random: () => 1 });
    expect(j.next()).to.equal(50);
  });
});
