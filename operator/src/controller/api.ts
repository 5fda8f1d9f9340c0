/**
 * The operator's writes, behind an interface so the reconciler is unit-tested with a fake and run
 * against the real API server (CustomObjectsApi) in e2e.
 */
import { CustomObjectsApi, PatchStrategy, setHeaderOptions, type KubeConfig } from '@kubernetes/client-node';
import type { Operation } from 'fast-json-patch';
import { GROUP, IPSET_PLURAL, NODE_PLURAL, RULESET_PLURAL, VERSION, type Condition, type NpmIPSet, type NpmRuleSet, type NpmRuleSetStatus } from '../api/types.js';

export type OurKind = 'NpmRuleSet' | 'NpmIPSet';

export interface NpmApi {
  create(kind: OurKind, obj: { metadata: { namespace?: string; name: string } }): Promise<void>;
  /** JSON patch; callers put a `test` of resourceVersion first for optimistic concurrency. */
  patch(kind: OurKind, namespace: string | undefined, name: string, ops: Operation[]): Promise<void>;
  /** Deleting what is already gone is success. */
  delete(kind: OurKind, namespace: string | undefined, name: string): Promise<void>;
  patchRuleSetStatus(namespace: string, name: string, status: NpmRuleSetStatus): Promise<void>;
  /**
   * Merge-patch an NpmNode's status conditions (the operator's AgentNotReporting verdict), guarded
   * by the resourceVersion it was computed from: a 409 when the agent wrote in between.
   */
  patchNodeConditions(name: string, conditions: Condition[], resourceVersion: string | undefined): Promise<void>;
  /** Read one object from the API server (not the cache); undefined if it does not exist. */
  get(kind: OurKind, namespace: string | undefined, name: string): Promise<NpmRuleSet | NpmIPSet | undefined>;
}

export function httpCode(err: unknown): number | undefined {
  const e = err as { code?: unknown; statusCode?: unknown; response?: { statusCode?: unknown } };
  const c = e?.code ?? e?.statusCode ?? e?.response?.statusCode;
  return typeof c === 'number' ? c : undefined;
}

const plural = (k: OurKind) => (k === 'NpmRuleSet' ? RULESET_PLURAL : IPSET_PLURAL);

export function realNpmApi(kc: KubeConfig): NpmApi {
  const api = kc.makeApiClient(CustomObjectsApi);
  return {
    async create(kind, obj) {
      const ns = obj.metadata.namespace;
      if (ns) await api.createNamespacedCustomObject({ group: GROUP, version: VERSION, namespace: ns, plural: plural(kind), body: obj });
      else await api.createClusterCustomObject({ group: GROUP, version: VERSION, plural: plural(kind), body: obj });
    },
    async patch(kind, namespace, name, ops) {
      const opt = setHeaderOptions('Content-Type', PatchStrategy.JsonPatch);
      if (namespace) await api.patchNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: plural(kind), name, body: ops }, opt);
      else await api.patchClusterCustomObject({ group: GROUP, version: VERSION, plural: plural(kind), name, body: ops }, opt);
    },
    async delete(kind, namespace, name) {
      try {
        if (namespace) await api.deleteNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: plural(kind), name });
        else await api.deleteClusterCustomObject({ group: GROUP, version: VERSION, plural: plural(kind), name });
      } catch (err) {
        if (httpCode(err) !== 404) throw err;
      }
    },
    async get(kind, namespace, name) {
      try {
        const o: unknown = namespace
          ? await api.getNamespacedCustomObject({ group: GROUP, version: VERSION, namespace, plural: plural(kind), name })
          : await api.getClusterCustomObject({ group: GROUP, version: VERSION, plural: plural(kind), name });
        return o as NpmRuleSet | NpmIPSet;
      } catch (err) {
        if (httpCode(err) === 404) return undefined;
        throw err;
      }
    },
    async patchRuleSetStatus(namespace, name, status) {
      const opt = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
      // Merge patch replaces lists whole: conditions and nodes are always sent complete.
      await api.patchNamespacedCustomObjectStatus({ group: GROUP, version: VERSION, namespace, plural: RULESET_PLURAL, name, body: { status } }, opt);
    },
    async patchNodeConditions(name, conditions, resourceVersion) {
      const opt = setHeaderOptions('Content-Type', PatchStrategy.MergePatch);
      const body = { ...(resourceVersion ? { metadata: { resourceVersion } } : {}), status: { conditions } };
      await api.patchClusterCustomObjectStatus({ group: GROUP, version: VERSION, plural: NODE_PLURAL, name, body }, opt);
    },
  };
}

