/**
 * `kube-npm sandbox up|down|probe`: the supervisor of a local sandbox.
 *
 * up (foreground): cleans the leftovers of a previous sandbox in DIR, starts the control plane
 * (hack/controlplane/up.sh DIR/cp), the node namespaces, the netns kubelet (in-process), the
 * operator and one agent per node (child processes, logs in DIR/logs), applies the sample workload,
 * prints what to do next and waits for SIGINT/SIGTERM; then removes everything it created.
 * Everything it creates is recorded in DIR/state.json first, so `down` (from another shell) and the
 * next `up` can remove it even after a SIGKILL.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream, existsSync, mkdirSync, readFileSync, rmSync, writeFileSync, type WriteStream } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { loadKubeConfig } from '../cli/flags.js';
import { NetnsKubelet } from './kubelet.js';
import { deleteNetnsWithPrefix, inNetns, listNetns, spawnRunner, type CommandRunner } from './netns.js';
import {
  cliPath,
  defaultDir,
  isAlive,
  normalizeDir,
  podServerPath,
  prefixFor,
  procRef,
  readState,
  removeState,
  repoRoot,
  sandboxCliArgv,
  sleep,
  stopProcess,
  writeState,
  type ProcRef,
  type SandboxState,
} from './state.js';
import { Topology } from './topology.js';
import { SAMPLE_PODS, sampleWorkload } from './workload.js';
import { parseEnvFile } from './envfile.js';
import { PROBE_BAD_INPUT, probeVerdict, resolveTarget, type ProbeResult } from './probe.js';

export interface SandboxIO {
  stdout: (s: string) => void;
  stderr: (s: string) => void;
}

export interface UpOptions {
  dir?: string;
  nodes?: number;
  /** Operator metrics port; agent of node k: base + k. Default 10091. */
  metricsPort?: number;
  runner?: CommandRunner;
}

class StopRequested extends Error {}

function secs(ms: number): string {
  return `${(ms / 1000).toFixed(1)} s`;
}

function runScript(cmd: string, args: string[], logFile: string, env: NodeJS.ProcessEnv = process.env): Promise<{ code: number; stdout: string }> {
  return new Promise((resolve, reject) => {
    const log = createWriteStream(logFile, { flags: 'a' });
    // Own process group: a Ctrl-C in the terminal reaches the supervisor only, which stops things in order.
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env, detached: true });
    let stdout = '';
    child.stdout.on('data', (b: Buffer) => {
      stdout += b.toString('utf8');
      log.write(b);
    });
    child.stderr.pipe(log, { end: false });
    child.on('error', reject);
    child.on('close', (code) => {
      log.end();
      resolve({ code: code ?? 1, stdout });
    });
  });
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen(port, '127.0.0.1', () => srv.close(() => resolve(true)));
  });
}

async function httpOk(url: string): Promise<boolean> {
  try {
    const r = await fetch(url, { signal: AbortSignal.timeout(2000) });
    return r.ok;
  } catch {
    return false;
  }
}

function controlPlaneRunning(cpDir: string): boolean {
  for (const f of ['kube-apiserver.pid', 'etcd.pid']) {
    try {
      const pid = Number(readFileSync(join(cpDir, f), 'utf8').trim());
      if (pid > 0 && isAlive({ name: f, pid })) return true;
    } catch {
      /* no pid file */
    }
  }
  return false;
}

/**
 * Removes whatever a previous sandbox in DIR left: its processes (from the state file, guarded by
 * start time), every namespace with its prefix, its control plane, its state file. Idempotent.
 * Returns a summary of what was found.
 */
export async function cleanupLeftovers(dirArg: string, log: (s: string) => void, runner: CommandRunner = spawnRunner): Promise<{ processes: number; namespaces: number; controlPlane: boolean }> {
  const dir = normalizeDir(dirArg);
  const s = readState(dir);
  let processes = 0;
  if (s) {
    const refs: ProcRef[] = [...s.processes, ...Object.values(s.pods).flatMap((p) => (p.server ? [p.server] : []))];
    const alive = refs.filter(isAlive);
    processes = alive.length;
    if (alive.length) log(`stopping ${alive.length} leftover process(es): ${alive.map((r) => `${r.name} (${r.pid})`).join(', ')}`);
    await Promise.all(alive.map((r) => stopProcess(r, 5000)));
  }
  const ns = await deleteNetnsWithPrefix(prefixFor(dir), runner);
  if (ns.length) log(`deleted ${ns.length} leftover network namespace(s) ${prefixFor(dir)}*`);
  const cpDir = join(dir, 'cp');
  let controlPlane = false;
  if (existsSync(cpDir) && (existsSync(join(cpDir, 'kube-apiserver.pid')) || existsSync(join(cpDir, 'etcd.pid')))) {
    controlPlane = controlPlaneRunning(cpDir);
    if (controlPlane) log('stopping the leftover control plane');
    const r = await runScript('bash', [join(repoRoot(), 'hack', 'controlplane', 'down.sh'), cpDir], join(dir, 'logs', 'controlplane.log'));
    if (r.code !== 0) throw new Error(`hack/controlplane/down.sh ${cpDir} failed; see ${join(dir, 'logs', 'controlplane.log')}`);
  }
  removeState(dir);
  rmSync(join(dir, 'env.sh'), { force: true });
  return { processes, namespaces: ns.length, controlPlane };
}

/** `sandbox up`: resolves with the exit code once the sandbox has been stopped and removed. */
export async function sandboxUp(opts: UpOptions, io: SandboxIO): Promise<number> {
  const t0 = performance.now();
  const dir = normalizeDir(opts.dir ?? defaultDir());
  const nodes = opts.nodes ?? 2;
  const metricsPort = opts.metricsPort ?? 10091;
  const runner = opts.runner ?? spawnRunner;
  const root = repoRoot();
  const logsDir = join(dir, 'logs');
  mkdirSync(logsDir, { recursive: true });
  const supLog = createWriteStream(join(logsDir, 'supervisor.log'), { flags: 'a' });
  const say = (s: string) => {
    io.stdout(`${s}\n`);
    supLog.write(`${new Date().toISOString()} ${s}\n`);
  };
  const quiet = (s: string) => supLog.write(`${new Date().toISOString()} ${s}\n`);

  const topology = new Topology(prefixFor(dir), nodes, runner);
  const prev = readState(dir);
  if (prev && prev.supervisor.pid !== process.pid && isAlive(prev.supervisor)) {
    io.stderr(`error: a sandbox is already running in ${dir} (supervisor pid ${prev.supervisor.pid}); stop it with \`kube-npm sandbox down --dir ${dir}\`\n`);
    return 1;
  }
  if (!existsSync(cliPath(root))) {
    io.stderr(`error: ${cliPath(root)} is missing: run \`npm run build\` (hack/sandbox.sh does)\n`);
    return 1;
  }
  const found = await cleanupLeftovers(dir, (s) => say(`cleanup: ${s}`), runner);
  if (found.processes + found.namespaces > 0 || found.controlPlane) say('cleanup: leftovers of a previous sandbox removed');

  const ports = [metricsPort, ...topology.nodes().map((n) => metricsPort + n.index)];
  for (const p of ports) {
    if (!(await portFree(p))) {
      io.stderr(`error: 127.0.0.1:${p} is in use (the sandbox serves metrics on ${ports.join(', ')}); another sandbox? \`kube-npm sandbox down\`, or --metrics-port\n`);
      return 1;
    }
  }

  const state: SandboxState = {
    version: 1,
    dir,
    prefix: topology.prefix,
    nodes: topology.nodes().map((n) => ({ name: n.name, netns: n.ns, underlayIp: n.underlayIp, podSubnet: n.podSubnet })),
    fabricNs: topology.fabricNs(),
    supervisor: procRef('supervisor', process.pid),
    processes: [],
    pods: {},
    controlPlaneDir: join(dir, 'cp'),
    phase: 'starting',
    startedAt: new Date().toISOString(),
  };
  writeState(state);

  let stopRequested = false;
  let wake: () => void = () => undefined;
  const stopped = new Promise<void>((r) => (wake = r));
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopRequested) {
      say(`${sig}: already stopping`);
      return;
    }
    stopRequested = true;
    say(`${sig}: stopping the sandbox`);
    wake();
  };
  const sigs: NodeJS.Signals[] = ['SIGINT', 'SIGTERM', 'SIGHUP'];
  for (const s of sigs) process.on(s, onSignal);
  const checkStop = () => {
    if (stopRequested) throw new StopRequested('stop requested during start-up');
  };

  const children: { ref: ProcRef; child: ChildProcess; log: WriteStream }[] = [];
  let kubelet: NetnsKubelet | undefined;
  let shuttingDown = false;
  const persist = () => {
    if (kubelet) state.pods = Object.fromEntries(kubelet.pods().map((p) => [p.key, p]));
    state.processes = children.map((c) => c.ref);
    writeState(state);
  };
  const startChild = (name: string, args: string[]) => {
    const logFile = join(logsDir, `${name}.log`);
    const log = createWriteStream(logFile, { flags: 'a' });
    const child = spawn(process.execPath, [cliPath(root), ...args], { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    child.stdout!.pipe(log, { end: false });
    child.stderr!.pipe(log, { end: false });
    child.on('close', () => log.end());
    const ref = procRef(name, child.pid!);
    children.push({ ref, child, log });
    persist();
    child.on('exit', (code, signal) => {
      if (!shuttingDown) say(`warning: ${name} exited (code ${code}, signal ${signal}); see ${logFile}`);
    });
  };

  /** Stops and removes everything this supervisor started; throws if something is left. */
  const teardown = async () => {
    const t = performance.now();
    await kubelet?.stop();
    await Promise.all(children.map((c) => stopProcess(c.ref, 10_000)));
    await kubelet?.teardownAll();
    await deleteNetnsWithPrefix(topology.prefix, runner);
    if (existsSync(join(state.controlPlaneDir, 'etcd.pid')) || existsSync(join(state.controlPlaneDir, 'kube-apiserver.pid'))) {
      const down = await runScript('bash', [join(root, 'hack', 'controlplane', 'down.sh'), state.controlPlaneDir], join(logsDir, 'controlplane.log'));
      if (down.code !== 0) throw new Error(`hack/controlplane/down.sh failed; see ${join(logsDir, 'controlplane.log')}`);
    }
    removeState(dir);
    rmSync(join(dir, 'env.sh'), { force: true });
    say(`sandbox stopped in ${secs(performance.now() - t)}; logs kept in ${logsDir}`);
  };

  let code = 0;
  try {
    // 1. Control plane.
    let t = performance.now();
    say(`starting the control plane in ${state.controlPlaneDir} (logs: ${join(logsDir, 'controlplane.log')})`);
    const up = await runScript('bash', [join(root, 'hack', 'controlplane', 'up.sh'), state.controlPlaneDir], join(logsDir, 'controlplane.log'));
    if (up.code !== 0) throw new Error(`hack/controlplane/up.sh failed (exit ${up.code}); see ${join(logsDir, 'controlplane.log')}`);
    const env = parseEnvFile(readFileSync(join(state.controlPlaneDir, 'controlplane.env'), 'utf8'));
    state.kubeconfig = join(state.controlPlaneDir, 'kubeconfig');
    state.binDir = env.get('KUBE_NPM_BIN_DIR');
    persist();
    say(`control plane up in ${secs(performance.now() - t)}: ${env.get('APISERVER_URL')}`);
    checkStop();

    // 2. Nodes.
    t = performance.now();
    await topology.createNodes();
    say(`${nodes} node(s) up in ${secs(performance.now() - t)}: ${topology.nodes().map((n) => `${n.name} (${n.ns}, pods ${n.podSubnet})`).join(', ')}`);
    checkStop();

    // 3. Kubelet, operator, agents.
    const kc = loadKubeConfig(state.kubeconfig);
    kubelet = new NetnsKubelet({ kc, topology, runner, podServer: podServerPath(root), log: say, onChange: persist });
    await kubelet.registerNodes();
    await kubelet.start();
    startChild('operator', ['operator', '--kubeconfig', state.kubeconfig, '--metrics-bind-address', `127.0.0.1:${metricsPort}`, '--metrics-secure=false', '--leader-elect=false']);
    for (const n of topology.nodes()) {
      startChild(`agent-${n.name}`, ['agent', '--node-name', n.name, '--netns', n.ns, '--kubeconfig', state.kubeconfig, '--metrics-bind-address', `127.0.0.1:${metricsPort + n.index}`, '--metrics-secure=false']);
    }
    checkStop();

    // 4. Sample workload.
    const kubectl = join(state.binDir ?? '', 'kubectl');
    const applied = await new Promise<number>((resolve, reject) => {
      const c = spawn(kubectl, ['--kubeconfig', state.kubeconfig!, 'apply', '-f', '-'], { stdio: ['pipe', 'pipe', 'pipe'] });
      let out = '';
      c.stdout.on('data', (b: Buffer) => (out += b.toString()));
      c.stderr.on('data', (b: Buffer) => (out += b.toString()));
      c.on('error', reject);
      c.on('close', (rc) => {
        quiet(`kubectl apply (sample workload): ${out.trim()}`);
        resolve(rc ?? 1);
      });
      c.stdin.end(JSON.stringify(sampleWorkload()));
    });
    if (applied !== 0) throw new Error('applying the sample workload failed; see logs/supervisor.log');
    say(`sample workload applied: namespaces demo, other; pods ${SAMPLE_PODS.map((p) => `${p.namespace}/${p.name}`).join(', ')}`);

    // 5. Ready when every sample pod runs and the operator and agents are ready.
    const want = SAMPLE_PODS.map((p) => `${p.namespace}/${p.name}`);
    const deadline = Date.now() + 120_000;
    for (;;) {
      checkStop();
      const running = new Set(kubelet.runningKeys());
      const podsOk = want.every((k) => running.has(k));
      const probes = await Promise.all(ports.map((p) => httpOk(`http://127.0.0.1:${p}/readyz`)));
      if (podsOk && probes.every(Boolean)) break;
      if (Date.now() > deadline) {
        const notReady = ports.filter((_, i) => !probes[i]).map((p) => `127.0.0.1:${p}/readyz`);
        throw new Error(`not ready after 120 s: pods running ${[...running].join(', ') || 'none'}; not ready: ${notReady.join(', ') || 'none'} (logs in ${logsDir})`);
      }
      await sleep(200);
    }
    state.phase = 'ready';
    persist();
    // main.js once it dispatches `sandbox`; until then the standalone sandbox.js (which accepts a
    // leading `sandbox` argument, so `kube-npm sandbox probe ...` reads the same either way).
    const envLines = [`export KUBECONFIG=${state.kubeconfig}`, `export PATH=${state.binDir}:$PATH`, `alias kube-npm='node ${sandboxCliArgv(root)[0]}'`];
    writeFileSync(join(dir, 'env.sh'), envLines.join('\n') + '\n');
    const dirFlag = dir === normalizeDir(defaultDir()) ? '' : ` --dir ${dir}`;
    say(
      [
        '',
        `sandbox ready in ${secs(performance.now() - t0)}: ${nodes} nodes, ${want.length} pods, operator metrics 127.0.0.1:${metricsPort}/cluster-metrics, node metrics ${topology
          .nodes()
          .map((n) => `127.0.0.1:${metricsPort + n.index}/node-metrics`)
          .join(', ')}`,
        '',
        'In another shell (or `source ' + join(dir, 'env.sh') + '`):',
        ...envLines.map((l) => `  ${l}`),
        '  kubectl get pods -A -o wide',
        '  kubectl get nrs -A',
        `  kube-npm sandbox probe demo/web demo/db 80/tcp${dirFlag}`,
        '',
        `Logs: ${logsDir}. Stop: Ctrl-C here, or \`kube-npm sandbox down${dirFlag}\`.`,
        '',
      ].join('\n'),
    );
    await stopped;
  } catch (err) {
    if (!(err instanceof StopRequested)) {
      say(`error: ${err instanceof Error ? err.message : String(err)}`);
      code = 1;
    }
  } finally {
    shuttingDown = true;
    state.phase = 'stopping';
    writeState(state);
    try {
      await teardown();
    } catch (err) {
      say(`error while stopping: ${err instanceof Error ? err.message : String(err)}; \`kube-npm sandbox down --dir ${dir}\` retries`);
      code = 1;
    }
    for (const s of sigs) process.off(s, onSignal);
    supLog.end();
  }
  return code;
}

/** `sandbox down`: asks a running supervisor to stop, then removes whatever is left. */
export async function sandboxDown(opts: { dir?: string; runner?: CommandRunner }, io: SandboxIO): Promise<number> {
  const dir = normalizeDir(opts.dir ?? defaultDir());
  const say = (s: string) => io.stdout(`${s}\n`);
  const s = readState(dir);
  if (s && s.supervisor.pid !== process.pid && isAlive(s.supervisor)) {
    say(`stopping the sandbox supervisor (pid ${s.supervisor.pid})`);
    process.kill(s.supervisor.pid, 'SIGTERM');
    const end = Date.now() + 90_000;
    while (isAlive(s.supervisor) && Date.now() < end) await sleep(100);
    if (isAlive(s.supervisor)) {
      say(`supervisor still running after 90 s: SIGKILL`);
      process.kill(s.supervisor.pid, 'SIGKILL');
      await sleep(200);
    }
  }
  const r = await cleanupLeftovers(dir, (m) => say(`cleanup: ${m}`), opts.runner);
  const left = (await listNetns(opts.runner)).filter((n) => n.startsWith(prefixFor(dir)));
  if (left.length) {
    io.stderr(`error: namespaces left: ${left.join(', ')}\n`);
    return 1;
  }
  say(s || r.namespaces || r.processes || r.controlPlane ? `sandbox in ${dir} is down` : `no sandbox in ${dir}: nothing to do`);
  return 0;
}

export interface ProbeOptions {
  dir?: string;
  from: string;
  to: string;
  port: number;
  protocol: 'TCP' | 'UDP';
  timeoutMs: number;
  runner?: CommandRunner;
}

/**
 * `sandbox probe FROM TO PORT/PROTO`: exit 0 allowed, 1 denied (silent timeout: what a policy drop
 * looks like), 2 bad input or no sandbox, 3 refused or unreachable (an answer that is not a drop).
 * See probe.ts.
 */
export async function sandboxProbe(o: ProbeOptions, io: SandboxIO): Promise<number> {
  const dir = normalizeDir(o.dir ?? defaultDir());
  const s = readState(dir);
  if (!s) {
    io.stderr(`error: no sandbox in ${dir} (no state.json); start one with hack/sandbox.sh or \`kube-npm sandbox up\`\n`);
    return PROBE_BAD_INPUT;
  }
  const from = s.pods[o.from];
  if (!from) {
    const known = Object.keys(s.pods).sort().join(', ') || 'none yet';
    io.stderr(`error: no running sandbox pod ${o.from} (pods: ${known}); FROM must be a pod (NS/NAME)\n`);
    return PROBE_BAD_INPUT;
  }
  const target = resolveTarget(s, o.to);
  if (target.kind === 'error') {
    io.stderr(`error: ${target.message}\n`);
    return PROBE_BAD_INPUT;
  }
  const host = target.ip;
  const req = JSON.stringify({ host, port: o.port, protocol: o.protocol, timeoutMs: o.timeoutMs });
  const runner = o.runner ?? spawnRunner;
  const res = await runner(inNetns(from.netns, [process.execPath, podServerPath(), 'probe', req]), { timeoutMs: o.timeoutMs + 10_000 });
  let r: ProbeResult & { unsupported?: boolean } = {};
  try {
    r = JSON.parse(res.stdout.trim().split('\n').pop() ?? '') as typeof r;
  } catch {
    io.stderr(`error: probe from ${o.from} failed (exit ${res.code}): ${res.stderr.trim()}\n`);
    return PROBE_BAD_INPUT;
  }
  if (r.unsupported) {
    io.stderr(`error: ${r.error}\n`);
    return PROBE_BAD_INPUT;
  }
  const to = target.kind === 'pod' && target.key !== o.to ? `${o.to} (pod ${target.key})` : `${o.to} (${host})`;
  const what = `${o.from} -> ${to} ${o.port}/${o.protocol.toLowerCase()}`;
  const v = probeVerdict(r, { what, timeoutMs: o.timeoutMs, port: o.port, protocol: o.protocol, target });
  io.stdout(`${v.line}\n`);
  return v.exit;
}
