/**
 * The agent DaemonSet: its one definition (`agentDaemonSet`) and a manager that keeps it in place.
 *
 * Why this exists: an OLM bundle cannot carry a DaemonSet, so when kube-npm is installed through
 * OLM the operator creates the agent DaemonSet itself (`kube-npm operator --manage-agent-daemonset
 * --agent-image IMAGE`). config/agent/daemonset.yaml is the same object rendered by this function
 * (test/unit/install checks that the kustomize output equals it, modulo namespace), so a kustomize
 * install and an OLM install run identical agents.
 *
 * Model of AgentDaemonSetManager
 *  - An Informer watches exactly one object (fieldSelector metadata.name=<name> in <namespace>, so
 *    RBAC can restrict every verb but create to that resourceName).
 *  - Any event on it, the informer's periodic relist and the periodic run of its Runner
 *    (framework/runner.ts) request a reconcile; one runs at a time. A reconcile compares the desired object with the cached
 *    one (`isSubset`: every field we set has our value; fields the API server defaults or other
 *    actors add are ignored) and, if they differ or the object is missing, applies it.
 *  - Writes are server-side apply with fieldManager 'kube-npm-operator' and force=true. Why SSA
 *    here when ADR 0004 chose JSON patches for our CRs: this is one small object written rarely
 *    (install, upgrade, someone's edit), not a hot path, so bytes do not matter; apply creates or
 *    updates in one idempotent request without a read-modify-write race, and managedFields show
 *    `kubectl` users which fields the operator owns. force=true because the operator is the
 *    declared owner of this object: a manual `kubectl edit` of the image is a conflict we resolve
 *    in our favour (that is the point of reconciling). Fields others add and we never set
 *    (an extra annotation, say) are left alone, as SSA intends.
 *  - A failed apply is retried by the Runner after the framework Backoff (1 s .. 60 s); the retry is a
 *    new reconcile against the cache as it is then. Success resets the backoff.
 *  - Ownership: a namespaced object cannot be owned by a cluster-scoped one, and the DaemonSet must
 *    outlive any single operator pod, so it is owned by the operator's Deployment when
 *    `ownerDeployment` is given (GC then removes the agents when the operator is uninstalled, which
 *    is what OLM expects); otherwise it carries only our labels.
 *  - stop() stops the informer and the runner and waits for a running reconcile. It never deletes the
 *    DaemonSet: the agents keep enforcing while the operator restarts.
 * Effects: the KubeConfig (AppsV1Api, Informer) and the injected Clock.
 */
import {
  AppsV1Api,
  PatchStrategy,
  setHeaderOptions,
  type KubeConfig,
  type V1DaemonSet,
  type V1OwnerReference,
  type V1ResourceRequirements,
} from '@kubernetes/client-node';
import { realClock, type Clock } from '../framework/backoff.js';
import { Informer } from '../framework/informer.js';
import { formatError, objectKey, type ResourceRef } from '../framework/kube.js';
import { Runner } from '../framework/runner.js';

export const AGENT_DAEMONSET_NAME = 'kube-npm-agent';
export const AGENT_SERVICE_ACCOUNT = 'kube-npm-agent';
/** The ConfigMap of documented options (config/manager/configmap.yaml). */
export const OPTIONS_CONFIGMAP = 'kube-npm-options';
export const DEFAULT_IMAGE = 'ghcr.io/kube-npm/kube-npm:0.1.0';
export const DEFAULT_NAMESPACE = 'kube-npm-system';
export const FIELD_MANAGER = 'kube-npm-operator';
export const METRICS_PORT = 10091;
/** Plain-HTTP /healthz and /readyz (metrics are HTTPS with authorization: metrics/serve.ts). */
export const HEALTH_PORT = 10092;
export const AGENT_LABELS = { 'app.kubernetes.io/name': 'kube-npm', 'app.kubernetes.io/component': 'agent' } as const;

const DAEMONSETS: ResourceRef = { group: 'apps', version: 'v1', plural: 'daemonsets', namespaced: true, kind: 'DaemonSet' };

export interface AgentDaemonSetOptions {
  namespace?: string;
  image?: string;
  name?: string;
  serviceAccountName?: string;
  configMapName?: string;
  resources?: V1ResourceRequirements;
  /** Owner of the DaemonSet (the operator's Deployment); none by default. */
  owner?: V1OwnerReference;
}

/** An option of the ConfigMap passed to the agent as an env var (for `$(VAR)` in args). */
const option = (env: string, key: string, configMap: string) => ({ name: env, valueFrom: { configMapKeyRef: { name: configMap, key } } });

/**
 * The agent DaemonSet. Pure: the same options give the same object. Plain JSON (no Dates), in the
 * field order kubectl prints, so it can be compared with what kustomize renders.
 */
export function agentDaemonSet(opts: AgentDaemonSetOptions = {}): V1DaemonSet {
  const name = opts.name ?? AGENT_DAEMONSET_NAME;
  const cm = opts.configMapName ?? OPTIONS_CONFIGMAP;
  const labels = { ...AGENT_LABELS };
  const metadata: V1DaemonSet['metadata'] = { name, namespace: opts.namespace ?? DEFAULT_NAMESPACE, labels: { ...labels, 'app.kubernetes.io/managed-by': 'kube-npm' } };
  if (opts.owner) metadata.ownerReferences = [opts.owner];
  return {
    apiVersion: 'apps/v1',
    kind: 'DaemonSet',
    metadata,
    spec: {
      selector: { matchLabels: { ...labels } },
      // Stopping an agent keeps its kernel state (rules stay enforced), so a rolling update may take
      // several nodes at once.
      updateStrategy: { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: '10%' } },
      template: {
        metadata: { labels: { ...labels } },
        spec: {
          serviceAccountName: opts.serviceAccountName ?? AGENT_SERVICE_ACCOUNT,
          // The agent programs the node's own network namespace and serves node metrics on the node.
          hostNetwork: true,
          dnsPolicy: 'ClusterFirstWithHostNet',
          priorityClassName: 'system-node-critical',
          // Every node, whatever its taints: an unprotected node is a policy hole.
          tolerations: [{ operator: 'Exists' }],
          terminationGracePeriodSeconds: 30,
          containers: [
            {
              name: 'agent',
              image: opts.image ?? DEFAULT_IMAGE,
              imagePullPolicy: 'IfNotPresent',
              // `--flag value`, not `--flag=value`: `kube-npm agent` parses only the former.
              args: [
                'agent',
                '--node-name', '$(NODE_NAME)',
                '--metrics-bind-address', '$(METRICS_BIND_ADDRESS)',
                '--backend', '$(BACKEND)',
                '--resync-seconds', '$(RESYNC_SECONDS)',
                '--min-sync-interval-ms', '$(MIN_SYNC_INTERVAL_MS)',
              ],
              env: [
                { name: 'NODE_NAME', valueFrom: { fieldRef: { fieldPath: 'spec.nodeName' } } },
                // The liveness Lease lives in the agent's own namespace (agent/lease.ts).
                { name: 'POD_NAMESPACE', valueFrom: { fieldRef: { fieldPath: 'metadata.namespace' } } },
                // Memory (docs/scale.md, "Memory: node flags"). V8 grows its young generation to
                // 16 MiB per semi-space after the initial lists' burst and keeps it: capped at 2 MiB.
                // An old-space limit under 256 MiB makes V8 grow the old space by 1.3x its live
                // size instead of up to 4x (heap growing factor), and the limit is above what the
                // container may hold anyway (256Mi). Together ~30 MiB less RSS at the same CPU.
                { name: 'NODE_OPTIONS', value: '--max-semi-space-size=2 --max-old-space-size=256' },
                // glibc's malloc keeps an arena per thread (V8's compiler and GC threads) and what
                // was freed in it: two arenas take ~5 MiB off the RSS.
                { name: 'MALLOC_ARENA_MAX', value: '2' },
                option('METRICS_BIND_ADDRESS', 'agent-metrics-bind-address', cm),
                option('BACKEND', 'agent-backend', cm),
                option('RESYNC_SECONDS', 'agent-resync-seconds', cm),
                option('MIN_SYNC_INTERVAL_MS', 'agent-min-sync-interval-ms', cm),
              ],
              ports: [
                { name: 'metrics', containerPort: METRICS_PORT, protocol: 'TCP' },
                { name: 'health', containerPort: HEALTH_PORT, protocol: 'TCP' },
              ],
              livenessProbe: { httpGet: { path: '/healthz', port: 'health' }, initialDelaySeconds: 10, periodSeconds: 20, failureThreshold: 3 },
              readinessProbe: { httpGet: { path: '/readyz', port: 'health' }, periodSeconds: 10, failureThreshold: 3 },
              resources: opts.resources ?? { requests: { cpu: '50m', memory: '64Mi' }, limits: { memory: '256Mi' } },
              // Root for netlink and the xtables lock, but only the two capabilities iptables,
              // ipset and conntrack need; no privilege escalation, nothing written but the lock.
              securityContext: {
                runAsUser: 0,
                runAsNonRoot: false,
                privileged: false,
                allowPrivilegeEscalation: false,
                readOnlyRootFilesystem: true,
                capabilities: { drop: ['ALL'], add: ['NET_ADMIN', 'NET_RAW'] },
                seccompProfile: { type: 'RuntimeDefault' },
              },
              volumeMounts: [{ name: 'xtables-lock', mountPath: '/run/xtables.lock' }],
            },
          ],
          // The lock iptables-legacy and kube-proxy share: one writer at a time on the node.
          volumes: [{ name: 'xtables-lock', hostPath: { path: '/run/xtables.lock', type: 'FileOrCreate' } }],
        },
      },
    },
  };
}

/**
 * True when every field of `want` is in `have` with the same value. Objects: key by key; arrays:
 * same length and element-wise (our lists are small and ordered; a length change means someone
 * added or removed an entry we set); scalars: strict equality.
 */
export function isSubset(want: unknown, have: unknown): boolean {
  if (want === null || typeof want !== 'object') return want === have;
  if (Array.isArray(want)) {
    return Array.isArray(have) && have.length === want.length && want.every((w, i) => isSubset(w, have[i]));
  }
  if (have === null || typeof have !== 'object' || Array.isArray(have)) return false;
  const h = have as Record<string, unknown>;
  return Object.entries(want as Record<string, unknown>).every(([k, v]) => v === undefined || isSubset(v, h[k]));
}

export interface AgentDaemonSetManagerOptions extends AgentDaemonSetOptions {
  kc: KubeConfig;
  namespace: string;
  image: string;
  log?: (msg: string) => void;
  /**
   * The operator's Deployment (its name, e.g. from the OWNER_DEPLOYMENT env var): its uid is read
   * once at start and the DaemonSet is owned by it.
   */
  ownerDeployment?: string;
  /** Reconcile at least this often even without events; default 60 s. */
  resyncMs?: number;
  clock?: Clock;
  /** Injected apply (unit tests); default server-side apply through AppsV1Api. */
  apply?: (ds: V1DaemonSet) => Promise<void>;
}

export class AgentDaemonSetManager {
  private readonly informer: Informer<V1DaemonSet>;
  private readonly api: AppsV1Api;
  private readonly log: (msg: string) => void;
  private readonly clock: Clock;
  private readonly runner: Runner;
  private desired: V1DaemonSet | undefined;
  /** Applies so far (tests and logs). */
  applies = 0;

  constructor(private readonly o: AgentDaemonSetManagerOptions) {
    this.log = o.log ?? ((m) => void process.stderr.write(`${m}\n`));
    this.clock = o.clock ?? realClock;
    this.api = o.kc.makeApiClient(AppsV1Api);
    const name = o.name ?? AGENT_DAEMONSET_NAME;
    this.informer = new Informer<V1DaemonSet>({
      kc: o.kc,
      resource: DAEMONSETS,
      namespace: o.namespace,
      fieldSelector: `metadata.name=${name}`,
      resyncMs: o.resyncMs ?? 60_000,
      log: this.log,
      clock: this.clock,
    });
    this.runner = new Runner({
      name: 'agent daemonset',
      run: () => this.reconcile(),
      clock: this.clock,
      maxIntervalMs: o.resyncMs ?? 60_000,
      backoff: { initialMs: 1000, maxMs: 60_000 },
      onError: (err, delay) => this.log(`agent daemonset: apply failed, retrying in ${delay} ms: ${formatError(err)}`),
    });
    const kick = () => this.kick();
    this.informer.onAdd(kick);
    this.informer.onUpdate(kick);
    this.informer.onDelete(kick);
  }

  /** Resolves once the DaemonSet has been checked (and applied if needed) once. */
  async start(): Promise<void> {
    let owner: V1OwnerReference | undefined;
    if (this.o.ownerDeployment) {
      const d = await this.api.readNamespacedDeployment({ name: this.o.ownerDeployment, namespace: this.o.namespace });
      if (!d.metadata?.uid) throw new Error(`deployment ${this.o.namespace}/${this.o.ownerDeployment} has no uid`);
      owner = { apiVersion: 'apps/v1', kind: 'Deployment', name: this.o.ownerDeployment, uid: d.metadata.uid, controller: true };
    }
    this.desired = agentDaemonSet({ ...this.o, owner });
    await this.informer.start();
    this.runner.start();
    this.kick();
    // Until a reconcile succeeded (failures are retried) or stop().
    await this.runner.settled({ retries: true });
  }

  async stop(): Promise<void> {
    await this.informer.stop();
    await this.runner.stop();
  }

  /** The DaemonSet as last seen by the informer. */
  current(): V1DaemonSet | undefined {
    return this.informer.list()[0];
  }

  /** Ask for a reconcile (the runner coalesces and serialises them). */
  private kick(): void {
    if (this.desired) this.runner.run();
  }

  private async reconcile(): Promise<void> {
    const desired = this.desired!;
    const live = this.informer.get(objectKey(desired));
    if (live && isSubset(desired, live)) return;
    this.log(`agent daemonset ${objectKey(desired)}: ${live ? 'differs from the desired spec; re-applying' : 'missing; creating'}`);
    await (this.o.apply ?? ((ds) => this.serverSideApply(ds)))(desired);
    this.applies++;
  }

  private async serverSideApply(ds: V1DaemonSet): Promise<void> {
    await this.api.patchNamespacedDaemonSet(
      { name: ds.metadata!.name!, namespace: ds.metadata!.namespace!, body: ds, fieldManager: FIELD_MANAGER, force: true },
      setHeaderOptions('Content-Type', PatchStrategy.ServerSideApply),
    );
  }
}
