/**
 * The sandbox's "netns kubelet", in-process in the supervisor:
 *  - registers the Node objects n1..nN (podCIDR, InternalIP, Ready);
 *  - binds unscheduled pods (spec.nodeName empty) to a node, round-robin, through pods/binding;
 *  - for each pod bound to a sandbox node: allocates an IP from the node's /24, creates the pod's
 *    network namespace + veth on the node bridge, starts podserver.mjs in it listening on every
 *    declared containerPort (TCP, UDP; SCTP is skipped with a log line), then writes the status
 *    (Running, podIP(s), hostIP, conditions, containerStatuses) through the status subresource;
 *  - when a pod is deleted, or gets a deletionTimestamp (then it deletes the object with
 *    gracePeriodSeconds 0 afterwards, as a kubelet would): kills the server, deletes the
 *    namespace, frees the IP.
 * Level-based: one work-queue key per pod, the worker re-reads the informer cache.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import type { KubeConfig, KubernetesObject } from '@kubernetes/client-node';
import { Informer } from '../framework/informer.js';
import { CORE, RawApi, formatError, isConflict, isNotFound, objectPath, splitKey } from '../framework/kube.js';
import { WorkQueue } from '../framework/queue.js';
import { deleteNetns, inNetns, sanitizeLabel, type CommandRunner } from './netns.js';
import { NodeIpam, nodeUnderlayIp, type Topology } from './topology.js';
import { procRef, type PodState } from './state.js';

interface ContainerPort {
  containerPort: number;
  protocol?: string;
  name?: string;
}
export interface Pod extends KubernetesObject {
  spec?: { nodeName?: string; hostNetwork?: boolean; containers?: { name: string; image?: string; ports?: ContainerPort[] }[] };
  status?: { phase?: string; podIP?: string };
}

export interface KubeletOptions {
  kc: KubeConfig;
  topology: Topology;
  runner: CommandRunner;
  /** Path of podserver.mjs. */
  podServer: string;
  log: (msg: string) => void;
  /** Called after every change of the local pod table (the supervisor persists it). */
  onChange: () => void;
  /** How long a pod server may take to listen; default 10 s. */
  serverReadyTimeoutMs?: number;
}

interface LocalPod extends PodState {
  child?: ChildProcess;
  tcp: number[];
  udp: number[];
}

const NODE_REF = { group: '', version: 'v1', plural: 'nodes', namespaced: false, kind: 'Node' } as const;

export class NetnsKubelet {
  private readonly api: RawApi;
  private readonly informer: Informer<Pod>;
  private readonly queue: WorkQueue;
  private readonly local = new Map<string, LocalPod>();
  private readonly ipam = new Map<number, NodeIpam>();
  private seq = 0;
  private nextNode = 0;
  private stopped = false;

  constructor(private readonly o: KubeletOptions) {
    this.api = RawApi.forConfig(o.kc);
    for (const n of o.topology.nodes()) this.ipam.set(n.index, new NodeIpam(n.index));
    this.informer = new Informer<Pod>({ kc: o.kc, resource: CORE.pods, log: o.log, resyncMs: 60_000 });
    this.queue = new WorkQueue({ name: 'kubelet', worker: (k) => this.sync(k), concurrency: 4, log: o.log });
    const add = (p: Pod) => this.queue.add(`${p.metadata?.namespace}/${p.metadata?.name}`);
    this.informer.onAdd(add);
    this.informer.onUpdate(add);
    this.informer.onDelete(add);
  }

  /** Creates (or updates) the Node objects and marks them Ready. */
  async registerNodes(): Promise<void> {
    const now = new Date().toISOString();
    for (const n of this.o.topology.nodes()) {
      const body = {
        apiVersion: 'v1',
        kind: 'Node',
        metadata: { name: n.name, labels: { 'kubernetes.io/hostname': n.name, 'kubernetes.io/os': 'linux', 'kubenpm.io/sandbox': 'true' } },
        spec: { podCIDR: n.podSubnet, podCIDRs: [n.podSubnet] },
      };
      try {
        await this.api.request('POST', '/api/v1/nodes', { body });
      } catch (err) {
        if (!isConflict(err)) throw err;
      }
      const status = {
        status: {
          addresses: [{ type: 'InternalIP', address: n.underlayIp }, { type: 'Hostname', address: n.name }],
          conditions: [{ type: 'Ready', status: 'True', reason: 'SandboxReady', message: `network namespace ${n.ns}`, lastHeartbeatTime: now, lastTransitionTime: now }],
          nodeInfo: { kubeletVersion: 'kube-npm-sandbox', operatingSystem: 'linux', architecture: process.arch, containerRuntimeVersion: 'netns://', kernelVersion: '', osImage: 'kube-npm sandbox', kubeProxyVersion: '', machineID: '', systemUUID: '', bootID: '' },
        },
      };
      await this.api.request('PATCH', objectPath(NODE_REF, undefined, n.name, 'status'), { body: status, contentType: 'application/merge-patch+json' });
    }
  }

  async start(): Promise<void> {
    this.queue.start();
    await this.informer.start();
  }

  /** Stops watching; the pods' namespaces stay until teardownAll(). */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.informer.stop();
    await this.queue.stop();
  }

  pods(): PodState[] {
    return [...this.local.values()].map(({ key, uid, node, ip, netns, hostIf, server }) => ({ key, uid, node, ip, netns, hostIf, ...(server ? { server } : {}) }));
  }

  /** Pods of the cache that are Running with an IP (as seen by the API server). */
  runningKeys(): string[] {
    return this.informer
      .list()
      .filter((p) => p.status?.phase === 'Running' && p.status.podIP)
      .map((p) => `${p.metadata?.namespace}/${p.metadata?.name}`);
  }

  /** Kills every pod server and deletes every pod namespace. */
  async teardownAll(): Promise<void> {
    const all = [...this.local.values()];
    for (const p of all) p.child?.kill('SIGKILL');
    await deleteNetns(all.map((p) => p.netns), this.o.runner);
    for (const p of all) this.forget(p);
  }

  // ---------------------------------------------------------------- reconcile

  private async sync(key: string): Promise<void> {
    if (this.stopped) return;
    const pod = this.informer.get(key);
    const mine = this.local.get(key);
    if (!pod) {
      if (mine) await this.teardown(mine, 'deleted');
      return;
    }
    const uid = pod.metadata?.uid ?? '';
    if (mine && mine.uid !== uid) await this.teardown(mine, 'replaced by a new pod of the same name');
    if (pod.metadata?.deletionTimestamp) {
      const cur = this.local.get(key);
      if (cur) await this.teardown(cur, 'deleting');
      await this.deleteObject(key, uid);
      return;
    }
    const nodeName = pod.spec?.nodeName;
    if (!nodeName) {
      await this.bind(key, pod);
      return;
    }
    const k = this.o.topology.nodeIndex(nodeName);
    if (k === undefined) return; // not one of ours
    if (pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return;
    let cur = this.local.get(key);
    if (!cur) {
      if (pod.spec?.hostNetwork) {
        await this.writeStatus(key, pod, nodeUnderlayIp(k), k);
        return;
      }
      cur = await this.createPod(key, uid, k, pod);
    }
    if (pod.status?.phase !== 'Running' || pod.status.podIP !== cur.ip) await this.writeStatus(key, pod, cur.ip, k);
  }

  private async bind(key: string, pod: Pod): Promise<void> {
    const nodes = this.o.topology.nodes();
    const node = nodes[this.nextNode++ % nodes.length]!;
    const { namespace, name } = splitKey(key);
    try {
      await this.api.request('POST', objectPath(CORE.pods, namespace, name, 'binding'), {
        body: { apiVersion: 'v1', kind: 'Binding', metadata: { name, namespace, uid: pod.metadata?.uid }, target: { apiVersion: 'v1', kind: 'Node', name: node.name } },
      });
      this.o.log(`pod ${key}: bound to ${node.name}`);
    } catch (err) {
      if (isConflict(err) || isNotFound(err)) return; // bound meanwhile, or gone
      throw err;
    }
  }

  private async createPod(key: string, uid: string, k: number, pod: Pod): Promise<LocalPod> {
    const ipam = this.ipam.get(k)!;
    const ip = ipam.allocate();
    const seq = ++this.seq;
    const tcp = new Set<number>();
    const udp = new Set<number>();
    for (const c of pod.spec?.containers ?? []) {
      for (const p of c.ports ?? []) {
        const proto = (p.protocol ?? 'TCP').toUpperCase();
        if (proto === 'TCP') tcp.add(p.containerPort);
        else if (proto === 'UDP') udp.add(p.containerPort);
        else this.o.log(`pod ${key}: containerPort ${p.containerPort}/${proto} skipped (the sandbox serves TCP and UDP only)`);
      }
    }
    const lp: LocalPod = {
      key,
      uid,
      node: `n${k}`,
      ip,
      netns: this.o.topology.podNs(seq, sanitizeLabel(key)),
      hostIf: `vp${seq}`,
      tcp: [...tcp].sort((a, b) => a - b),
      udp: [...udp].sort((a, b) => a - b),
    };
    // Recorded before anything exists, so a crash in between leaves nothing unnamed.
    this.local.set(key, lp);
    this.o.onChange();
    try {
      await this.o.topology.createPod({ node: k, ip, ns: lp.netns, hostIf: lp.hostIf });
      await this.startServer(lp);
    } catch (err) {
      await this.teardown(lp, 'failed to start').catch(() => undefined);
      throw err;
    }
    const ports = [...lp.tcp.map((p) => `${p}/tcp`), ...lp.udp.map((p) => `${p}/udp`)].join(' ') || 'no ports';
    this.o.log(`pod ${key}: running on n${k} at ${ip} (${ports})`);
    this.o.onChange();
    return lp;
  }

  private startServer(lp: LocalPod): Promise<void> {
    const cfg = JSON.stringify({ name: lp.key, tcp: lp.tcp, udp: lp.udp });
    const env = { ...process.env };
    delete env.NODE_OPTIONS; // e.g. `--import tsx` inherited from a test runner
    const [cmd, ...args] = inNetns(lp.netns, [process.execPath, this.o.podServer, 'serve', cfg]) as [string, ...string[]];
    // Own process group (Ctrl-C goes to the supervisor only); exits when our stdin pipe closes.
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env, detached: true });
    lp.child = child;
    child.stdin!.on('error', () => undefined);
    let stderr = '';
    child.stderr!.on('data', (b: Buffer) => {
      if (stderr.length < 8192) stderr += b.toString('utf8');
    });
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`pod ${lp.key}: server not listening after ${this.o.serverReadyTimeoutMs ?? 10_000} ms`)), this.o.serverReadyTimeoutMs ?? 10_000);
      createInterface({ input: child.stdout! }).on('line', (line) => {
        let msg: { ready?: boolean; fatal?: string; pid?: number };
        try {
          msg = JSON.parse(line) as typeof msg;
        } catch {
          return;
        }
        if (msg.ready) {
          clearTimeout(timer);
          lp.server = procRef(`pod ${lp.key}`, child.pid ?? msg.pid ?? 0);
          resolve();
        } else if (msg.fatal) {
          clearTimeout(timer);
          reject(new Error(`pod ${lp.key}: ${msg.fatal}`));
        }
      });
      child.on('exit', (code, signal) => {
        clearTimeout(timer);
        reject(new Error(`pod ${lp.key}: server exited (code ${code}, signal ${signal}) ${stderr.trim()}`));
        if (this.local.get(lp.key) === lp && !this.stopped) {
          this.o.log(`pod ${lp.key}: server exited unexpectedly (code ${code}, signal ${signal}) ${stderr.trim()}`);
        }
      });
    });
  }

  private async teardown(lp: LocalPod, why: string): Promise<void> {
    lp.child?.kill('SIGKILL');
    await deleteNetns([lp.netns], this.o.runner);
    this.forget(lp);
    this.o.log(`pod ${lp.key}: ${why}; namespace removed, ${lp.ip} freed`);
    this.o.onChange();
  }

  private forget(lp: LocalPod): void {
    const k = this.o.topology.nodeIndex(lp.node);
    if (k !== undefined) this.ipam.get(k)?.release(lp.ip);
    if (this.local.get(lp.key) === lp) this.local.delete(lp.key);
  }

  private async writeStatus(key: string, pod: Pod, ip: string, k: number): Promise<void> {
    const { namespace, name } = splitKey(key);
    const now = new Date().toISOString();
    const cond = (type: string) => ({ type, status: 'True', lastProbeTime: null, lastTransitionTime: now });
    const status = {
      phase: 'Running',
      podIP: ip,
      podIPs: [{ ip }],
      hostIP: nodeUnderlayIp(k),
      hostIPs: [{ ip: nodeUnderlayIp(k) }],
      startTime: now,
      conditions: ['PodScheduled', 'Initialized', 'ContainersReady', 'Ready'].map(cond),
      containerStatuses: (pod.spec?.containers ?? []).map((c) => ({
        name: c.name,
        image: c.image ?? '',
        imageID: '',
        containerID: `netns://${name}/${c.name}`,
        ready: true,
        started: true,
        restartCount: 0,
        state: { running: { startedAt: now } },
      })),
    };
    try {
      await this.api.request('PATCH', objectPath(CORE.pods, namespace, name, 'status'), { body: { status }, contentType: 'application/merge-patch+json' });
    } catch (err) {
      if (isNotFound(err)) return;
      throw new Error(`pod ${key}: writing status failed: ${formatError(err)}`, { cause: err });
    }
  }

  private async deleteObject(key: string, uid: string): Promise<void> {
    const { namespace, name } = splitKey(key);
    try {
      await this.api.request('DELETE', objectPath(CORE.pods, namespace, name), {
        body: { apiVersion: 'v1', kind: 'DeleteOptions', gracePeriodSeconds: 0, preconditions: { uid } },
      });
    } catch (err) {
      if (isNotFound(err) || isConflict(err)) return;
      throw err;
    }
  }
}
