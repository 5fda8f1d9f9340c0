/**
 * The agent's only effects: running a command and reading the clock. Everything else in agent/ is
 * given these as constructor arguments, so unit tests pass a fake kernel and a fake clock.
 */
import { spawn } from 'node:child_process';

export interface ExecResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs argv without a shell, writing `stdin` if given. Resolves on any exit code; rejects only if the command cannot start. */
export type Exec = (argv: string[], stdin?: string) => Promise<ExecResult>;

export interface Clock {
  /** Milliseconds, monotonic enough for durations and intervals. */
  now(): number;
  sleep(ms: number): Promise<void>;
}

export const realClock: Clock = {
  now: () => performance.now(),
  sleep: (ms) => new Promise((resolve) => setTimeout(resolve, ms)),
};

export interface RealExecOptions {
  /** Run every command inside this network namespace (`ip netns exec NS ...`): used by kernel tests. */
  netns?: string;
  /** Kill a command that runs longer than this (default 60 s); the result then has code 124. */
  timeoutMs?: number;
}

/** The real Exec: child_process.spawn, no shell. */
export function realExec(opts: RealExecOptions = {}): Exec {
  const prefix = opts.netns !== undefined ? ['ip', 'netns', 'exec', opts.netns] : [];
  const timeoutMs = opts.timeoutMs ?? 60_000;
  return (argv, stdin) =>
    new Promise((resolve, reject) => {
      const full = [...prefix, ...argv];
      const [cmd, ...args] = full;
      if (cmd === undefined) {
        reject(new Error('exec: empty argv'));
        return;
      }
      const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      let timedOut = false;
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, timeoutMs);
      child.stdout.on('data', (b: Buffer) => out.push(b));
      child.stderr.on('data', (b: Buffer) => err.push(b));
      // A command that exits before reading all of stdin raises EPIPE here; its exit code tells the story.
      child.stdin.on('error', () => undefined);
      child.on('error', (e) => {
        clearTimeout(timer);
        reject(new Error(`exec ${full.join(' ')}`, { cause: e }));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        resolve({
          code: timedOut ? 124 : (code ?? (signal ? 128 : 1)),
          stdout: Buffer.concat(out).toString('utf8'),
          stderr: Buffer.concat(err).toString('utf8') + (timedOut ? `\nkilled after ${timeoutMs} ms` : ''),
        });
      });
      child.stdin.end(stdin ?? '');
    });
}
