/**
 * The framework's KubeApi (framework/client.ts) over @kubernetes/client-node's KubeConfig: the
 * operator's transport. Only framework/kube.ts kubeApi() loads this module, and only when it is
 * handed a KubeConfig, so a process that never makes a KubeConfig (the agent) never loads
 * client-node.
 *
 * Objects travel as plain JSON (list, watch, patch responses). client-node's typed API classes
 * deserialize timestamps into Date objects while its Watch hands out raw JSON; mixing both in one
 * cache makes `old` and `new` objects differ in shape. `NodeRawApi` therefore reuses client-node's
 * request pipeline (auth, TLS, proxies, middleware) but returns the parsed body untouched.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest, type Agent } from 'node:https';
import {
  ApiException,
  HttpMethod,
  KubernetesObjectApi,
  type KubeConfig,
  type KubernetesObject,
  type RequestContext,
  type ResponseContext,
} from '@kubernetes/client-node';
import { streamWatch, type KubeApi, type Method, type RequestOptions, type WatchFn } from './client.js';

/**
 * client-node's request pipeline with the body returned as parsed JSON (no model deserialization).
 * Errors are ApiException { code, body: string, headers } like every other client-node call.
 */
class NodeRawApi extends KubernetesObjectApi {
  async request<R = unknown>(method: Method, path: string, opts: RequestOptions = {}): Promise<R> {
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

/** KubeApi over client-node: its request pipeline, and a watch on its auth/TLS options. */
export function clientNodeApi(kc: KubeConfig): KubeApi {
  const raw = kc.makeApiClient(NodeRawApi);
  return { request: (method, path, opts) => raw.request(method, path, opts), watch: clientNodeWatch(kc) };
}

/**
 * client-node's request setup (auth, TLS, proxy agent via applyToFetchOptions) with our own HTTP
 * request: client-node's Watch drops the response headers and body of an error status, and the
 * informer needs Retry-After from them. Same contract as Watch.watch: resolves once the response
 * head arrived (or the request failed), onDone exactly once.
 */
function clientNodeWatch(kc: KubeConfig): WatchFn {
  return async (path, query, onEvent, onDone) => {
    const cluster = kc.getCurrentCluster();
    if (!cluster) throw new Error('no current cluster in the kubeconfig');
    const url = new URL(cluster.server + path);
    url.searchParams.set('watch', 'true');
    for (const [k, v] of Object.entries(query)) if (v !== undefined) url.searchParams.set(k, String(v));
    const init = await kc.applyToFetchOptions({});
    const headers: Record<string, string> = { accept: 'application/json' };
    (init.headers as unknown as { forEach(cb: (v: string, k: string) => void): void } | undefined)?.forEach((v, k) => (headers[k] = v));
    const send = url.protocol === 'https:' ? httpsRequest : httpRequest;
    return streamWatch(() => send(url, { method: 'GET', headers, agent: init.agent as Agent | undefined }), 'watch request failed', onEvent, onDone);
  };
}
