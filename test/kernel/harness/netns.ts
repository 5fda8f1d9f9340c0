// Low-level helpers of the kernel test harness. The command runner, `ip -batch` and namespace
// listing / removal are the sandbox's (operator/src/sandbox/netns.ts, re-exported here); this file
// adds per-run name prefixes, leftover cleanup and spawning a long-running process inside a namespace.
//
// Safety: nothing in here touches the root namespace's iptables, ipsets, routes
// or addresses. The only root-namespace operations are `ip netns add/del/list/pids`
// (namespace bookkeeping) and `modprobe br_netfilter` (see cluster.ts).
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';
import { type CommandRunner, assertValidNetnsName, deleteNetns, inNetns, listNetns, spawnRunner } from '../../../operator/src/sandbox/netns.js';

export {
  type CommandRunner,
  type RunOptions,
  type RunResult,
  CommandError,
  assertValidNetnsName,
  deleteNetns,
  inNetns,
  ipBatch,
  listNetns,
  netnsPids,
  parseNetnsList,
  runChecked,
  sanitizeLabel,
  spawnRunner,
} from '../../../operator/src/sandbox/netns.js';

// ---------------------------------------------------------------- names

/** Base of every prefix made by makePrefix(); removeStaleLeftovers() only looks at these. */
export const PREFIX_BASE = 'knpm-';

/** A unique per-run prefix: `knpm-<pid>-<random>-`. */
export function makePrefix(): string {
  return `${PREFIX_BASE}${process.pid}-${randomBytes(3).toString('hex')}-`;
}

// ---------------------------------------------------------------- listing / removal

/** Removes every namespace (and the processes inside) whose name starts with prefix. */
export async function removeLeftovers(prefix: string, runner: CommandRunner = spawnRunner): Promise<string[]> {
  if (!prefix.startsWith(PREFIX_BASE) || prefix.length <= PREFIX_BASE.length) {
    // Refuse anything that could match namespaces this harness did not create.
    throw new Error(`refusing to remove leftovers of prefix ${JSON.stringify(prefix)}: must start with "${PREFIX_BASE}" and be longer`);
  }
  const names = (await listNetns(runner)).filter((n) => n.startsWith(prefix));
  return deleteNetns(names, runner);
}

/**
 * Removes leftovers of earlier runs whose creating process (the pid in
 * `knpm-<pid>-<random>-`) is no longer alive. Safe to call while other runs are active.
 */
export async function removeStaleLeftovers(runner: CommandRunner = spawnRunner): Promise<string[]> {
  const names = await listNetns(runner);
  const stale = names.filter((n) => {
    const m = /^knpm-(\d+)-[0-9a-f]+-/.exec(n);
    if (!m) return false;
    const pid = Number(m[1]);
    if (pid === process.pid) return false;
    try {
      process.kill(pid, 0);
      return false; // alive (or a reused pid: leave it alone)
    } catch (e) {
      return (e as NodeJS.ErrnoException).code === 'ESRCH';
    }
  });
  return deleteNetns(stale, runner);
}

/**
 * Synchronous best-effort deletion for process 'exit' handlers, where no async
 * work can run. Processes inside are not killed (agents exit on stdin EOF).
 */
export function deleteNetnsSync(names: readonly string[]): void {
  if (names.length === 0) return;
  try {
    execFileSync('ip', ['-force', '-batch', '-'], {
      input: names.map((n) => `netns del ${n}`).join('\n') + '\n',
      stdio: ['pipe', 'ignore', 'ignore'],
    });
  } catch {
    /* best effort */
  }
}

// ---------------------------------------------------------------- long-running processes

/** A long-running line-oriented process (the in-pod agent). */
export interface AgentProcess {
  readonly pid: number | undefined;
  /** Writes one line (a newline is appended). */
  writeLine(line: string): void;
  onLine(cb: (line: string) => void): void;
  /** Called once when the process has exited; stderr is whatever it printed. */
  onExit(cb: (code: number | null, signal: string | null, stderr: string) => void): void;
  /** Closes stdin (the agent exits on EOF). */
  closeStdin(): void;
  kill(signal?: NodeJS.Signals): void;
}

/** Starts `argv` inside namespace ns and returns a handle to it. */
export type AgentSpawner = (ns: string, argv: readonly string[]) => AgentProcess;

/** The real spawner: `ip netns exec <ns> argv...` (ip execs argv, so pid is the program's). */
export const netnsSpawner: AgentSpawner = (ns, argv) => {
  assertValidNetnsName(ns);
  const full = inNetns(ns, argv);
  const [cmd, ...args] = full as [string, ...string[]];
  // Drop NODE_OPTIONS so e.g. `--import tsx` inherited from a test runner does not slow the agent down.
  const env = { ...process.env };
  delete env.NODE_OPTIONS;
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'], env });
  const stderr: string[] = [];
  let stderrLen = 0;
  child.stderr.on('data', (b: Buffer) => {
    if (stderrLen < 64 * 1024) {
      stderr.push(b.toString('utf8'));
      stderrLen += b.length;
    }
  });
  child.stdin.on('error', () => {
    /* agent died; reported through onExit */
  });
  const rl = createInterface({ input: child.stdout, crlfDelay: Infinity });
  const lineCbs: ((l: string) => void)[] = [];
  rl.on('line', (l) => {
    for (const cb of lineCbs) cb(l);
  });
  let exited: { code: number | null; signal: string | null } | undefined;
  const exitCbs: ((code: number | null, signal: string | null, stderr: string) => void)[] = [];
  child.on('error', (e) => {
    stderr.push(`spawn error: ${e.message}`);
  });
  child.on('close', (code, signal) => {
    exited = { code, signal };
    for (const cb of exitCbs) cb(code, signal, stderr.join(''));
  });
  return {
    get pid() {
      return child.pid;
    },
    writeLine(line) {
      if (!child.stdin.writable) throw new Error(`agent in ${ns} is not running`);
      child.stdin.write(line + '\n');
    },
    onLine(cb) {
      lineCbs.push(cb);
    },
    onExit(cb) {
      if (exited) cb(exited.code, exited.signal, stderr.join(''));
      else exitCbs.push(cb);
    },
    closeStdin() {
      child.stdin.end();
    },
    kill(signal = 'SIGKILL') {
      if (exited === undefined) child.kill(signal);
    },
  };
};
