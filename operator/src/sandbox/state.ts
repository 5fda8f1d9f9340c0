/**
 * The sandbox's state file (DIR/state.json): everything a later `sandbox down`, `sandbox probe` or
 * the next `sandbox up` needs to find what this sandbox created. Written atomically (tmp + rename)
 * after every change, starting BEFORE anything is created.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, realpathSync, renameSync, rmSync, writeFileSync, mkdirSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const STATE_VERSION = 1;

/** A process we started, identified by pid AND start time so a reused pid is never killed. */
export interface ProcRef {
  name: string;
  pid: number;
  /** /proc/PID/stat field 22 (clock ticks after boot). */
  startTime?: string;
}

export interface PodState {
  /** "ns/name". */
  key: string;
  uid: string;
  node: string;
  ip: string;
  netns: string;
  hostIf: string;
  server?: ProcRef;
}

export interface SandboxState {
  version: number;
  dir: string;
  /** Every namespace of this sandbox starts with it. */
  prefix: string;
  nodes: { name: string; netns: string; underlayIp: string; podSubnet: string }[];
  fabricNs: string;
  supervisor: ProcRef;
  /** Operator and agents. */
  processes: ProcRef[];
  pods: Record<string, PodState>;
  controlPlaneDir: string;
  kubeconfig?: string;
  binDir?: string;
  phase: 'starting' | 'ready' | 'stopping';
  startedAt: string;
}

/** $XDG_RUNTIME_DIR/kube-npm-sandbox, else /tmp/kube-npm-sandbox. */
export function defaultDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.XDG_RUNTIME_DIR ? join(env.XDG_RUNTIME_DIR, 'kube-npm-sandbox') : '/tmp/kube-npm-sandbox';
}

export function normalizeDir(dir: string): string {
  const abs = resolve(dir);
  try {
    return realpathSync(abs);
  } catch {
    return abs;
  }
}

/** Namespace prefix of the sandbox in DIR: deterministic, so leftovers are found even without a state file. */
export function prefixFor(dir: string): string {
  return `knpm-sbx-${createHash('sha256').update(dir).digest('hex').slice(0, 8)}-`;
}

export const statePath = (dir: string): string => join(dir, 'state.json');

export function readState(dir: string): SandboxState | undefined {
  const p = statePath(dir);
  if (!existsSync(p)) return undefined;
  try {
    const s = JSON.parse(readFileSync(p, 'utf8')) as SandboxState;
    return s.version === STATE_VERSION ? s : undefined;
  } catch {
    return undefined;
  }
}

export function writeState(s: SandboxState): void {
  mkdirSync(s.dir, { recursive: true });
  const p = statePath(s.dir);
  writeFileSync(`${p}.tmp`, JSON.stringify(s, null, 2) + '\n');
  renameSync(`${p}.tmp`, p);
}

export function removeState(dir: string): void {
  rmSync(statePath(dir), { force: true });
  rmSync(`${statePath(dir)}.tmp`, { force: true });
}

// ------------------------------------------------------------------ processes

function readStat(pid: number): { state: string; startTime: string } | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    const rest = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    // rest[0] is field 3 (state); field 22 (starttime) is rest[19].
    return { state: rest[0] ?? '', startTime: rest[19] ?? '' };
  } catch {
    return undefined;
  }
}

export function procRef(name: string, pid: number): ProcRef {
  const st = readStat(pid);
  return { name, pid, ...(st ? { startTime: st.startTime } : {}) };
}

/** Alive, not a zombie, and (if recorded) the same process as when we started it. */
export function isAlive(ref: ProcRef): boolean {
  const st = readStat(ref.pid);
  if (!st || st.state === 'Z' || st.state === 'X') return false;
  return ref.startTime === undefined || ref.startTime === st.startTime;
}

/** SIGTERM, then SIGKILL after graceMs; resolves when gone (or after a last bounded wait). */
export async function stopProcess(ref: ProcRef, graceMs = 10_000): Promise<boolean> {
  if (!isAlive(ref)) return true;
  const signal = (s: NodeJS.Signals) => {
    try {
      process.kill(ref.pid, s);
    } catch {
      /* gone */
    }
  };
  signal('SIGTERM');
  const until = Date.now() + graceMs;
  while (isAlive(ref) && Date.now() < until) await sleep(50);
  if (isAlive(ref)) {
    signal('SIGKILL');
    const end = Date.now() + 5000;
    while (isAlive(ref) && Date.now() < end) await sleep(50);
  }
  return !isAlive(ref);
}

export const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

// ------------------------------------------------------------------ repository layout

/** The repository root (holds package.json, hack/, dist/), found from this module's location. */
export function repoRoot(): string {
  let d = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 8; i++) {
    if (existsSync(join(d, 'package.json')) && existsSync(join(d, 'hack', 'controlplane', 'up.sh'))) return d;
    d = dirname(d);
  }
  throw new Error('cannot find the kube-npm repository root (package.json + hack/controlplane) above ' + fileURLToPath(import.meta.url));
}

/** The built CLI the operator and agents run from. */
export function cliPath(root = repoRoot()): string {
  return join(root, 'dist', 'operator', 'src', 'cli', 'main.js');
}

/**
 * argv (after `node`) that runs `kube-npm sandbox ...`: main.js once it dispatches `sandbox`,
 * until then the standalone entry dist/operator/src/cli/sandbox.js.
 */
export function sandboxCliArgv(root = repoRoot()): string[] {
  const main = cliPath(root);
  try {
    if (readFileSync(main, 'utf8').includes('./sandbox.js')) return [main, 'sandbox'];
  } catch {
    /* not built */
  }
  return [join(root, 'dist', 'operator', 'src', 'cli', 'sandbox.js')];
}

/** podserver.mjs: next to this module (source tree), or in the source tree when running from dist/. */
export function podServerPath(root = repoRoot()): string {
  const here = fileURLToPath(new URL('./podserver.mjs', import.meta.url));
  return existsSync(here) ? here : join(root, 'operator', 'src', 'sandbox', 'podserver.mjs');
}
