// Low-level helpers of the kernel test harness: an injectable command runner,
// network-namespace naming / listing / removal, and spawning a long-running
// process inside a namespace.
//
// Safety: nothing in here touches the root namespace's iptables, ipsets, routes
// or addresses. The only root-namespace operations are `ip netns add/del/list/pids`
// (namespace bookkeeping) and `modprobe br_netfilter` (see cluster.ts).
import { spawn, execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createInterface } from 'node:readline';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  /** Written to the command's stdin (then stdin is closed). */
  input?: string;
  /** Kill the command (SIGKILL) after this many ms; the result then has code 124. */
  timeoutMs?: number;
}

/** Runs argv (no shell). Never rejects because of a non-zero exit code. */
export type CommandRunner = (argv: readonly string[], opts?: RunOptions) => Promise<RunResult>;

export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly result: RunResult,
    readonly input?: string,
  ) {
    super(
      `command failed (exit ${result.code}): ${argv.join(' ')}\n${result.stderr.trim()}` +
        (input !== undefined ? `\n--- input ---\n${input}` : ''),
    );
    this.name = 'CommandError';
  }
}

/** The real runner: child_process.spawn without a shell. */
export const spawnRunner: CommandRunner = (argv, opts = {}) =>
  new Promise((resolve) => {
    const [cmd, ...args] = argv;
    if (cmd === undefined) {
      resolve({ code: 127, stdout: '', stderr: 'empty argv' });
      return;
    }
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    let timedOut = false;
    const timer =
      opts.timeoutMs !== undefined
        ? setTimeout(() => {
            timedOut = true;
            child.kill('SIGKILL');
          }, opts.timeoutMs)
        : undefined;
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    child.stdin.on('error', () => {
      /* command exited without reading its input; reported through its exit code */
    });
    child.on('error', (e) => {
      if (timer) clearTimeout(timer);
      resolve({ code: 127, stdout: '', stderr: `${cmd}: ${e.message}` });
    });
    child.on('close', (code, signal) => {
      if (timer) clearTimeout(timer);
      resolve({
        code: timedOut ? 124 : (code ?? (signal ? 128 : 1)),
        stdout: Buffer.concat(out).toString('utf8'),
        stderr: Buffer.concat(err).toString('utf8') + (timedOut ? `\n(timed out after ${opts.timeoutMs} ms)` : ''),
      });
    });
    child.stdin.end(opts.input ?? '');
  });

/** Runs and throws CommandError on a non-zero exit. */
export async function runChecked(runner: CommandRunner, argv: readonly string[], opts?: RunOptions): Promise<RunResult> {
  const res = await runner(argv, opts);
  if (res.code !== 0) throw new CommandError(argv, res, opts?.input);
  return res;
}

/**
 * Runs `ip [-n ns] -batch -` with the given lines (one ip command each, without
 * the leading `ip`). ns undefined = bookkeeping commands such as `netns add`.
 */
export async function ipBatch(
  runner: CommandRunner,
  ns: string | undefined,
  lines: readonly string[],
  opts: { force?: boolean } = {},
): Promise<RunResult | undefined> {
  if (lines.length === 0) return undefined;
  const argv = ['ip', ...(ns !== undefined ? ['-n', ns] : []), ...(opts.force ? ['-force'] : []), '-batch', '-'];
  const input = lines.join('\n') + '\n';
  if (opts.force) return runner(argv, { input });
  return runChecked(runner, argv, { input });
}

/** argv running `argv` inside network namespace ns. */
export function inNetns(ns: string, argv: readonly string[]): string[] {
  return ['ip', 'netns', 'exec', ns, ...argv];
}

// ---------------------------------------------------------------- names

/** Base of every prefix made by makePrefix(); removeStaleLeftovers() only looks at these. */
export const PREFIX_BASE = 'knpm-';

/** A unique per-run prefix: `knpm-<pid>-<random>-`. */
export function makePrefix(): string {
  return `${PREFIX_BASE}${process.pid}-${randomBytes(3).toString('hex')}-`;
}

/** Namespace names must be usable as file names under /run/netns. */
export function assertValidNetnsName(name: string): void {
  if (!/^[A-Za-z0-9_.-]{1,200}$/.test(name) || name === '.' || name === '..') {
    throw new Error(`invalid network namespace name ${JSON.stringify(name)}`);
  }
}

/** Turns an arbitrary label (e.g. "x/a") into something usable in a netns name. */
export function sanitizeLabel(label: string): string {
  return label.replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40) || 'pod';
}

// ---------------------------------------------------------------- listing / removal

/** Names of all named network namespaces (`ip netns list`). */
export async function listNetns(runner: CommandRunner = spawnRunner): Promise<string[]> {
  const res = await runChecked(runner, ['ip', 'netns', 'list']);
  return parseNetnsList(res.stdout);
}

export function parseNetnsList(stdout: string): string[] {
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');
}

/** PIDs of the processes living in namespace ns (`ip netns pids`). */
export async function netnsPids(ns: string, runner: CommandRunner = spawnRunner): Promise<number[]> {
  const res = await runner(['ip', 'netns', 'pids', ns]);
  if (res.code !== 0) return [];
  return res.stdout
    .split(/\s+/)
    .filter((s) => /^\d+$/.test(s))
    .map(Number)
    .filter((p) => p !== process.pid);
}

/**
 * Deletes the given namespaces after SIGKILLing every process still inside them.
 * Best effort, idempotent: missing namespaces are ignored. Returns the names deleted.
 */
export async function deleteNetns(names: readonly string[], runner: CommandRunner = spawnRunner): Promise<string[]> {
  if (names.length === 0) return [];
  for (const n of names) assertValidNetnsName(n);
  const existing = new Set(await listNetns(runner));
  const targets = names.filter((n) => existing.has(n));
  if (targets.length === 0) return [];
  const pids = (await Promise.all(targets.map((n) => netnsPids(n, runner)))).flat();
  for (const pid of new Set(pids)) {
    try {
      process.kill(pid, 'SIGKILL');
    } catch {
      /* already gone */
    }
  }
  await ipBatch(
    runner,
    undefined,
    targets.map((n) => `netns del ${n}`),
    { force: true },
  );
  const left = new Set(await listNetns(runner));
  const stillThere = targets.filter((n) => left.has(n));
  if (stillThere.length > 0) {
    throw new Error(`could not delete network namespaces: ${stillThere.join(', ')}`);
  }
  return targets;
}

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
