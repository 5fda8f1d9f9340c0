/**
 * A fake Spawn for the long-lived `ipset restore` (operator/src/agent/ipset/session.ts): each child
 * applies the lines it reads to a FakeKernel, batch by batch (a batch ends at the probe `list`),
 * numbering lines over its life like the real one, and exits at the first failing line. Faults for
 * the next batch: `crash` (dies after applying some lines), `hang` (never answers), `garbage` (an
 * answer nobody asked for). Fault lines through the kernel: `k.failNext(sessionWrite, ...)`.
 */
import type { Child, ChildEvents, Spawn } from '../../../operator/src/agent/exec.js';
import { PROBE_LIST } from '../../../operator/src/agent/ipset/session.js';
import { SESSION_PROBE_SET } from '../../../operator/src/api/names.js';
import type { FakeKernel } from './fakekernel.js';

export const SESSION_WRITE = ['ipset', 'restore', '(session)'];
export const sessionWrite = (argv: string[]): boolean => argv.includes('(session)');

export type SessionFault = { kind: 'crash'; applyLines: number } | { kind: 'hang' } | { kind: 'garbage' };

export class FakeSpawn {
  spawned: FakeChild[] = [];
  argvs: string[][] = [];
  /** Faults for the next batches, in order. */
  faults: SessionFault[] = [];
  constructor(readonly k: FakeKernel) {}

  readonly spawn: Spawn = (argv, events) => {
    this.argvs.push(argv);
    const c = new FakeChild(this, events, this.spawned.length + 1000);
    this.spawned.push(c);
    return c;
  };

  get live(): FakeChild | undefined {
    return this.spawned.find((c) => !c.ended);
  }
}

export class FakeChild implements Child {
  ended = false;
  /** Every line read, as the child saw it. */
  lines: string[] = [];
  private buf = '';
  private queue: string[] = [];
  private linesBefore = 0;
  private work: Promise<void> = Promise.resolve();

  constructor(
    private readonly owner: FakeSpawn,
    private readonly events: ChildEvents,
    readonly pid: number,
  ) {}

  write(data: string): void {
    if (this.ended) return;
    this.buf += data;
    let i;
    while ((i = this.buf.indexOf('\n')) >= 0) {
      const line = this.buf.slice(0, i);
      this.buf = this.buf.slice(i + 1);
      this.lines.push(line);
      if (line === PROBE_LIST) {
        const batch = this.queue;
        this.queue = [];
        this.work = this.work.then(() => this.run(batch));
      } else this.queue.push(line);
    }
  }

  kill(): void {
    this.die(null, 'SIGKILL');
  }

  /** The process dies by itself (e.g. killed from outside). */
  die(code: number | null, signal: string | null, stderr = ''): void {
    if (this.ended) return;
    this.ended = true;
    queueMicrotask(() => {
      if (stderr) this.events.stderr(stderr);
      this.events.exit(code, signal);
    });
  }

  private async run(batch: string[]): Promise<void> {
    if (this.ended) return;
    const fault = this.owner.faults.shift();
    if (fault?.kind === 'hang') return;
    let lines = batch;
    if (fault?.kind === 'crash') lines = batch.slice(0, fault.applyLines);
    const r = await this.owner.k.exec(SESSION_WRITE, `${lines.join('\n')}\n`);
    if (this.ended) return;
    if (r.code !== 0) {
      const m = /Error in line (\d+)/.exec(r.stderr);
      this.die(1, null, r.stderr.replace(/Error in line \d+/, `Error in line ${this.linesBefore + Number(m?.[1] ?? 0)}`) + '\n');
      return;
    }
    if (fault?.kind === 'crash') {
      this.die(null, 'SIGKILL');
      return;
    }
    this.linesBefore += batch.length + 1;
    if (!this.owner.k.sets.has(SESSION_PROBE_SET)) {
      this.die(1, null, `ipset v7.17: Error in line ${this.linesBefore}: The set with the given name does not exist\n`);
      return;
    }
    this.events.stdout(fault?.kind === 'garbage' ? `${SESSION_PROBE_SET}\nsurprise\n` : `${SESSION_PROBE_SET}\n`);
  }
}

/** A manual timer: tests fire it when they want the hang detected. */
export class ManualTimer {
  pending: { ms: number; fn: () => void; cancelled: boolean }[] = [];
  readonly set = (ms: number, fn: () => void): (() => void) => {
    const t = { ms, fn, cancelled: false };
    this.pending.push(t);
    return () => {
      t.cancelled = true;
    };
  };
  fire(): number {
    const live = this.pending.filter((t) => !t.cancelled);
    this.pending = [];
    for (const t of live) t.fn();
    return live.length;
  }
}
