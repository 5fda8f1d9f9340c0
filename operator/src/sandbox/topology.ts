/**
 * The sandbox's network: nodes and pods as network namespaces (also the network of the kernel test
 * harness, test/kernel/harness/cluster.ts, which builds on this module).
 *
 *   <prefix>fab  : bridge br0 192.168.250.254/24 (the underlay switch), ports n<k>
 *   <prefix>n<k> : ul0 192.168.250.k/24 (veth to br0), cbr0 10.244.k.1/24 (pod bridge, fixed MAC,
 *                  nf_call_iptables), routes 10.244.j.0/24 via 192.168.250.j, ip_forward=1,
 *                  rp_filter=0, bridge-nf-call-iptables=1
 *   <prefix>p<seq>-<ns>-<name> : eth0 <ip>/24 (MAC derived from the IP; peer vp<seq> on the
 *                  node's cbr0), default via 10.244.k.1
 *
 * Same-node (bridged, via br_netfilter) and cross-node (routed) pod traffic both traverse the node
 * namespace's FORWARD chain, where the agent of that node programs its rules.
 * Every address lives inside these namespaces; the root namespace is never configured.
 */
import { performance } from 'node:perf_hooks';
import { CommandError, type CommandRunner, inNetns, ipBatch, spawnRunner } from './netns.js';

export const POD_CIDR = '10.244.0.0/16';
export const UNDERLAY_CIDR = '192.168.250.0/24';
export const MAX_NODES = 50;
export const FABRIC_IP = '192.168.250.254';

export const nodeName = (k: number): string => `n${k}`;
export const nodePodSubnet = (k: number): string => `10.244.${k}.0/24`;
export const nodeGateway = (k: number): string => `10.244.${k}.1`;
export const nodeUnderlayIp = (k: number): string => `192.168.250.${k}`;

const hex2 = (n: number) => n.toString(16).padStart(2, '0');
/** A bridge without a fixed MAC takes its lowest port's and changes it as ports come and go. */
const nodeBridgeMac = (k: number) => `02:6b:6e:00:${hex2(k)}:01`;
const FABRIC_BRIDGE_MAC = '02:6b:6e:ff:00:01';

/**
 * The pod's eth0 MAC, derived from its IP (02:70:0a:f4:<k>:<host>), so a reused IP keeps neighbour
 * caches valid: the other pods' / the node's entries (REACHABLE for 15-45 s) still match, whereas
 * with a random MAC probes to the new pod would time out until they expire.
 */
export function podMac(ip: string): string {
  const o = ip.split('.').map(Number);
  if (o.length !== 4 || o.some((x) => !Number.isInteger(x) || x < 0 || x > 255)) throw new Error(`bad IPv4 ${ip}`);
  return `02:70:${o.map(hex2).join(':')}`;
}

export interface NodeNet {
  /** 1-based. */
  index: number;
  name: string;
  ns: string;
  underlayIp: string;
  podSubnet: string;
}

export interface PodNet {
  node: number;
  ip: string;
  ns: string;
  /** Host end of the veth, inside the node namespace, enslaved to cbr0. */
  hostIf: string;
}

export const NODE_SYSCTLS: readonly string[] = [
  'net.ipv4.ip_forward=1',
  'net.ipv4.conf.all.rp_filter=0',
  'net.ipv4.conf.default.rp_filter=0',
  'net.ipv4.conf.cbr0.rp_filter=0',
  'net.ipv4.conf.ul0.rp_filter=0',
  'net.bridge.bridge-nf-call-iptables=1',
];

export function planNodeSetup(k: number, nodes: number): string[] {
  const lines = [
    'link set lo up',
    `link add cbr0 address ${nodeBridgeMac(k)} type bridge nf_call_iptables 1`,
    `addr add ${nodeGateway(k)}/24 dev cbr0`,
    'link set cbr0 up',
    `addr add ${nodeUnderlayIp(k)}/24 dev ul0`,
    'link set ul0 up',
  ];
  for (let j = 1; j <= nodes; j++) if (j !== k) lines.push(`route add ${nodePodSubnet(j)} via ${nodeUnderlayIp(j)} dev ul0`);
  return lines;
}

export function planFabricSetup(nodes: number): string[] {
  const lines = ['link set lo up', `link add br0 address ${FABRIC_BRIDGE_MAC} type bridge`, `addr add ${FABRIC_IP}/24 dev br0`, 'link set br0 up'];
  for (let k = 1; k <= nodes; k++) lines.push(`link set n${k} master br0 up`);
  return lines;
}

/** Root-level `ip -batch` lines creating a pod namespace and its veth (host end in the node namespace, eth0 in the pod's). */
export function planPodCreate(pod: PodNet, nodeNs: string): string[] {
  return [`netns add ${pod.ns}`, `link add ${pod.hostIf} netns ${nodeNs} type veth peer name eth0 address ${podMac(pod.ip)} netns ${pod.ns}`];
}

/** `ip -n <node ns> -batch` lines attaching a pod's host end to the node bridge. */
export function planPodAttach(pod: PodNet): string[] {
  return [`link set ${pod.hostIf} master cbr0 up`];
}

export function planPodSetup(pod: PodNet): string[] {
  return ['link set lo up', `addr add ${pod.ip}/24 dev eth0`, 'link set eth0 up', `route add default via ${nodeGateway(pod.node)} dev eth0 onlink`];
}

export interface TopologyOptions {
  /** Upper bound of nodeCount; default MAX_NODES. */
  maxNodes?: number;
}

/** Wall-clock ms of the two phases of Topology.createNodes(). */
export interface SetupTimings {
  /** Namespaces and veths (one root `ip -batch`). */
  namespacesMs: number;
  /** Addresses, bridges, routes and sysctls inside the namespaces. */
  configureMs: number;
}

/** Names of the namespaces of one sandbox. */
export class Topology {
  constructor(
    readonly prefix: string,
    readonly nodeCount: number,
    private readonly runner: CommandRunner = spawnRunner,
    opts: TopologyOptions = {},
  ) {
    const max = opts.maxNodes ?? MAX_NODES;
    if (!Number.isInteger(nodeCount) || nodeCount < 1 || nodeCount > max) throw new Error(`nodes must be an integer in 1..${max}, got ${nodeCount}`);
  }

  fabricNs(): string {
    return `${this.prefix}fab`;
  }
  nodeNs(k: number): string {
    return `${this.prefix}n${k}`;
  }
  nodes(): NodeNet[] {
    return Array.from({ length: this.nodeCount }, (_, i) => {
      const k = i + 1;
      return { index: k, name: nodeName(k), ns: this.nodeNs(k), underlayIp: nodeUnderlayIp(k), podSubnet: nodePodSubnet(k) };
    });
  }
  nodeIndex(name: string): number | undefined {
    const m = /^n(\d+)$/.exec(name);
    const k = m ? Number(m[1]) : NaN;
    return k >= 1 && k <= this.nodeCount ? k : undefined;
  }
  podNs(seq: number, label: string): string {
    return `${this.prefix}p${seq}-${label}`;
  }

  /**
   * Creates the underlay switch and the node namespaces (bridge, routes, sysctls), plus `pods`
   * (namespace, veth on the node bridge, address) in the same batches. timings, if given, receives
   * the duration of both phases.
   */
  async createNodes(pods: readonly PodNet[] = [], timings?: SetupTimings): Promise<void> {
    const root = [`netns add ${this.fabricNs()}`];
    for (let k = 1; k <= this.nodeCount; k++) {
      root.push(`netns add ${this.nodeNs(k)}`, `link add ul0 netns ${this.nodeNs(k)} type veth peer name n${k} netns ${this.fabricNs()}`);
    }
    for (const p of pods) root.push(...planPodCreate(p, this.nodeNs(p.node)));
    let t = performance.now();
    await ipBatch(this.runner, undefined, root);
    if (timings) timings.namespacesMs = performance.now() - t;
    const jobs: Promise<unknown>[] = [ipBatch(this.runner, this.fabricNs(), planFabricSetup(this.nodeCount))];
    for (let k = 1; k <= this.nodeCount; k++) {
      const lines = planNodeSetup(k, this.nodeCount);
      for (const p of pods) if (p.node === k) lines.push(...planPodAttach(p));
      jobs.push(ipBatch(this.runner, this.nodeNs(k), lines).then(() => applyNodeSysctls(this.runner, this.nodeNs(k))));
    }
    for (const p of pods) jobs.push(ipBatch(this.runner, p.ns, planPodSetup(p)));
    t = performance.now();
    await settleAll(jobs);
    if (timings) timings.configureMs = performance.now() - t;
  }

  /** Creates a pod namespace with its veth on the node bridge and its address. */
  async createPod(pod: PodNet): Promise<void> {
    await ipBatch(this.runner, undefined, planPodCreate(pod, this.nodeNs(pod.node)));
    await settleAll([ipBatch(this.runner, this.nodeNs(pod.node), planPodAttach(pod)), ipBatch(this.runner, pod.ns, planPodSetup(pod))]);
  }
}

/** Applies NODE_SYSCTLS inside a node namespace, loading br_netfilter if /proc/sys/net/bridge is missing. */
async function applyNodeSysctls(runner: CommandRunner, nodeNs: string): Promise<void> {
  const argv = inNetns(nodeNs, ['sysctl', '-q', '-w', ...NODE_SYSCTLS]);
  let res = await runner(argv);
  if (res.code !== 0 && /bridge/.test(res.stderr)) {
    // br_netfilter not loaded yet: /proc/sys/net/bridge does not exist.
    await runner(['modprobe', 'br_netfilter']);
    res = await runner(argv);
  }
  if (res.code !== 0) {
    throw new CommandError(argv, { ...res, stderr: `${res.stderr}\n(is the br_netfilter module available? /proc/sys/net/bridge must exist in the node namespace)` });
  }
}

/** Waits for every promise, then throws the first failure. */
export async function settleAll(ps: readonly Promise<unknown>[]): Promise<void> {
  const res = await Promise.allSettled(ps);
  const failed = res.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}

/** Pod addresses of one node's /24: .2 .. .254, handed out round-robin so a freed IP is not reused at once. */
export class NodeIpam {
  private readonly used = new Set<number>();
  private cursor = 2;
  constructor(readonly node: number) {}

  allocate(): string {
    for (let i = 0; i < 253; i++) {
      const host = 2 + ((this.cursor - 2 + i) % 253);
      if (!this.used.has(host)) {
        this.used.add(host);
        this.cursor = host + 1 > 254 ? 2 : host + 1;
        return `10.244.${this.node}.${host}`;
      }
    }
    throw new Error(`node n${this.node}: no free pod IP left in ${nodePodSubnet(this.node)}`);
  }

  release(ip: string): void {
    const parts = ip.split('.');
    if (parts[2] === String(this.node)) this.used.delete(Number(parts[3]));
  }

  get inUse(): number {
    return this.used.size;
  }
}
