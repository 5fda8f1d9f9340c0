// A fake "cluster" made of network namespaces, for kernel tests of the policy
// agent: an underlay switch, N node namespaces (pod bridge + routing +
// br_netfilter, so pod traffic traverses the node's iptables FORWARD chain) and
// pod namespaces each running one podagent.mjs (servers + prober). The network itself is the
// sandbox's (operator/src/sandbox/topology.ts); this file adds the pod agents, probes and checks.
//
//   <prefix>fab  : bridge br0 192.168.250.254/24 (the underlay switch)
//   <prefix>n<k> : ul0 192.168.250.k/24 (veth to br0), cbr0 10.244.k.1/24 (pod bridge),
//                  routes 10.244.j.0/24 via 192.168.250.j for j != k, ip_forward=1,
//                  rp_filter=0, bridge-nf-call-iptables=1
//   <prefix>p<seq>-<name> : eth0 <ip>/24 (veth peer vp<seq> enslaved to the node's cbr0),
//                  default via 10.244.k.1
//
// Every address lives inside namespaces created here; nothing is routed out of
// them and the root namespace's iptables/ipsets/routes are never touched.
import { fileURLToPath } from 'node:url';
import { Topology, nodeGateway, nodePodSubnet, settleAll } from '../../../operator/src/sandbox/topology.js';
import {
  type AgentProcess,
  type AgentSpawner,
  type CommandRunner,
  type RunOptions,
  type RunResult,
  CommandError,
  deleteNetns,
  deleteNetnsSync,
  inNetns,
  listNetns,
  makePrefix,
  netnsSpawner,
  sanitizeLabel,
  spawnRunner,
} from './netns.js';

export {
  FABRIC_IP,
  NODE_SYSCTLS,
  POD_CIDR,
  UNDERLAY_CIDR,
  nodeGateway,
  nodePodSubnet,
  nodeUnderlayIp,
  planFabricSetup,
  planNodeSetup,
  planPodAttach,
  planPodCreate,
  planPodSetup,
  podMac,
} from '../../../operator/src/sandbox/topology.js';

export type Protocol = 'TCP' | 'UDP' | 'SCTP';

export interface PortSpec {
  port: number;
  protocol: 'TCP' | 'UDP';
}

export interface PodSpec {
  /** Free-form unique name, e.g. "x/a" (namespace/pod). */
  name: string;
  /** Node number, 1..nodes. */
  node: number;
  /** IPv4 address inside the node's pod subnet 10.244.<node>.0/24 (not .0, .1, .255). */
  ip: string;
  /** Ports the agent listens on; default TCP+UDP 80 and 81. */
  ports?: PortSpec[];
}

export interface PodInfo {
  readonly name: string;
  readonly node: number;
  readonly ip: string;
  /** The pod's network namespace name. */
  readonly ns: string;
  /** Name of the pod veth's host end inside the node namespace (enslaved to cbr0). */
  readonly hostIf: string;
  readonly ports: readonly PortSpec[];
}

export interface ClusterOptions {
  nodes: number;
  pods: PodSpec[];
  /** Namespace name prefix; default makePrefix() = `knpm-<pid>-<random>-`. */
  prefix?: string;
  /** Runs setup commands (default: real processes). */
  runner?: CommandRunner;
  /** Starts the in-pod agents (default: `ip netns exec <ns> node podagent.mjs`). */
  spawner?: AgentSpawner;
  /** Default probe timeout (ms); default 1000. */
  defaultTimeoutMs?: number;
  /** How long to wait for an agent to report it is listening; default 10000. */
  agentReadyTimeoutMs?: number;
}

export interface ProbeResult {
  ok: boolean;
  error?: string;
  /** Duration measured inside the agent. */
  ms?: number;
}

export interface MatrixOptions {
  timeoutMs?: number;
  /** Source pods (default: all). */
  from?: readonly string[];
  /** Destination pods (default: all). */
  to?: readonly string[];
}

export interface ExecOptions extends RunOptions {
  /** Return the result instead of throwing on a non-zero exit code. */
  allowFail?: boolean;
}

export interface Cluster {
  readonly prefix: string;
  readonly nodeCount: number;
  /** Wall-clock ms of the createCluster() phases: namespaces+veths, ip/sysctl configuration, agent start. */
  readonly setupTimings: { readonly namespacesMs: number; readonly configureMs: number; readonly agentsMs: number };
  /** Network namespace of node k (1-based). */
  nodeNs(k: number): string;
  /** Network namespace of the underlay switch. */
  fabricNs(): string;
  /** Network namespace of pod `name`. */
  podNs(name: string): string;
  pod(name: string): PodInfo;
  /** All pods, in insertion order. */
  pods(): PodInfo[];
  /**
   * Probes `to` (a pod name or an IPv4 address) from pod `from`. Resolves true
   * if a TCP connect / UDP echo round trip succeeds within timeoutMs.
   * Rejects with UnsupportedProtocolError for SCTP.
   */
  probe(from: string, to: string, port: number, protocol?: Protocol, timeoutMs?: number): Promise<boolean>;
  probeDetailed(from: string, to: string, port: number, protocol?: Protocol, timeoutMs?: number): Promise<ProbeResult>;
  /** All ordered pairs of distinct pods, concurrently. Keys are `"from->to"`. */
  probeMatrix(port: number, protocol?: Protocol, opts?: MatrixOptions): Promise<Map<string, boolean>>;
  addPod(spec: PodSpec): Promise<PodInfo>;
  removePod(name: string): Promise<void>;
  /** Runs argv inside one of this cluster's namespaces (`ip netns exec`). Throws on failure unless allowFail. */
  exec(ns: string, argv: readonly string[], opts?: ExecOptions): Promise<RunResult>;
  /** Flushes the conntrack table of node k (conntrack is per namespace). */
  flushConntrack(k: number): Promise<void>;
  /** Kills the agents and deletes every namespace of this cluster. Idempotent. */
  destroy(): Promise<void>;
}

export class UnsupportedProtocolError extends Error {
  constructor(readonly protocol: string) {
    super(`probe protocol ${protocol} is not supported by the harness`);
    this.name = 'UnsupportedProtocolError';
  }
}

export const DEFAULT_PORTS: readonly PortSpec[] = Object.freeze([
  { port: 80, protocol: 'TCP' },
  { port: 81, protocol: 'TCP' },
  { port: 80, protocol: 'UDP' },
  { port: 81, protocol: 'UDP' },
]);

export const SUPPORTED_PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP'];

export const AGENT_PATH = fileURLToPath(new URL('./podagent.mjs', import.meta.url));

/** The harness allows more nodes than the sandbox (every 10.244.k.0/24, 192.168.250.k below the switch's .254). */
export const MAX_NODES = 253;

export const pairKey = (from: string, to: string): string => `${from}->${to}`;

/** Builds an expected matrix over all ordered pairs of distinct names. */
export function matrixFrom(names: readonly string[], allowed: (from: string, to: string) => boolean): Map<string, boolean> {
  const m = new Map<string, boolean>();
  for (const f of names) for (const t of names) if (f !== t) m.set(pairKey(f, t), allowed(f, t));
  return m;
}

/** Keys whose values differ (or that exist on one side only), as readable lines. */
export function diffMatrix(actual: ReadonlyMap<string, boolean>, expected: ReadonlyMap<string, boolean>): string[] {
  const out: string[] = [];
  for (const [k, v] of expected) {
    const a = actual.get(k);
    if (a !== v) out.push(`${k}: expected ${v ? 'allowed' : 'denied'}, got ${a === undefined ? 'nothing' : a ? 'allowed' : 'denied'}`);
  }
  for (const k of actual.keys()) if (!expected.has(k)) out.push(`${k}: unexpected entry`);
  return out;
}

/** A truth table (rows = from, columns = to; '.' allowed, 'X' denied, '-' self / missing). */
export function formatMatrix(m: ReadonlyMap<string, boolean>, names: readonly string[]): string {
  const w = Math.max(4, ...names.map((n) => n.length));
  const pad = (s: string) => s.padEnd(w);
  const lines = [pad('') + ' ' + names.map(pad).join(' ')];
  for (const f of names) {
    const cells = names.map((t) => {
      const v = f === t ? undefined : m.get(pairKey(f, t));
      return pad(v === undefined ? '-' : v ? '.' : 'X');
    });
    lines.push(pad(f) + ' ' + cells.join(' '));
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------- validation

function parseIPv4(ip: string): [number, number, number, number] | undefined {
  const m = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(ip);
  if (!m) return undefined;
  const o = [Number(m[1]), Number(m[2]), Number(m[3]), Number(m[4])] as [number, number, number, number];
  return o.every((x) => x >= 0 && x <= 255) ? o : undefined;
}

function validateNodeCount(n: number): void {
  if (!Number.isInteger(n) || n < 1 || n > MAX_NODES) throw new Error(`nodes must be an integer in 1..${MAX_NODES}, got ${n}`);
}

function validatePodSpec(spec: PodSpec, nodes: number): void {
  if (typeof spec.name !== 'string' || spec.name === '') throw new Error('pod name must be a non-empty string');
  if (!Number.isInteger(spec.node) || spec.node < 1 || spec.node > nodes) {
    throw new Error(`pod ${spec.name}: node must be in 1..${nodes}, got ${spec.node}`);
  }
  const o = parseIPv4(spec.ip);
  if (!o || o[0] !== 10 || o[1] !== 244 || o[2] !== spec.node || o[3] < 2 || o[3] > 254) {
    throw new Error(`pod ${spec.name}: ip ${spec.ip} must be a host address in ${nodePodSubnet(spec.node)} other than the gateway ${nodeGateway(spec.node)}`);
  }
  for (const p of spec.ports ?? []) {
    if (!Number.isInteger(p.port) || p.port < 1 || p.port > 65535) throw new Error(`pod ${spec.name}: bad port ${p.port}`);
    if (p.protocol !== 'TCP' && p.protocol !== 'UDP') throw new Error(`pod ${spec.name}: agent can only listen on TCP/UDP, got ${String(p.protocol)}`);
  }
}

// ---------------------------------------------------------------- agent handle

interface Pending {
  resolve: (r: ProbeResult) => void;
  reject: (e: Error) => void;
  timer: NodeJS.Timeout;
}

class PodAgent {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private exitInfo: string | undefined;
  readonly ready: Promise<void>;

  constructor(
    readonly podName: string,
    private readonly proc: AgentProcess,
    readyTimeoutMs: number,
  ) {
    this.ready = new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error(`agent of pod ${podName} not ready after ${readyTimeoutMs} ms`)), readyTimeoutMs);
      proc.onLine((line) => {
        let msg: { ready?: boolean; fatal?: string; id?: number; ok?: boolean; error?: string; ms?: number; unsupported?: boolean };
        try {
          msg = JSON.parse(line) as typeof msg;
        } catch {
          return; // not ours
        }
        if (msg.ready) {
          clearTimeout(timer);
          resolve();
        } else if (msg.fatal !== undefined) {
          clearTimeout(timer);
          reject(new Error(`agent of pod ${podName}: ${msg.fatal}`));
        } else if (typeof msg.id === 'number') {
          const p = this.pending.get(msg.id);
          if (!p) return;
          this.pending.delete(msg.id);
          clearTimeout(p.timer);
          if (msg.unsupported) p.reject(new UnsupportedProtocolError(msg.error ?? 'unknown'));
          else p.resolve({ ok: msg.ok === true, ...(msg.error !== undefined ? { error: msg.error } : {}), ...(msg.ms !== undefined ? { ms: msg.ms } : {}) });
        }
      });
      proc.onExit((code, signal, stderr) => {
        clearTimeout(timer);
        this.exitInfo = `agent of pod ${podName} exited (code ${code}, signal ${signal})${stderr.trim() ? ': ' + stderr.trim() : ''}`;
        const err = new Error(this.exitInfo);
        reject(err);
        for (const [id, p] of this.pending) {
          clearTimeout(p.timer);
          p.reject(err);
          this.pending.delete(id);
        }
      });
    });
    this.ready.catch(() => {
      /* observed by whoever awaits ready */
    });
  }

  probe(host: string, port: number, protocol: Protocol, timeoutMs: number): Promise<ProbeResult> {
    if (this.exitInfo !== undefined) return Promise.reject(new Error(this.exitInfo));
    const id = this.nextId++;
    return new Promise<ProbeResult>((resolve, reject) => {
      // Safety net only: the agent enforces timeoutMs itself.
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`agent of pod ${this.podName} did not answer probe ${id} within ${timeoutMs + 5000} ms`));
      }, timeoutMs + 5000);
      this.pending.set(id, { resolve, reject, timer });
      try {
        this.proc.writeLine(JSON.stringify({ id, host, port, protocol, timeoutMs }));
      } catch (e) {
        clearTimeout(timer);
        this.pending.delete(id);
        reject(e as Error);
      }
    });
  }

  async stop(): Promise<void> {
    if (this.exitInfo !== undefined) return;
    const exited = new Promise<void>((resolve) => this.proc.onExit(() => resolve()));
    this.proc.closeStdin();
    const t = setTimeout(() => this.proc.kill('SIGKILL'), 500);
    await exited;
    clearTimeout(t);
  }
}

// ---------------------------------------------------------------- cluster

const liveClusters = new Set<HarnessCluster>();
let exitHookInstalled = false;

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Last resort if a test run dies without calling destroy(): agents exit on stdin EOF,
  // namespaces are deleted synchronously here.
  process.on('exit', () => {
    for (const c of liveClusters) deleteNetnsSync(c.namespaceNames());
  });
}

class HarnessCluster implements Cluster {
  readonly prefix: string;
  readonly nodeCount: number;
  private readonly runner: CommandRunner;
  private readonly topology: Topology;
  private readonly spawner: AgentSpawner;
  private readonly defaultTimeoutMs: number;
  private readonly readyTimeoutMs: number;
  private readonly podsByName = new Map<string, PodInfo>();
  private readonly agents = new Map<string, PodAgent>();
  /** Every namespace name this cluster may have created. */
  private readonly created = new Set<string>();
  private seq = 0;
  readonly setupTimings = { namespacesMs: 0, configureMs: 0, agentsMs: 0 };
  private destroyed = false;
  private destroying: Promise<void> | undefined;

  constructor(opts: ClusterOptions) {
    validateNodeCount(opts.nodes);
    this.nodeCount = opts.nodes;
    this.prefix = opts.prefix ?? makePrefix();
    if (!/^[A-Za-z0-9_.-]{1,100}$/.test(this.prefix)) throw new Error(`bad prefix ${JSON.stringify(this.prefix)}`);
    this.runner = opts.runner ?? spawnRunner;
    this.topology = new Topology(this.prefix, this.nodeCount, this.runner, { maxNodes: MAX_NODES });
    this.spawner = opts.spawner ?? netnsSpawner;
    this.defaultTimeoutMs = opts.defaultTimeoutMs ?? 1000;
    this.readyTimeoutMs = opts.agentReadyTimeoutMs ?? 10000;
  }

  namespaceNames(): string[] {
    return [...this.created];
  }

  nodeNs(k: number): string {
    if (!Number.isInteger(k) || k < 1 || k > this.nodeCount) throw new Error(`no node ${k} (nodes are 1..${this.nodeCount})`);
    return this.topology.nodeNs(k);
  }

  fabricNs(): string {
    return this.topology.fabricNs();
  }

  pod(name: string): PodInfo {
    const p = this.podsByName.get(name);
    if (!p) throw new Error(`no pod ${JSON.stringify(name)}`);
    return p;
  }

  podNs(name: string): string {
    return this.pod(name).ns;
  }

  pods(): PodInfo[] {
    return [...this.podsByName.values()];
  }

  private checkAlive(): void {
    if (this.destroyed) throw new Error(`cluster ${this.prefix} has been destroyed`);
  }

  private makePodInfo(spec: PodSpec): PodInfo {
    validatePodSpec(spec, this.nodeCount);
    if (this.podsByName.has(spec.name)) throw new Error(`duplicate pod name ${spec.name}`);
    for (const p of this.podsByName.values()) if (p.ip === spec.ip) throw new Error(`pod ${spec.name}: ip ${spec.ip} already used by ${p.name}`);
    const seq = ++this.seq;
    return Object.freeze({
      name: spec.name,
      node: spec.node,
      ip: spec.ip,
      ns: this.topology.podNs(seq, sanitizeLabel(spec.name)),
      hostIf: `vp${seq}`,
      ports: Object.freeze([...(spec.ports ?? DEFAULT_PORTS)].map((p) => ({ ...p }))),
    });
  }

  private startAgent(pod: PodInfo): PodAgent {
    const cfg = {
      name: pod.name,
      tcp: pod.ports.filter((p) => p.protocol === 'TCP').map((p) => p.port),
      udp: pod.ports.filter((p) => p.protocol === 'UDP').map((p) => p.port),
    };
    const proc = this.spawner(pod.ns, [process.execPath, AGENT_PATH, JSON.stringify(cfg)]);
    const agent = new PodAgent(pod.name, proc, this.readyTimeoutMs);
    this.agents.set(pod.name, agent);
    return agent;
  }

  async init(specs: readonly PodSpec[]): Promise<void> {
    const pods = specs.map((s) => {
      const p = this.makePodInfo(s);
      this.podsByName.set(p.name, p);
      return p;
    });
    const clash = (await listNetns(this.runner)).filter((n) => n.startsWith(this.prefix));
    if (clash.length > 0) throw new Error(`namespaces with prefix ${this.prefix} already exist: ${clash.join(', ')}`);

    liveClusters.add(this);
    installExitHook();

    // 1. Namespaces and veth pairs, created directly inside their namespaces (never in the root one),
    // 2. then every namespace configured concurrently.
    for (const ns of [this.fabricNs(), ...Array.from({ length: this.nodeCount }, (_, i) => this.nodeNs(i + 1)), ...pods.map((p) => p.ns)]) {
      this.created.add(ns);
    }
    await this.topology.createNodes(pods, this.setupTimings);

    // 3. Agents.
    const t = performance.now();
    await settleAll(pods.map((p) => this.startAgent(p).ready));
    this.setupTimings.agentsMs = performance.now() - t;
  }

  async addPod(spec: PodSpec): Promise<PodInfo> {
    this.checkAlive();
    const pod = this.makePodInfo(spec);
    this.podsByName.set(pod.name, pod);
    this.created.add(pod.ns);
    try {
      await this.topology.createPod(pod);
      await this.startAgent(pod).ready;
      return pod;
    } catch (e) {
      await this.removePod(pod.name).catch(() => undefined);
      throw e;
    }
  }

  async removePod(name: string): Promise<void> {
    const pod = this.pod(name);
    const agent = this.agents.get(name);
    this.agents.delete(name);
    this.podsByName.delete(name);
    if (agent) await agent.stop();
    await removeNamespaces(this.runner, [pod.ns]);
    this.created.delete(pod.ns);
  }

  private resolveTarget(to: string): string {
    const p = this.podsByName.get(to);
    if (p) return p.ip;
    if (parseIPv4(to)) return to;
    throw new Error(`probe target ${JSON.stringify(to)} is neither a pod name nor an IPv4 address`);
  }

  async probeDetailed(from: string, to: string, port: number, protocol: Protocol = 'TCP', timeoutMs?: number): Promise<ProbeResult> {
    this.checkAlive();
    if (!SUPPORTED_PROTOCOLS.includes(protocol)) throw new UnsupportedProtocolError(protocol);
    const agent = this.agents.get(from);
    if (!agent) throw new Error(`no pod ${JSON.stringify(from)}`);
    return agent.probe(this.resolveTarget(to), port, protocol, timeoutMs ?? this.defaultTimeoutMs);
  }

  async probe(from: string, to: string, port: number, protocol: Protocol = 'TCP', timeoutMs?: number): Promise<boolean> {
    return (await this.probeDetailed(from, to, port, protocol, timeoutMs)).ok;
  }

  async probeMatrix(port: number, protocol: Protocol = 'TCP', opts: MatrixOptions = {}): Promise<Map<string, boolean>> {
    this.checkAlive();
    if (!SUPPORTED_PROTOCOLS.includes(protocol)) throw new UnsupportedProtocolError(protocol);
    const names = this.pods().map((p) => p.name);
    const from = opts.from ?? names;
    const to = opts.to ?? names;
    const pairs: [string, string][] = [];
    for (const f of from) for (const t of to) if (f !== t) pairs.push([f, t]);
    const results = await Promise.all(pairs.map(([f, t]) => this.probe(f, t, port, protocol, opts.timeoutMs)));
    const m = new Map<string, boolean>();
    pairs.forEach(([f, t], i) => m.set(pairKey(f, t), results[i] === true));
    return m;
  }

  async exec(ns: string, argv: readonly string[], opts: ExecOptions = {}): Promise<RunResult> {
    this.checkAlive();
    if (!this.created.has(ns)) throw new Error(`exec: ${JSON.stringify(ns)} is not a namespace of cluster ${this.prefix}`);
    const { allowFail, ...runOpts } = opts;
    const full = inNetns(ns, argv);
    const res = await this.runner(full, runOpts);
    if (!allowFail && res.code !== 0) throw new CommandError(full, res, runOpts.input);
    return res;
  }

  async flushConntrack(k: number): Promise<void> {
    // Some conntrack versions exit non-zero on an already empty table; only a missing binary matters.
    const res = await this.exec(this.nodeNs(k), ['conntrack', '-F'], { allowFail: true });
    if (/exec of .* failed/.test(res.stderr)) throw new CommandError(inNetns(this.nodeNs(k), ['conntrack', '-F']), res);
  }

  destroy(): Promise<void> {
    this.destroying ??= this.doDestroy();
    return this.destroying;
  }

  private async doDestroy(): Promise<void> {
    this.destroyed = true;
    const agents = [...this.agents.values()];
    this.agents.clear();
    await Promise.all(agents.map((a) => a.stop().catch(() => undefined)));
    await removeNamespaces(this.runner, [...this.created], this.prefix);
    this.created.clear();
    liveClusters.delete(this);
  }
}

/** Deletes the given namespaces plus, if prefix is given, any other namespace carrying it. */
async function removeNamespaces(runner: CommandRunner, names: readonly string[], prefix?: string): Promise<void> {
  const extra = prefix !== undefined ? (await listNetns(runner)).filter((n) => n.startsWith(prefix)) : [];
  await deleteNetns([...new Set([...names, ...extra])], runner);
}

/** Builds the namespaces, starts the agents and waits until every agent listens. Cleans up on failure. */
export async function createCluster(opts: ClusterOptions): Promise<Cluster> {
  const c = new HarnessCluster(opts);
  try {
    await c.init(opts.pods);
  } catch (e) {
    await c.destroy().catch(() => undefined);
    throw e;
  }
  return c;
}
