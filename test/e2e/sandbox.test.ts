// End to end: the sandbox exactly as docs/sandbox.md tells a person to use it. `bash hack/sandbox.sh`
// in the background, the printed KUBECONFIG / PATH / kube-npm lines, the walkthrough's policies (the
// YAML is read from docs/sandbox.md), `kubectl wait`, `sandbox probe`, `sandbox down`; then nothing
// may be left. Also: a SIGKILLed supervisor's leftovers are removed by the next `up` and by `down`.
import { expect } from 'chai';
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { isProcessRunning, run, type RunResult } from '../support/controlplane.js';
import { REPO, waitFor } from '../support/e2e.js';

const isRoot = process.getuid?.() === 0;

interface Started {
  child: ChildProcess;
  output: () => string;
  exited: Promise<number | null>;
  readyMs: number;
  kubeconfig: string;
  binDir: string;
  /** argv after `node` for `kube-npm` (the printed alias). */
  cli: string;
}

interface StateFile {
  prefix: string;
  supervisor: { pid: number };
  processes: { name: string; pid: number }[];
  pods: Record<string, { ip: string; node: string; netns: string; server?: { pid: number } }>;
}

/** The heredoc YAML blocks of docs/sandbox.md, in order. */
function docPolicies(): string[] {
  const md = readFileSync(join(REPO, 'docs/sandbox.md'), 'utf8');
  return [...md.matchAll(/kubectl apply -f - <<'EOF'\n([\s\S]*?)\nEOF\n/g)].map((m) => m[1]!);
}

async function listNetns(): Promise<string[]> {
  const r = await run('ip', ['netns', 'list']);
  return r.stdout.split('\n').map((l) => l.trim().split(/\s+/)[0] ?? '').filter(Boolean);
}

describe('sandbox: docs/sandbox.md end to end (e2e)', function () {
  this.timeout(0);
  const dir = mkdtempSync('/tmp/kube-npm-sandbox-e2e-');
  let sb: Started | undefined;
  const timings: string[] = [];

  /** `bash hack/sandbox.sh --dir DIR`, resolved once it prints "sandbox ready". */
  const up = async (): Promise<Started> => {
    const t0 = Date.now();
    const env = { ...process.env };
    delete env.NODE_OPTIONS; // the sandbox runs the built CLI, not tsx
    const child = spawn('bash', [join(REPO, 'hack/sandbox.sh'), '--dir', dir], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr!.on('data', (b: Buffer) => (out += b.toString()));
    const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
    const ready = waitFor('"sandbox ready"', async () => /^sandbox ready in /m.test(out), 40 * 60_000, 100);
    const died = exited.then((code) => {
      throw new Error(`hack/sandbox.sh exited (${code}) before "sandbox ready"`);
    });
    await Promise.race([ready, died]).catch((err: unknown) => {
      throw new Error(`${String(err)}\n--- output ---\n${out}`);
    });
    died.catch(() => undefined);
    const kubeconfig = /export KUBECONFIG=(\S+)/.exec(out)?.[1];
    const binDir = /export PATH=([^:\s]+):\$PATH/.exec(out)?.[1];
    const cli = /alias kube-npm='node (\S+)'/.exec(out)?.[1];
    expect(kubeconfig && binDir && cli, out).to.be.a('string');
    return { child, output: () => out, exited, readyMs: Date.now() - t0, kubeconfig: kubeconfig!, binDir: binDir!, cli: cli! };
  };
  const kubectl = async (args: string[], input?: string): Promise<string> => {
    const r = await run(join(sb!.binDir, 'kubectl'), args, { env: { ...process.env, KUBECONFIG: sb!.kubeconfig }, ...(input !== undefined ? { input } : {}), timeoutMs: 120_000 });
    if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
    return r.stdout;
  };
  /** `kube-npm sandbox ...` as the printed alias runs it. */
  const kubeNpm = (args: string[]): Promise<RunResult> => {
    const env = { ...process.env };
    delete env.NODE_OPTIONS;
    return run(process.execPath, [sb!.cli, 'sandbox', ...args, '--dir', dir], { env, timeoutMs: 180_000 });
  };
  const probe = async (from: string, to: string, port: string) => {
    const r = await kubeNpm(['probe', from, to, port]);
    return { code: r.code, text: r.stdout.trim() || r.stderr.trim() };
  };
  const state = (): StateFile => JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as StateFile;
  /** Every pid a sandbox started, from its state file and the control plane's pid files. */
  const pidsOf = (s: StateFile): { name: string; pid: number }[] => [
    { name: 'supervisor', pid: s.supervisor.pid },
    ...s.processes,
    ...Object.entries(s.pods).flatMap(([k, p]) => (p.server ? [{ name: `pod ${k}`, pid: p.server.pid }] : [])),
    ...['etcd', 'kube-apiserver'].map((n) => ({ name: n, pid: Number(readFileSync(join(dir, 'cp', `${n}.pid`), 'utf8')) })),
  ];
  const assertNothingLeft = async (s: StateFile, pids: { name: string; pid: number }[]) => {
    await waitFor('every sandbox process gone', async () => pids.every((p) => !isProcessRunning(p.pid)), 30_000);
    expect((await listNetns()).filter((n) => n.startsWith(s.prefix)), 'namespaces left').to.deep.equal([]);
    expect(existsSync(join(dir, 'state.json')), 'state.json left').to.equal(false);
    expect(existsSync(join(dir, 'env.sh')), 'env.sh left').to.equal(false);
    for (const f of ['etcd.pid', 'kube-apiserver.pid', 'kubeconfig', 'etcd-data']) expect(existsSync(join(dir, 'cp', f)), `cp/${f} left`).to.equal(false);
  };

  before(async function () {
    if (!isRoot) {
      console.warn('      !!! SKIPPED: the sandbox needs root (network namespaces, iptables)');
      this.skip();
    }
    sb = await up();
    timings.push(`first up (build steps cached or not): ${sb.readyMs} ms (${/sandbox ready in ([\d.]+ s)/.exec(sb.output())?.[1]} inside the supervisor)`);
  });

  afterEach(async function () {
    if (this.currentTest?.state !== 'failed' || !sb || !existsSync(join(dir, 'state.json'))) return;
    const s = state();
    for (const k of [1, 2]) {
      const ipt = await run('ip', ['netns', 'exec', `${s.prefix}n${k}`, 'iptables-save', '-c', '-t', 'filter']);
      const sets = await run('ip', ['netns', 'exec', `${s.prefix}n${k}`, 'ipset', 'list', '-o', 'save']);
      console.log(`----- node n${k} iptables\n${ipt.stdout}\n----- node n${k} ipsets\n${sets.stdout}`);
    }
    console.log(await kubectl(['get', 'pods,nrs,nips,npmnodes', '-A', '-o', 'wide']).catch(String));
  });

  after(async () => {
    // Whatever happened: remove everything (down is idempotent), then the test dir.
    if (sb && sb.child.exitCode === null) {
      sb.child.kill('SIGTERM');
      await sb.exited;
    }
    if (isRoot) {
      const env = { ...process.env };
      delete env.NODE_OPTIONS;
      await run(process.execPath, [join(REPO, 'dist/operator/src/cli/sandbox.js'), 'down', '--dir', dir], { env, timeoutMs: 180_000 });
    }
    rmSync(dir, { recursive: true, force: true });
    for (const t of timings) console.log(`      ${t}`);
  });

  it('the sample workload runs: Nodes Ready, pods Running with their IPs, on both nodes', async () => {
    const nodes = await kubectl(['get', 'nodes']);
    expect(nodes).to.match(/n1\s+Ready/).and.to.match(/n2\s+Ready/);
    const pods = JSON.parse(await kubectl(['get', 'pods', '-A', '-o', 'json'])) as { items: { metadata: { namespace: string; name: string }; spec: { nodeName: string }; status: { phase: string; podIP: string } }[] };
    const s = state();
    const byKey = new Map(pods.items.map((p) => [`${p.metadata.namespace}/${p.metadata.name}`, p]));
    expect([...byKey.keys()].sort()).to.deep.equal(['demo/cache', 'demo/db', 'demo/web', 'other/client']);
    for (const [k, p] of byKey) {
      expect(p.status.phase, k).to.equal('Running');
      expect(p.status.podIP, k).to.equal(s.pods[k]!.ip);
      expect(p.status.podIP, k).to.match(new RegExp(`^10\\.244\\.${p.spec.nodeName.slice(1)}\\.\\d+$`));
    }
    expect(new Set(pods.items.map((p) => p.spec.nodeName))).to.deep.equal(new Set(['n1', 'n2']));
  });

  it('no policy: probes connect (TCP and UDP)', async () => {
    expect(await probe('demo/web', 'demo/db', '80/tcp')).to.include({ code: 0 }).and.to.have.property('text').that.matches(/^allowed \(\d+ ms\)/);
    expect((await probe('other/client', 'demo/db', '53/udp')).code).to.equal(0);
  });

  it('deny-all from the docs: Programmed on 2/2 nodes, probes into demo denied', async () => {
    const [denyAll] = docPolicies();
    expect(denyAll).to.contain('name: deny-all');
    await kubectl(['apply', '-f', '-'], denyAll);
    await kubectl(['-n', 'demo', 'wait', '--for=create', 'nrs/deny-all', '--timeout=60s']);
    await kubectl(['-n', 'demo', 'wait', '--for=condition=Programmed', 'nrs/deny-all', '--timeout=60s']);
    expect(await kubectl(['get', 'nrs', '-A'])).to.match(/demo\s+deny-all\s+Ingress\s+1\s+0\s+2\/2\s+True\s+True/);
    const denied = await probe('demo/web', 'demo/db', '80/tcp');
    expect(denied).to.deep.equal({ code: 1, text: 'denied (timeout 1000 ms): demo/web -> demo/db (' + state().pods['demo/db']!.ip + ') 80/tcp' });
    expect((await probe('other/client', 'demo/db', '53/udp')).code).to.equal(1);
    expect((await probe('demo/db', 'other/client', '80/tcp')).code, 'other/ has no policy').to.equal(0);
    // Let through but nothing listens: an answer (RST / ICMP port unreachable), not a drop: exit 3.
    expect(await probe('demo/db', 'other/client', '81/tcp')).to.include({ code: 3 }).and.to.have.property('text').that.matches(/^refused \(ECONNREFUSED after \d+ ms\): .*nothing listens on 81\/tcp there/);
    expect((await probe('demo/db', 'other/client', '54/udp')).code, 'UDP: ICMP port unreachable').to.equal(3);
    // An address no pod has: probed, and the verdict says it is not a pod.
    const free = state().pods['other/client']!.ip.replace(/\.\d+$/, '.250');
    expect((await probe('demo/db', free, '80/tcp')).text).to.include(`[${free}: not a pod: no sandbox pod has this address`);
    expect((await probe('demo/db', 'db', '80/tcp')).code, 'TO neither NS/NAME nor an address').to.equal(2);
    // "Which policy blocks me?" (docs/sandbox.md): the live trace names the pods and the policy.
    const env: NodeJS.ProcessEnv = { ...process.env, KUBECONFIG: sb!.kubeconfig };
    delete env.NODE_OPTIONS;
    const trace = await run(process.execPath, [sb!.cli, 'debug', 'trace', '--from', 'demo/web', '--to', 'demo/db', '--port', '80/tcp'], { env, timeoutMs: 60_000 });
    const nodeOf = async (name: string) => (await kubectl(['-n', 'demo', 'get', 'pod', name, '-o', 'jsonpath={.spec.nodeName}'])).trim();
    const web = `demo/web (${state().pods['demo/web']!.ip} on ${await nodeOf('web')})`;
    const db = `demo/db (${state().pods['demo/db']!.ip} on ${await nodeOf('db')})`;
    expect(trace.code, trace.stderr).to.equal(1);
    expect(trace.stdout).to.equal(
      `${web} -> ${db} TCP/80: DENIED\n` +
        `  egress of ${web}: not isolated (no policy selects it)\n` +
        `  ingress of ${db}: isolated by demo/deny-all [Programmed]; no rule of these policies allows it -> DROP\n`,
    );
  });

  it('allow-web-to-db from the docs: web -> db 80/tcp allowed, nothing else', async () => {
    const [, allow] = docPolicies();
    expect(allow).to.contain('name: allow-web-to-db');
    await kubectl(['apply', '-f', '-'], allow);
    await kubectl(['-n', 'demo', 'wait', '--for=create', 'nrs/allow-web-to-db', '--timeout=60s']);
    await kubectl(['-n', 'demo', 'wait', '--for=condition=Programmed', 'nrs/allow-web-to-db', '--timeout=60s']);
    const s = state();
    const where = `web on ${s.pods['demo/web']!.node}, db on ${s.pods['demo/db']!.node}`;
    expect(await probe('demo/web', 'demo/db', '80/tcp'), where).to.include({ code: 0 });
    expect((await probe('demo/cache', 'demo/db', '80/tcp')).code).to.equal(1);
    expect((await probe('demo/web', 'demo/db', '53/udp')).code).to.equal(1);
    const describe = await kubectl(['-n', 'demo', 'describe', 'nrs', 'allow-web-to-db']);
    expect(describe).to.contain('allow TCP/80 from pods with app=web in namespace demo');
  });

  it('the metrics endpoints of the docs answer', async () => {
    const cluster = await (await fetch('http://127.0.0.1:10091/cluster-metrics')).text();
    expect(cluster).to.match(/^npm_num_policies \d+/m);
    for (const port of [10092, 10093]) {
      const node = await fetch(`http://127.0.0.1:${port}/node-metrics`);
      expect(node.status, `:${port}`).to.equal(200);
    }
  });

  it('your own pod: `kubectl run` gets a namespace, an IP and a server; `kubectl delete` removes them', async () => {
    await kubectl(['-n', 'demo', 'run', 'x', '--image=any', '--port=8080', '--labels=app=web']);
    await kubectl(['-n', 'demo', 'wait', '--for=condition=Ready', 'pod/x', '--timeout=60s']);
    const x = state().pods['demo/x']!;
    expect(x.ip).to.match(/^10\.244\.[12]\.\d+$/);
    expect(await listNetns()).to.include(x.netns);
    // app=web: allowed into db by the docs' policy, on the port it declares.
    expect((await probe('demo/x', 'demo/db', '80/tcp')).code).to.equal(0);
    expect((await probe('other/client', 'demo/x', '8080/tcp')).code, 'deny-all isolates demo/x').to.equal(1);
    await kubectl(['-n', 'demo', 'delete', 'pod', 'x', '--wait=true', '--timeout=60s']);
    await waitFor('demo/x namespace removed', async () => !state().pods['demo/x'] && !(await listNetns()).includes(x.netns), 10_000);
  });

  it('sandbox down (another shell): the supervisor exits 0 and nothing is left', async () => {
    const s = state();
    const pids = pidsOf(s);
    const t0 = Date.now();
    const down = await kubeNpm(['down']);
    timings.push(`sandbox down: ${Date.now() - t0} ms`);
    expect(down.code, down.stdout + down.stderr).to.equal(0);
    expect(await sb!.exited, sb!.output()).to.equal(0);
    expect(sb!.output()).to.match(/sandbox stopped in/);
    await assertNothingLeft(s, pids);
    expect((await kubeNpm(['probe', 'demo/web', 'demo/db', '80/tcp'])).code, 'probe without a sandbox').to.equal(2);
  });

  it('crash: after a SIGKILL of the supervisor, `up` removes the leftovers first, and so does `down`', async () => {
    // Round 1: kill, then up again.
    sb = await up();
    timings.push(`up (everything cached): ${sb.readyMs} ms`);
    let s = state();
    let pids = pidsOf(s);
    process.kill(s.supervisor.pid, 'SIGKILL');
    await sb.exited;
    const survivors = pids.filter((p) => p.name !== 'supervisor' && isProcessRunning(p.pid)).map((p) => p.name);
    expect(survivors, 'the crash leaves processes behind').to.include.members(['operator', 'agent-n1', 'kube-apiserver', 'etcd']);
    expect((await listNetns()).filter((n) => n.startsWith(s.prefix)).length, 'and namespaces').to.be.greaterThan(3);
    sb = await up();
    timings.push(`up after a crash (cleans leftovers first): ${sb.readyMs} ms`);
    expect(sb.output()).to.contain('cleanup: leftovers of a previous sandbox removed');
    for (const p of pids) expect(isProcessRunning(p.pid), `old ${p.name} (${p.pid})`).to.equal(false);
    expect((await probe('demo/web', 'demo/db', '80/tcp')).code, 'the new sandbox works').to.equal(0);

    // Round 2: kill, then down.
    s = state();
    pids = pidsOf(s);
    process.kill(s.supervisor.pid, 'SIGKILL');
    await sb.exited;
    const down = await kubeNpm(['down']);
    expect(down.code, down.stdout + down.stderr).to.equal(0);
    expect(down.stdout).to.match(/cleanup: stopping \d+ leftover process/);
    await assertNothingLeft(s, pids);
  });
});
