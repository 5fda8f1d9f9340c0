/**
 * Network-namespace plumbing for the sandbox: a command runner, `ip -batch`, listing and deleting
 * namespaces (killing what runs inside first).
 *
 * Safety: the only root-namespace operations are `ip netns add/del/list/pids` (bookkeeping) and
 * `link add ... netns A type veth peer ... netns B` (a veth created directly inside two of our
 * namespaces). Nothing here touches the root namespace's iptables, ipsets, routes or addresses.
 */
import { spawn } from 'node:child_process';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

export interface RunOptions {
  input?: string;
  /** SIGKILL after this many ms; the result then has code 124. */
  timeoutMs?: number;
}

/** Runs argv without a shell; never rejects because of a non-zero exit code. */
export type CommandRunner = (argv: readonly string[], opts?: RunOptions) => Promise<RunResult>;

export class CommandError extends Error {
  constructor(
    readonly argv: readonly string[],
    readonly result: RunResult,
    /** The command's stdin, if worth showing (appended to the message). */
    readonly input?: string,
  ) {
    super(`command failed (exit ${result.code}): ${argv.join(' ')}\n${result.stderr.trim()}` + (input !== undefined ? `\n--- input ---\n${input}` : ''));
    this.name = 'CommandError';
  }
}

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
      /* exited without reading its input: reported through the exit code */
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
        stderr: Buffer.concat(err).toString('utf8'),
      });
    });
    child.stdin.end(opts.input ?? '');
  });

export async function runChecked(runner: CommandRunner, argv: readonly string[], opts?: RunOptions): Promise<RunResult> {
  const res = await runner(argv, opts);
  if (res.code !== 0) throw new CommandError(argv, res);
  return res;
}

/**
 * `ip [-n ns] -batch -` with one ip command per line (without the leading `ip`); ns undefined = root
 * bookkeeping (`netns add/del`, veths created inside two namespaces). Throws CommandError unless
 * force (then the result is returned as is).
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

export function inNetns(ns: string, argv: readonly string[]): string[] {
  assertValidNetnsName(ns);
  return ['ip', 'netns', 'exec', ns, ...argv];
}

export function assertValidNetnsName(name: string): void {
  if (!/^[A-Za-z0-9_.-]{1,200}$/.test(name) || name === '.' || name === '..') {
    throw new Error(`invalid network namespace name ${JSON.stringify(name)}`);
  }
}

/** "demo/web" -> "demo-web": usable in a namespace name. */
export function sanitizeLabel(label: string): string {
  return label.replace(/[^A-Za-z0-9_.-]+/g, '-').replace(/^-+|-+$/g, '').slice(0, 40) || 'pod';
}

export function parseNetnsList(stdout: string): string[] {
  return stdout
    .split('\n')
    .map((l) => l.trim().split(/\s+/)[0] ?? '')
    .filter((n) => n !== '');
}

export async function listNetns(runner: CommandRunner = spawnRunner): Promise<string[]> {
  return parseNetnsList((await runChecked(runner, ['ip', 'netns', 'list'])).stdout);
}

/** PIDs of the processes inside namespace ns. */
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
 * Deletes the namespaces that exist among `names`, after SIGKILLing every process inside them.
 * Idempotent. Throws if one could not be deleted. Returns the names deleted.
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
  await ipBatch(runner, undefined, targets.map((n) => `netns del ${n}`), { force: true });
  const left = new Set(await listNetns(runner));
  const still = targets.filter((n) => left.has(n));
  if (still.length > 0) throw new Error(`could not delete network namespaces: ${still.join(', ')}`);
  return targets;
}

/** Deletes every namespace whose name starts with prefix (which must look like a sandbox prefix). */
export async function deleteNetnsWithPrefix(prefix: string, runner: CommandRunner = spawnRunner): Promise<string[]> {
  if (!/^knpm-sbx-[0-9a-f]+-$/.test(prefix)) throw new Error(`refusing to delete namespaces with prefix ${JSON.stringify(prefix)}`);
  return deleteNetns((await listNetns(runner)).filter((n) => n.startsWith(prefix)), runner);
}
