// A real control plane (etcd + kube-apiserver on 127.0.0.1) for mocha tests.
//
//   const cp = await startControlPlane();       // build once (cached), start
//   await cp.kubectl(['get', 'ns']);             // kubectl against it
//   await cp.stop();                             // SIGTERM/SIGKILL, remove data
//
// It drives hack/controlplane/{build,up,down}.sh; see hack/controlplane/README.md
// for the pinned versions, the cache and the env overrides (KUBE_APISERVER,
// ETCD, KUBECTL, KUBEBUILDER_ASSETS, KUBE_NPM_CACHE).
import { spawn } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseEnvFile } from '../../operator/src/sandbox/envfile.js';

export const CONTROLPLANE_SCRIPTS_DIR = fileURLToPath(new URL('../../hack/controlplane/', import.meta.url));

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface ControlPlaneOptions {
  /** Folder for pki, etcd data, logs and kubeconfig; default: a fresh temp dir. */
  dir?: string;
  /** Keep `dir` (logs) after stop(); default false, or true when KUBE_NPM_KEEP_CONTROLPLANE=1. */
  keepDir?: boolean;
  /** Extra environment for the scripts (e.g. KUBE_APISERVER, APISERVER_PORT, CRDS_DIR). */
  env?: NodeJS.ProcessEnv;
  /** Bound on build.sh; default 60 minutes (a cold build takes ~15 min on 2 cores). */
  buildTimeoutMs?: number;
  /** Bound on up.sh; default 5 minutes. */
  upTimeoutMs?: number;
  /** Where the scripts' progress (stderr) goes; default process.stderr. Pass () => {} to silence. */
  log?: (chunk: string) => void;
}

export interface ControlPlane {
  dir: string;
  kubeconfigPath: string;
  binDir: string;
  /** https://127.0.0.1:PORT */
  server: string;
  /** Bearer token of a system:masters user. */
  token: string;
  /** CA bundle (PEM) that signed the serving certificate. */
  caPem: string;
  pids: { etcd: number; apiserver: number };
  /** Run kubectl (from binDir) against this control plane; never rejects on a non-zero exit. */
  kubectl(args: string[], opts?: { input?: string; timeoutMs?: number }): Promise<RunResult>;
  /** Stop etcd and kube-apiserver and remove the data; idempotent. */
  stop(): Promise<void>;
}

interface RunOptions {
  env?: NodeJS.ProcessEnv;
  input?: string;
  timeoutMs?: number;
  onStderr?: (chunk: string) => void;
}

/** Run a program; resolve with its exit code and output (a signal counts as code 128+n, -1 if unknown). */
export function run(cmd: string, args: string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      env: opts.env ?? process.env,
      stdio: ['pipe', 'pipe', 'pipe'],
      timeout: opts.timeoutMs,
      killSignal: 'SIGKILL',
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (c: string) => {
      stdout += c;
    });
    child.stderr.setEncoding('utf8').on('data', (c: string) => {
      stderr += c;
      opts.onStderr?.(c);
    });
    child.on('error', reject);
    child.on('close', (code, signal) => {
      if (code === null && signal === 'SIGKILL' && opts.timeoutMs !== undefined) {
        stderr += `\n[killed: ${cmd} ran longer than ${opts.timeoutMs} ms]\n`;
      }
      resolve({ code: code ?? (signal ? 128 + signalNumber(signal) : -1), stdout, stderr });
    });
    child.stdin.on('error', () => {
      /* the program may exit without reading its input */
    });
    child.stdin.end(opts.input ?? '');
  });
}

function signalNumber(signal: NodeJS.Signals): number {
  const n: Record<string, number> = { SIGHUP: 1, SIGINT: 2, SIGKILL: 9, SIGTERM: 15 };
  return n[signal] ?? 0;
}

function lastLine(text: string): string {
  const lines = text.split('\n').map((l) => l.trim()).filter((l) => l !== '');
  return lines[lines.length - 1] ?? '';
}

/** The k8s.io/kubernetes version pinned in hack/controlplane/go/go.mod, e.g. "v1.35.4". */
export function pinnedKubernetesVersion(): string {
  const gomod = readFileSync(join(CONTROLPLANE_SCRIPTS_DIR, 'go', 'go.mod'), 'utf8');
  const m = /^\s*k8s\.io\/kubernetes\s+(v\S+)/m.exec(gomod);
  if (!m?.[1]) throw new Error('k8s.io/kubernetes is not pinned in hack/controlplane/go/go.mod');
  return m[1];
}

/** True while `pid` exists and is not a zombie waiting for its reaper. */
export function isProcessRunning(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ESRCH') return false;
    throw err;
  }
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const state = stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3);
    return state !== 'Z' && state !== 'X';
  } catch {
    return !existsSync('/proc/self/stat'); // no procfs: trust kill(0)
  }
}

/** Build (or find cached / given) binaries; resolves with the bin dir holding kube-apiserver, etcd, kubectl. */
export async function buildControlPlane(opts: ControlPlaneOptions = {}): Promise<string> {
  const log = opts.log ?? ((c: string) => void process.stderr.write(c));
  const res = await run('bash', [join(CONTROLPLANE_SCRIPTS_DIR, 'build.sh')], {
    env: { ...process.env, ...opts.env },
    timeoutMs: opts.buildTimeoutMs ?? 60 * 60_000,
    onStderr: log,
  });
  if (res.code !== 0) {
    throw new Error(`hack/controlplane/build.sh failed (exit ${res.code}):\n${res.stderr.slice(-4000)}`);
  }
  const binDir = lastLine(res.stdout);
  if (!binDir) throw new Error('hack/controlplane/build.sh printed no bin dir');
  return binDir;
}

function required(env: Map<string, string>, key: string): string {
  const v = env.get(key);
  if (v === undefined || v === '') throw new Error(`controlplane.env has no ${key}`);
  return v;
}

// Processes of control planes not stopped yet: killed if the test process exits first.
const live = new Set<number>();
let exitHookInstalled = false;
function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  process.on('exit', () => {
    for (const pid of live) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        /* already gone */
      }
    }
  });
}

/** Build once (cached), then start etcd + kube-apiserver in a fresh dir and wait until ready. */
export async function startControlPlane(opts: ControlPlaneOptions = {}): Promise<ControlPlane> {
  const log = opts.log ?? ((c: string) => void process.stderr.write(c));
  const binDir = await buildControlPlane({ ...opts, log });
  const dir = opts.dir ?? (await mkdtemp(join(tmpdir(), 'kube-npm-cp-')));
  const keepDir = opts.keepDir ?? process.env.KUBE_NPM_KEEP_CONTROLPLANE === '1';
  const scriptEnv: NodeJS.ProcessEnv = { ...process.env, ...opts.env, KUBE_NPM_BIN_DIR: binDir };

  const up = await run('bash', [join(CONTROLPLANE_SCRIPTS_DIR, 'up.sh'), dir], {
    env: scriptEnv,
    timeoutMs: opts.upTimeoutMs ?? 5 * 60_000,
    onStderr: log,
  });
  if (up.code !== 0) {
    // up.sh stops what it started on failure; make sure, then keep the logs.
    await run('bash', [join(CONTROLPLANE_SCRIPTS_DIR, 'down.sh'), dir], { env: scriptEnv });
    throw new Error(`hack/controlplane/up.sh failed (exit ${up.code}); logs in ${dir}:\n${up.stderr.slice(-6000)}`);
  }

  const env = parseEnvFile(await readFile(join(dir, 'controlplane.env'), 'utf8'));
  const kubeconfigPath = join(dir, 'kubeconfig');
  const pids = { etcd: Number(required(env, 'ETCD_PID')), apiserver: Number(required(env, 'APISERVER_PID')) };
  live.add(pids.etcd);
  live.add(pids.apiserver);
  installExitHook();
  const caPem = await readFile(join(dir, 'pki', 'ca.crt'), 'utf8');

  // Remove the whole temp dir on stop unless asked to keep it (or it was given).
  const purge = !keepDir && opts.dir === undefined;
  let stopped: Promise<void> | undefined;
  const stop = async (): Promise<void> => {
    const down = await run('bash', [join(CONTROLPLANE_SCRIPTS_DIR, 'down.sh'), dir], {
      env: { ...scriptEnv, PURGE: purge ? '1' : '0' },
      timeoutMs: 2 * 60_000,
      onStderr: log,
    });
    const left = [pids.apiserver, pids.etcd].filter(isProcessRunning);
    for (const pid of [pids.apiserver, pids.etcd]) if (!left.includes(pid)) live.delete(pid);
    if (down.code !== 0 || left.length > 0) {
      throw new Error(`hack/controlplane/down.sh failed (exit ${down.code}, still running: ${left.join(',') || 'none'}):\n${down.stderr}`);
    }
    if (purge) await rm(dir, { recursive: true, force: true });
  };

  return {
    dir,
    kubeconfigPath,
    binDir,
    server: required(env, 'APISERVER_URL'),
    token: required(env, 'TOKEN'),
    caPem,
    pids,
    kubectl: (args, kopts = {}) =>
      run(join(binDir, 'kubectl'), [`--kubeconfig=${kubeconfigPath}`, ...args], {
        env: { ...process.env, KUBECONFIG: kubeconfigPath },
        input: kopts.input,
        timeoutMs: kopts.timeoutMs ?? 60_000,
      }),
    stop: () => {
      stopped ??= stop().catch((err: unknown) => {
        stopped = undefined; // allow another try
        throw err;
      });
      return stopped;
    },
  };
}
