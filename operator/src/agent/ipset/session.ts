/**
 * One long-lived `ipset restore` process per agent, fed small batches of restore lines: a pod
 * add/remove costs a pipe round trip instead of starting a process (ADR 0010).
 *
 * Why `restore` and not ipset's interactive mode (`ipset -`): measured with ipset 7.17, the
 * interactive mode ignores a failing line and goes on with the next one, so a batch would have to be
 * sent one line per round trip to stop at the first failure, and a failed `list` leaves its session
 * answering "Internal protocol error" to every later command (a confused helper that still looks
 * alive). `ipset restore` reading a pipe that stays open applies the lines as they arrive and exits
 * at the first failing line with "Error in line N: <kernel message>": exactly the semantics phase 1
 * and 3 rely on (ipset/plan.ts header), kept by construction because it is the same program.
 *
 * End of a batch: after its lines the session sends `list -n <probe set>`, which commits the lines
 * buffered before it and prints the probe's name; stdout is made unbuffered with `stdbuf -o0`, so
 * the name arrives as soon as the batch is in the kernel. A batch is answered by exactly one probe
 * line, or by the process ending (a failing line, a crash, a kill): then the batch failed and the
 * process is gone; the next batch starts a new one. A batch not answered within `timeoutMs` is a
 * hang: the process is killed and the batch failed.
 *
 * `-exist` is sticky for the life of a restore process (tested: after one `add -exist` line, a
 * `create` of an existing set or a `destroy` of a missing one also succeeds). So the session only
 * takes lines whose meaning does not change under `-exist` (`add -exist`, `del -exist`) and
 * `destroy` (a set already gone is the wanted result): see `takes()`. `create` and `swap` lines go
 * to a fresh `ipset restore`, where a `create` of a set that unexpectedly exists still fails.
 *
 * Line numbers: ipset counts lines over the life of the process; a failing line is reported
 * relative to the batch, as `ipset restore` of the batch alone would report it.
 * Effects: only through the injected Spawn and timer.
 */
import { SESSION_PROBE_SET } from '../../api/names.js';
import type { Child, Spawn } from '../exec.js';

export const SESSION_ARGV = ['stdbuf', '-o0', 'ipset', 'restore'];

/** Created on start (no output); `-exist` because an earlier session may have left it. */
export const PROBE_CREATE = `-exist create ${SESSION_PROBE_SET} hash:ip hashsize 64 maxelem 1`;
export const PROBE_LIST = `list -n ${SESSION_PROBE_SET}`;

export interface SessionResult {
  /** 0 when every line was applied. */
  code: number;
  stderr: string;
  /** The batch line (1-based) ipset blamed, when it blamed one of the batch's lines. */
  failedLine?: number;
}

export interface IpsetSessionOptions {
  spawn: Spawn;
  /** A batch not answered within this is a hang (kill, fail). Default 5000 ms. */
  timeoutMs?: number;
  /** Runs fn after ms unless cancelled; default setTimeout (unref'd). */
  setTimer?: (ms: number, fn: () => void) => () => void;
  /** Processes that fail this many times in a row without one answered batch disable the session. */
  maxConsecutiveFailures?: number;
  log?: (s: string) => void;
}

interface Pending {
  linesBefore: number;
  count: number;
  resolve: (r: SessionResult) => void;
  cancelTimer: () => void;
}

interface Proc {
  child: Child;
  /** Lines written so far: ipset numbers lines over the life of the process. */
  linesSent: number;
  out: string;
  err: string;
  ended: boolean;
  /** Set when we kill it: the reason replaces an exit code that says nothing. */
  killedFor?: string;
  pending?: Pending;
}

const defaultTimer = (ms: number, fn: () => void): (() => void) => {
  const t = setTimeout(fn, ms);
  t.unref();
  return () => clearTimeout(t);
};

const TAKEN = /^(?:(?:add|del) -exist \S+ \S.*|destroy \S+)$/;

export class IpsetSession {
  /** Processes started (the first start and every restart). */
  starts = 0;
  /** Batches answered successfully / failed. */
  readonly counters = { batches: 0, failures: 0 };
  private proc: Proc | undefined;
  private consecutiveFailures = 0;
  private disabledReason: string | undefined;
  private readonly timeoutMs: number;
  private readonly setTimer: (ms: number, fn: () => void) => () => void;
  private readonly maxFailures: number;
  private readonly log: (s: string) => void;

  constructor(private readonly opts: IpsetSessionOptions) {
    this.timeoutMs = opts.timeoutMs ?? 5000;
    this.setTimer = opts.setTimer ?? defaultTimer;
    this.maxFailures = opts.maxConsecutiveFailures ?? 5;
    this.log = opts.log ?? (() => undefined);
  }

  /** Whether the session may take these lines (see the header: `-exist` is sticky). */
  takes(lines: readonly string[]): boolean {
    return this.disabledReason === undefined && lines.length > 0 && lines.every((l) => TAKEN.test(l));
  }

  get disabled(): string | undefined {
    return this.disabledReason;
  }

  /** The pid of the live process, if any (tests kill it). */
  get pid(): number | undefined {
    return this.proc && !this.proc.ended ? this.proc.child.pid : undefined;
  }

  /** Applies `lines` in order, stopping at the first failing one like `ipset restore`. One batch at a time. */
  apply(lines: readonly string[]): Promise<SessionResult> {
    if (this.proc?.pending) return Promise.reject(new Error('ipset session: a batch is already running'));
    if (lines.some((l) => l.includes('\n'))) return Promise.reject(new Error('ipset session: a line holds a newline'));
    const p = this.proc && !this.proc.ended ? this.proc : this.start();
    return new Promise<SessionResult>((resolve) => {
      const pending: Pending = {
        linesBefore: p.linesSent,
        count: lines.length,
        resolve: (r) => {
          pending.cancelTimer();
          p.pending = undefined;
          if (r.code === 0) {
            this.counters.batches++;
            this.consecutiveFailures = 0;
          } else {
            this.counters.failures++;
            if (++this.consecutiveFailures >= this.maxFailures && r.failedLine === undefined) {
              this.disabledReason = `${this.consecutiveFailures} failures in a row, the last: ${r.stderr.trim()}`;
              this.log(`ipset session disabled (process per change from now on): ${this.disabledReason}`);
            }
          }
          resolve(r);
        },
        cancelTimer: () => undefined,
      };
      p.pending = pending;
      pending.cancelTimer = this.setTimer(this.timeoutMs, () => this.kill(p, `no answer within ${this.timeoutMs} ms`));
      p.out = '';
      p.linesSent += lines.length + 1;
      p.child.write(`${lines.join('\n')}${lines.length ? '\n' : ''}${PROBE_LIST}\n`);
      // A child that failed to start has already ended: answer now.
      if (p.ended) this.answerEnded(p, null, null);
    });
  }

  /** Ends the process (agent shutdown); a running batch fails. */
  close(): void {
    if (this.proc) this.kill(this.proc, 'session closed');
  }

  private start(): Proc {
    this.starts++;
    const p: Proc = { child: undefined as unknown as Child, linesSent: 1, out: '', err: '', ended: false };
    this.proc = p;
    p.child = this.opts.spawn(SESSION_ARGV, {
      stdout: (s) => this.onStdout(p, s),
      stderr: (s) => {
        p.err += s;
      },
      exit: (code, signal) => {
        p.ended = true;
        if (p.pending) this.answerEnded(p, code, signal);
      },
    });
    p.child.write(`${PROBE_CREATE}\n`);
    return p;
  }

  private onStdout(p: Proc, s: string): void {
    p.out += s;
    const want = `${SESSION_PROBE_SET}\n`;
    if (!p.out.includes('\n')) return;
    if (p.pending && p.out === want) {
      p.out = '';
      p.err = '';
      p.pending.resolve({ code: 0, stderr: '' });
      return;
    }
    // Anything else on stdout (an answer nobody asked for, or two): we no longer know where the
    // process is in our input. Kill it; its end fails the batch.
    this.kill(p, `unexpected output ${JSON.stringify(p.out.slice(0, 200))}`);
  }

  private kill(p: Proc, reason: string): void {
    if (p.ended) return;
    p.killedFor ??= reason;
    p.child.kill();
  }

  private answerEnded(p: Proc, code: number | null, signal: string | null): void {
    const pending = p.pending;
    if (!pending) return;
    const how = p.killedFor ? `killed: ${p.killedFor}` : `ended (exit ${code ?? '-'}${signal ? `, signal ${signal}` : ''}) before answering`;
    const m = /Error in line (\d+)/.exec(p.err);
    const rel = m?.[1] !== undefined ? Number(m[1]) - pending.linesBefore : undefined;
    if (rel !== undefined && rel >= 1 && rel <= pending.count) {
      // Renumber to the batch, as `ipset restore` of the batch alone reports it.
      pending.resolve({ code: code || 1, stderr: p.err.replace(/Error in line \d+/, `Error in line ${rel}`), failedLine: rel });
      return;
    }
    const where = rel === undefined ? '' : rel > pending.count ? ' (at the end-of-batch probe)' : ' (before this batch: the probe set could not be created)';
    pending.resolve({ code: code || (p.killedFor ? 124 : 1), stderr: `ipset session ${how}${where}${p.err.trim() ? `: ${p.err.trim()}` : ''}` });
  }
}
