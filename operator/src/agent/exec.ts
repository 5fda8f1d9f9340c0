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

/** What a long-lived child reports: output chunks as they arrive, then its end (exactly once). */
export interface ChildEvents {
  stdout(chunk: string): void;
  stderr(chunk: string): void;
  exit(code: number | null, signal: string | null): void;
}

/** A long-lived child process: its stdin and a way to end it. */
export interface Child {
  readonly pid: number | undefined;
  write(data: string): void;
  /** SIGKILL: a hung or confused child gets no second chance. */
  kill(): void;
}

/**
 * Starts a long-lived process (no shell). A child that cannot start reports exit(null, ...) through
 * `events` rather than throwing, so a caller has one path for "it is gone".
 */
export type Spawn = (argv: string[], events: ChildEvents) => Child;

/** The real Spawn: child_process.spawn with pipes; `netns` as in realExec. */
export function realSpawn(opts: { netns?: string } = {}): Spawn {
  const prefix = opts.netns !== undefined ? ['ip', 'netns', 'exec', opts.netns] : [];
  return (argv, events) => {
    const [cmd, ...args] = [...prefix, ...argv];
    if (cmd === undefined) throw new Error('spawn: empty argv');
    const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let ended = false;
    const end = (code: number | null, signal: string | null) => {
      if (ended) return;
      ended = true;
      events.exit(code, signal);
    };
    child.stdout.setEncoding('utf8').on('data', (s: string) => events.stdout(s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => events.stderr(s));
    // EPIPE after the child died: its exit reports it.
    child.stdin.on('error', () => undefined);
    child.on('error', (e) => {
      events.stderr(`spawn ${[cmd, ...args].join(' ')}: ${e.message}\n`);
      end(null, null);
    });
    // 'close' (not 'exit'): the last stderr chunk, the kernel's message, has been delivered by then.
    child.on('close', (code, signal) => end(code, signal));
    return {
      pid: child.pid,
      write: (data) => {
        if (!ended && child.stdin.writable) child.stdin.write(data);
      },
      kill: () => {
        if (!ended) child.kill('SIGKILL');
      },
    };
  };
}
