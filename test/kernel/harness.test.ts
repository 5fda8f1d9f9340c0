// Self-test of the network-namespace harness (test/kernel/harness/).
// Part 1 checks the command plan with an injected runner/spawner (no root needed).
// Part 2 builds a real 2-node, 9-pod cluster out of network namespaces (root only).
import { expect } from 'chai';
import { performance } from 'node:perf_hooks';
import {
  type Cluster,
  type PodSpec,
  UnsupportedProtocolError,
  createCluster,
  diffMatrix,
  formatMatrix,
  matrixFrom,
  pairKey,
  podMac,
} from './harness/cluster.js';
import {
  type AgentProcess,
  type AgentSpawner,
  type CommandRunner,
  type RunResult,
  makePrefix,
  parseNetnsList,
  removeLeftovers,
  removeStaleLeftovers,
  spawnRunner,
} from './harness/netns.js';

const MODEL: PodSpec[] = [
  { name: 'x/a', node: 1, ip: '10.244.1.10' },
  { name: 'x/b', node: 1, ip: '10.244.1.11' },
  { name: 'x/c', node: 1, ip: '10.244.1.12' },
  { name: 'y/a', node: 1, ip: '10.244.1.13' },
  { name: 'y/b', node: 2, ip: '10.244.2.17' },
  { name: 'y/c', node: 2, ip: '10.244.2.40' },
  { name: 'z/a', node: 2, ip: '10.244.2.5' },
  { name: 'z/b', node: 2, ip: '10.244.2.21' },
  { name: 'z/c', node: 2, ip: '10.244.2.20' },
];
const NAMES = MODEL.map((p) => p.name);

const log = (msg: string) => console.log(`      [harness] ${msg}`);

// ---------------------------------------------------------------- fakes

interface Recorded {
  argv: string[];
  input?: string;
}

/** A runner that records commands and emulates `ip netns add/del/list`. */
function fakeRunner(): { runner: CommandRunner; calls: Recorded[]; netns: Set<string> } {
  const calls: Recorded[] = [];
  const netns = new Set<string>();
  const ok = (stdout = ''): RunResult => ({ code: 0, stdout, stderr: '' });
  const runner: CommandRunner = async (argv, opts) => {
    calls.push({ argv: [...argv], ...(opts?.input !== undefined ? { input: opts.input } : {}) });
    if (argv.join(' ') === 'ip netns list') return ok([...netns].map((n) => `${n} (id: 0)`).join('\n'));
    if (argv[0] === 'ip' && argv.includes('-batch') && !argv.includes('-n')) {
      for (const line of (opts?.input ?? '').split('\n')) {
        const m = /^netns (add|del) (\S+)$/.exec(line);
        if (m?.[1] === 'add') netns.add(m[2] as string);
        if (m?.[1] === 'del') netns.delete(m[2] as string);
      }
    }
    return ok();
  };
  return { runner, calls, netns };
}

/** An in-memory agent: answers probes with allowed(srcNs, host, port, protocol). */
function fakeSpawner(allowed: (ns: string, host: string, port: number, protocol: string) => boolean): {
  spawner: AgentSpawner;
  spawned: { ns: string; argv: readonly string[] }[];
} {
  const spawned: { ns: string; argv: readonly string[] }[] = [];
  const spawner: AgentSpawner = (ns, argv) => {
    spawned.push({ ns, argv });
    const lineCbs: ((l: string) => void)[] = [];
    const exitCbs: ((c: number | null, s: string | null, e: string) => void)[] = [];
    let exited = false;
    const emit = (o: unknown) => setImmediate(() => lineCbs.forEach((cb) => cb(JSON.stringify(o))));
    const exit = () => {
      if (exited) return;
      exited = true;
      setImmediate(() => exitCbs.forEach((cb) => cb(0, null, '')));
    };
    emit({ ready: true });
    const proc: AgentProcess = {
      pid: 4242,
      writeLine(line) {
        const cmd = JSON.parse(line) as { id: number; host: string; port: number; protocol: string };
        if (cmd.protocol === 'SCTP') emit({ id: cmd.id, ok: false, unsupported: true, error: 'SCTP unsupported' });
        else emit({ id: cmd.id, ok: allowed(ns, cmd.host, cmd.port, cmd.protocol) });
      },
      onLine: (cb) => lineCbs.push(cb),
      onExit: (cb) => (exited ? setImmediate(() => cb(0, null, '')) : exitCbs.push(cb)),
      closeStdin: exit,
      kill: exit,
    };
    return proc;
  };
  return { spawner, spawned };
}

describe('kernel harness: command plan (fake runner, no root needed)', () => {
  it('creates everything inside test namespaces and nothing in the root namespace', async () => {
    const { runner, calls, netns } = fakeRunner();
    const { spawner, spawned } = fakeSpawner(() => true);
    const prefix = makePrefix();
    const c = await createCluster({ nodes: 2, pods: MODEL, prefix, runner, spawner });
    try {
      expect(c.nodeNs(1)).to.equal(`${prefix}n1`);
      expect(c.nodeNs(2)).to.equal(`${prefix}n2`);
      expect([...netns].every((n) => n.startsWith(prefix))).to.equal(true);
      expect(netns.size).to.equal(1 + 2 + 9);
      for (const { argv, input } of calls) {
        const cmd = argv.join(' ');
        if (argv[0] === 'modprobe') continue;
        expect(argv[0], cmd).to.equal('ip');
        if (argv[1] === '-n' || (argv[1] === 'netns' && argv[2] === 'exec')) {
          expect(argv[2]?.startsWith(prefix) || argv[3]?.startsWith(prefix), cmd).to.equal(true);
        } else if (argv.includes('-batch')) {
          // Root-level batches only do namespace bookkeeping and create veths *inside* test namespaces.
          for (const line of (input ?? '').split('\n').filter(Boolean)) {
            const ok =
              new RegExp(`^netns (add|del) ${prefix}\\S+$`).test(line) ||
              new RegExp(`^link add \\S+ netns ${prefix}\\S+ type veth peer name \\S+( address \\S+)? netns ${prefix}\\S+$`).test(line);
            expect(ok, `root batch line: ${line}`).to.equal(true);
          }
        } else {
          expect(['ip netns list'].includes(cmd) || cmd.startsWith('ip netns pids '), cmd).to.equal(true);
        }
      }
      const node1 = calls.find((r) => r.argv.join(' ') === `ip -n ${prefix}n1 -batch -`)?.input ?? '';
      expect(node1).to.include('link add cbr0');
      expect(node1).to.include('nf_call_iptables 1');
      expect(node1).to.include('addr add 10.244.1.1/24 dev cbr0');
      expect(node1).to.include('addr add 192.168.250.1/24 dev ul0');
      expect(node1).to.include('route add 10.244.2.0/24 via 192.168.250.2 dev ul0');
      const sysctl = calls.find((r) => r.argv.slice(0, 4).join(' ') === `ip netns exec ${prefix}n2` && r.argv.includes('sysctl'));
      expect(sysctl?.argv).to.include.members(['net.ipv4.ip_forward=1', 'net.bridge.bridge-nf-call-iptables=1']);
      const xa = c.pod('x/a');
      const xaBatch = calls.find((r) => r.argv.join(' ') === `ip -n ${xa.ns} -batch -`)?.input ?? '';
      expect(xaBatch).to.include('addr add 10.244.1.10/24 dev eth0');
      expect(xaBatch).to.include('route add default via 10.244.1.1');
      expect(spawned).to.have.length(9);
      expect(spawned.every((s) => s.argv.some((a) => a.endsWith('podagent.mjs')))).to.equal(true);
      // Namespace-creation is batched: one root `ip -batch` for all namespaces + veths.
      expect(calls.filter((r) => r.argv.join(' ') === 'ip -batch -')).to.have.length(1);
    } finally {
      await c.destroy();
    }
    expect(netns.size).to.equal(0);
    await c.destroy(); // idempotent
  });

  it('probeMatrix covers all 72 ordered pairs with "from->to" keys', async () => {
    const { runner } = fakeRunner();
    // Deny everything towards 10.244.2.17 (y/b) on UDP.
    const { spawner } = fakeSpawner((_ns, host, _port, proto) => !(host === '10.244.2.17' && proto === 'UDP'));
    const c = await createCluster({ nodes: 2, pods: MODEL, runner, spawner });
    try {
      const tcp = await c.probeMatrix(80, 'TCP');
      expect(tcp.size).to.equal(72);
      expect([...tcp.values()].every(Boolean)).to.equal(true);
      const udp = await c.probeMatrix(81, 'UDP');
      expect(diffMatrix(udp, matrixFrom(NAMES, (_f, t) => t !== 'y/b'))).to.deep.equal([]);
      expect(udp.get(pairKey('x/a', 'y/b'))).to.equal(false);
      const sub = await c.probeMatrix(80, 'TCP', { from: ['x/a'], to: ['y/b', 'z/c', 'x/a'] });
      expect([...sub.keys()]).to.deep.equal(['x/a->y/b', 'x/a->z/c']);
      let err: unknown;
      await c.probe('x/a', 'y/b', 80, 'SCTP').catch((e: unknown) => (err = e));
      expect(err).to.be.instanceOf(UnsupportedProtocolError);
      expect(await c.probe('x/a', '10.244.2.17', 80, 'TCP')).to.equal(true);
      await c.exec(c.nodeNs(1), ['true']);
      let foreign: unknown;
      await c.exec('not-ours', ['true']).catch((e: unknown) => (foreign = e));
      expect(String(foreign)).to.match(/not a namespace of cluster/);
      const added = await c.addPod({ name: 'w/a', node: 2, ip: '10.244.2.99' });
      expect(added.ns.startsWith(c.prefix)).to.equal(true);
      expect((await c.probeMatrix(80)).size).to.equal(90);
      await c.removePod('w/a');
      expect(c.pods()).to.have.length(9);
    } finally {
      await c.destroy();
    }
  });

  it('validates the topology', async () => {
    const { runner } = fakeRunner();
    const { spawner } = fakeSpawner(() => true);
    const bad = async (pods: PodSpec[], nodes = 2) => {
      let err: unknown;
      await createCluster({ nodes, pods, runner, spawner }).catch((e: unknown) => (err = e));
      return String(err);
    };
    expect(await bad([{ name: 'a', node: 1, ip: '10.244.2.10' }])).to.match(/must be a host address in 10\.244\.1\.0\/24/);
    expect(await bad([{ name: 'a', node: 1, ip: '10.244.1.1' }])).to.match(/gateway/);
    expect(await bad([{ name: 'a', node: 1, ip: '192.168.1.10' }])).to.match(/must be a host address/);
    expect(await bad([{ name: 'a', node: 3, ip: '10.244.3.10' }])).to.match(/node must be in 1\.\.2/);
    expect(await bad([], 0)).to.match(/nodes must be/);
    expect(
      await bad([
        { name: 'a', node: 1, ip: '10.244.1.10' },
        { name: 'a', node: 1, ip: '10.244.1.11' },
      ]),
    ).to.match(/duplicate pod name/);
    expect(
      await bad([
        { name: 'a', node: 1, ip: '10.244.1.10' },
        { name: 'b', node: 1, ip: '10.244.1.10' },
      ]),
    ).to.match(/already used/);
  });

  it('helpers: podMac, formatMatrix, parseNetnsList, removeLeftovers refuses foreign prefixes', async () => {
    expect(podMac('10.244.2.17')).to.equal('02:70:0a:f4:02:11');
    const m = matrixFrom(['a', 'b'], (f) => f === 'a');
    expect(formatMatrix(m, ['a', 'b'])).to.equal(['     a    b   ', 'a    -    .   ', 'b    X    -   '].join('\n'));
    expect(parseNetnsList('knpm-1-ab-n1 (id: 3)\nfoo\n')).to.deep.equal(['knpm-1-ab-n1', 'foo']);
    let err: unknown;
    await removeLeftovers('', fakeRunner().runner).catch((e: unknown) => (err = e));
    expect(String(err)).to.match(/refusing/);
  });
});

// ---------------------------------------------------------------- real kernel

/** Root-namespace state that the harness must never change. */
async function rootSnapshot(): Promise<Record<string, string>> {
  const norm = (r: RunResult) =>
    r.code === 127
      ? '(not installed)'
      : `exit ${r.code}\n` +
        r.stdout
          .split('\n')
          .filter((l) => !l.startsWith('#'))
          .map((l) => l.replace(/\[\d+:\d+\]/g, '[0:0]'))
          .join('\n');
  const cmds: Record<string, string[]> = {
    'iptables-save': ['iptables-save'],
    'ip6tables-save': ['ip6tables-save'],
    'iptables-legacy-save': ['iptables-legacy-save'],
    'ipset list -n': ['ipset', 'list', '-n'],
    'ip -4 route': ['ip', '-4', 'route', 'show', 'table', 'main'],
  };
  const out: Record<string, string> = {};
  for (const [k, argv] of Object.entries(cmds)) out[k] = norm(await spawnRunner(argv));
  return out;
}

async function ourNamespaces(prefix: string): Promise<string[]> {
  const res = await spawnRunner(['ip', 'netns', 'list']);
  return parseNetnsList(res.stdout).filter((n) => n.startsWith(prefix));
}

describe('kernel harness: real network namespaces (root)', function () {
  this.timeout(60000);
  let cluster: Cluster | undefined;
  let prefix = '';
  let rootBefore: Record<string, string> = {};

  before(async function () {
    if (typeof process.getuid !== 'function' || process.getuid() !== 0) {
      console.warn('\n  !!! SKIPPING kernel harness tests: they need root (network namespaces, iptables). Run as root / in CI. !!!\n');
      this.skip();
    }
    const stale = await removeStaleLeftovers(); // namespaces of earlier runs whose process died
    if (stale.length > 0) log(`removed ${stale.length} stale namespaces of dead runs: ${stale.join(' ')}`);
    rootBefore = await rootSnapshot();
    prefix = makePrefix();
    const t = performance.now();
    cluster = await createCluster({ nodes: 2, pods: MODEL, prefix });
    const s = cluster.setupTimings;
    log(
      `created 2 nodes + 9 pods in ${(performance.now() - t).toFixed(0)} ms ` +
        `(namespaces+veths ${s.namespacesMs.toFixed(0)} ms, ip/sysctl ${s.configureMs.toFixed(0)} ms, agents ${s.agentsMs.toFixed(0)} ms)`,
    );
  });

  after(async () => {
    // Runs even if a test failed (or before() failed half-way).
    if (cluster) await cluster.destroy();
    if (prefix) await removeLeftovers(prefix);
  });

  const c = (): Cluster => {
    if (!cluster) throw new Error('no cluster');
    return cluster;
  };

  async function expectMatrix(port: number, protocol: 'TCP' | 'UDP', expected: Map<string, boolean>, label: string) {
    const t = performance.now();
    const m = await c().probeMatrix(port, protocol, { timeoutMs: 1000 });
    const ms = performance.now() - t;
    const denied = [...expected.values()].filter((v) => !v).length;
    log(`${label}: ${protocol}/${port} matrix of ${m.size} pairs (${denied} expected denied) in ${ms.toFixed(0)} ms`);
    const diff = diffMatrix(m, expected);
    expect(diff, `${label} ${protocol}/${port}\n${formatMatrix(m, NAMES)}\n`).to.deep.equal([]);
    return ms;
  }

  const allAllowed = matrixFrom(NAMES, () => true);

  it('connects the full 9-pod matrix on TCP and UDP ports 80 and 81', async () => {
    expect(c().pods().map((p) => p.name)).to.deep.equal(NAMES);
    for (const protocol of ['TCP', 'UDP'] as const) {
      for (const port of [80, 81]) await expectMatrix(port, protocol, allAllowed, 'all allowed');
    }
    // A port nobody listens on fails fast (RST / ICMP port unreachable), not by timeout.
    const t = performance.now();
    const r = await c().probeDetailed('x/a', 'z/c', 82, 'TCP', 1000);
    expect(r.ok).to.equal(false);
    expect(r.error).to.equal('ECONNREFUSED');
    expect(await c().probe('x/a', 'z/c', 82, 'UDP', 1000)).to.equal(false);
    expect(performance.now() - t).to.be.below(900);
  });

  it('bridged (same node) and routed (cross node) traffic both traverse the node FORWARD chain', async () => {
    const n1 = c().nodeNs(1);
    const rule = ['FORWARD', '-d', '10.244.1.11', '-j', 'DROP'];
    await c().exec(n1, ['iptables', '-I', ...rule]);
    try {
      // x/b lives on node 1; dropping "-d x/b" there kills new connections to x/b from its
      // node-1 neighbours (bridged) and from node-2 pods (routed), and also replies to
      // x/b, so x/b's own outgoing probes fail too.
      const expected = matrixFrom(NAMES, (f, t) => f !== 'x/b' && t !== 'x/b');
      for (const protocol of ['TCP', 'UDP'] as const) await expectMatrix(80, protocol, expected, 'DROP -d x/b on node 1');
      const counters = await c().exec(n1, ['iptables', '-L', 'FORWARD', '-v', '-n', '-x']);
      expect(counters.stdout).to.match(/^\s*[1-9]\d*\s+\d+\s+DROP\s/m);
    } finally {
      await c().exec(n1, ['iptables', '-D', ...rule]);
    }
    await expectMatrix(80, 'TCP', allAllowed, 'rule removed');
    await expectMatrix(80, 'UDP', allAllowed, 'rule removed');
  });

  it('a NEW-only drop on the destination node denies exactly the pairs towards that pod', async () => {
    const n2 = c().nodeNs(2);
    const rule = ['FORWARD', '-d', '10.244.2.17', '-m', 'conntrack', '--ctstate', 'NEW', '-j', 'DROP'];
    await c().exec(n2, ['iptables', '-I', ...rule]);
    try {
      const expected = matrixFrom(NAMES, (_f, t) => t !== 'y/b');
      for (const protocol of ['TCP', 'UDP'] as const) await expectMatrix(81, protocol, expected, 'DROP NEW -d y/b on node 2');
    } finally {
      await c().exec(n2, ['iptables', '-D', ...rule]);
    }
    await c().flushConntrack(2);
    for (const protocol of ['TCP', 'UDP'] as const) await expectMatrix(81, protocol, allAllowed, 'rule removed');
  });

  it('adds and removes pods (re-using an IP works immediately)', async () => {
    const cl = c();
    await cl.addPod({ name: 'w/a', node: 2, ip: '10.244.2.99', ports: [{ port: 8080, protocol: 'TCP' }] });
    expect(await cl.probe('x/a', 'w/a', 8080, 'TCP')).to.equal(true);
    expect(await cl.probe('w/a', 'x/a', 80, 'UDP')).to.equal(true);
    expect(await cl.probe('x/a', 'w/a', 80, 'TCP')).to.equal(false); // not listening there
    const ns = cl.podNs('w/a');
    await cl.removePod('w/a');
    expect(await ourNamespaces(ns)).to.deep.equal([]);
    expect(await cl.probe('x/a', '10.244.2.99', 8080, 'TCP', 300)).to.equal(false);
    await cl.addPod({ name: 'w/b', node: 2, ip: '10.244.2.99' });
    expect(await cl.probe('z/a', 'w/b', 80, 'TCP')).to.equal(true);
    expect(await cl.probe('x/a', 'w/b', 81, 'UDP')).to.equal(true);
    await cl.removePod('w/b');
  });

  it('reports SCTP as unsupported', async () => {
    let err: unknown;
    await c()
      .probe('x/a', 'x/b', 80, 'SCTP')
      .catch((e: unknown) => (err = e));
    expect(err).to.be.instanceOf(UnsupportedProtocolError);
  });

  it('destroy() removes every namespace and leaves the root namespace untouched', async () => {
    expect((await ourNamespaces(prefix)).length).to.equal(1 + 2 + 9);
    await c().destroy();
    await c().destroy(); // idempotent
    expect(await ourNamespaces(prefix)).to.deep.equal([]);
    expect(await rootSnapshot()).to.deep.equal(rootBefore);
  });
});
