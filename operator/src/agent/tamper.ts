/**
 * Tamper detection between full resyncs: a cheap periodic look at the parts of our iptables layout
 * that decide whether pods are protected at all, compared with what the converger last wrote
 * (`applied`). A finding makes the daemon run a full resync, which repairs everything (ADR 0005).
 *
 * Why a periodic check and not events: `xtables-monitor -e` (Debian's iptables package ships it)
 * prints nft rule events, but only for the nft backend; it block-buffers when piped, it exits with
 * "No buffer space available" when a flush or a big restore emits thousands of events at once (our
 * own first write at 1,000 policies does), and our own writes are events too. A check that costs a
 * few process spawns a second is the same code on both backends and cannot silently stop.
 *
 * What one check reads, per backend (the cost is what decides; test/bench/agent.bench.ts):
 *  - nft: `iptables-nft -S <chain> [n]` reads only that chain from the kernel, so the check asks
 *    for small things only, and its cost does not grow with the number of policies:
 *      FORWARD rule 1 (our hook, exactly), KNPM-FORWARD and KNPM-ALLOW whole (fixed size), and the
 *      heads (rule 1) of KNPM-INGRESS / KNPM-EGRESS, which must be one of their policy jumps (or
 *      the DROP when there is no policy): a flushed direction chain, a rule inserted in front of it
 *      or a deleted first pair shows there. A pair deleted further down, or a flushed policy chain,
 *      is not seen here; the periodic full resync repairs those.
 *  - legacy: every iptables-legacy command copies the whole filter table out of the kernel
 *    (libiptc), whatever it prints, so one `iptables-legacy-save -t filter` costs about what one
 *    `-S FORWARD 1` costs; the check reads it once and compares every chain of ours and the hook
 *    (the same comparison as a full resync: pairs in any order are in sync). Its cost grows with
 *    the table, as every legacy command's does.
 * Pure except checkTamper (the injected Exec) and TamperWatcher (the injected Clock).
 */
import { CHAIN_ALLOW, CHAIN_EGRESS, CHAIN_INGRESS, CHAIN_ROOT } from '../api/names.js';
import type { Binaries } from './backend.js';
import type { Clock, Exec } from './exec.js';
import { parseIptablesSave, tokenize, type ActualChains } from './iptables/parse.js';
import { hookOk, sameChain } from './iptables/plan.js';
import { HOOK_RULE, PAIR_CHAINS, formatArgs } from './iptables/render.js';

/** One read of the check: a command and how to judge its output. */
export interface TamperProbe {
  argv: string[];
  /** What is wrong, judged from the command's exit code and output; undefined when in order. */
  judge(code: number, stdout: string, stderr: string): string[];
}

/** The rule specs of `-S` output lines for `chain` (`-A <chain> <spec>`), canonical (render.ts). */
function specsOf(stdout: string, chain: string): string[] {
  const out: string[] = [];
  for (const line of stdout.split('\n')) {
    if (!line.startsWith(`-A ${chain} `)) continue;
    out.push(formatArgs(tokenize(line).slice(2)));
  }
  return out;
}

function sameList(a: readonly string[], b: readonly string[]): boolean {
  return a.length === b.length && a.every((x, i) => x === b[i]);
}

/** The first rules a direction chain may legally start with: any policy jump, or the DROP alone. */
function legalHeads(rules: readonly string[]): Set<string> {
  if (rules.length === 1) return new Set(rules);
  const heads = new Set<string>();
  for (let i = 0; i + 1 < rules.length; i += 2) heads.add(rules[i] as string);
  return heads;
}

/**
 * The reads of one check against `expected` (the converger's applied chains and hook). Nothing to
 * read when our layout is not supposed to exist (no base chain expected: cleaned up).
 */
export function tamperProbes(bin: Binaries, expected: ActualChains, lockWaitSeconds = 5): TamperProbe[] {
  if (!expected.chains.has(CHAIN_ROOT)) return [];
  const wantHook = expected.hook.copies.length > 0;
  const w = ['-w', String(lockWaitSeconds)];
  if (bin.backend === 'legacy') {
    return [
      {
        argv: [bin.save, '-t', 'filter'],
        judge: (code, stdout, stderr) => {
          if (code !== 0) return [`${bin.save} failed with exit ${code}: ${stderr.trim()}`];
          const seen = parseIptablesSave(stdout);
          const out: string[] = [];
          if (wantHook && !hookOk(seen.hook)) out.push(seen.hook.copies.length === 0 ? 'FORWARD hook missing' : 'FORWARD hook not rule 1 exactly once');
          for (const [c, rules] of expected.chains) {
            const got = seen.chains.get(c);
            if (!got) out.push(`chain ${c} missing`);
            else if (!sameChain(c, rules, got)) out.push(`chain ${c} differs (${got.length} rules, ${rules.length} expected)`);
          }
          return out;
        },
      },
    ];
  }
  const probes: TamperProbe[] = [];
  if (wantHook) {
    probes.push({
      argv: [bin.iptables, ...w, '-S', 'FORWARD', '1'],
      judge: (code, stdout, stderr) => {
        if (code !== 0) return [`FORWARD unreadable: ${stderr.trim()}`];
        const [first] = specsOf(stdout, 'FORWARD');
        return first === HOOK_RULE ? [] : [first === undefined ? 'FORWARD is empty: hook missing' : 'FORWARD rule 1 is not our hook'];
      },
    });
  }
  for (const c of [CHAIN_ROOT, CHAIN_INGRESS, CHAIN_EGRESS, CHAIN_ALLOW]) {
    const rules = expected.chains.get(c);
    if (!rules) continue;
    const head = PAIR_CHAINS.has(c);
    probes.push({
      argv: [bin.iptables, ...w, '-S', c, ...(head ? ['1'] : [])],
      judge: (code, stdout, stderr) => {
        if (code !== 0) return [`chain ${c} unreadable (deleted?): ${stderr.trim()}`];
        const got = specsOf(stdout, c);
        if (!head) return sameList(got, rules) ? [] : [`chain ${c} differs (${got.length} rules, ${rules.length} expected)`];
        const first = got[0];
        if (first === undefined) return rules.length ? [`chain ${c} is empty (flushed?)`] : [];
        return legalHeads(rules).has(first) ? [] : [`chain ${c} starts with a rule that is not a policy jump of ours`];
      },
    });
  }
  return probes;
}

/** Runs the probes in order; every finding, each naming what is wrong. Throws only if a command cannot start. */
export async function checkTamper(exec: Exec, probes: readonly TamperProbe[]): Promise<string[]> {
  const out: string[] = [];
  for (const p of probes) {
    const r = await exec(p.argv);
    out.push(...p.judge(r.code, r.stdout, r.stderr));
  }
  return out;
}

export interface TamperWatcherOptions {
  /** One check: findings, or [] when in order or when there is nothing to compare with (a sync is writing). */
  check: () => Promise<string[]>;
  /** Called with the findings of a check that found something: the caller runs a full resync. */
  onTamper: (findings: string[]) => void;
  clock: Clock;
  /** Between two checks; default 1000 ms (detection within ~1 s plus one check). */
  intervalMs?: number;
  /**
   * At most this share of wall time checking (default 0.05): after a check that took C ms the
   * watcher waits at least C * (1 / maxDuty - 1) ms, up to maxIntervalMs. A check whose cost grows
   * with the table (legacy) or a loaded machine then costs a bounded share of a core, and detection
   * slows down instead (default bound 3000 ms: detection to repair stays under 5 s).
   */
  maxDuty?: number;
  maxIntervalMs?: number;
  log?: (s: string) => void;
}

/** Runs `check` every interval until stopped; one check at a time. */
export class TamperWatcher {
  /** Checks run, findings reported, total time spent checking (ms): for metrics and the bench. */
  readonly stats = { checks: 0, detections: 0, errors: 0, busyMs: 0, lastCheckMs: 0 };
  private stopped = false;
  private loop: Promise<void> | undefined;

  constructor(private readonly o: TamperWatcherOptions) {}

  start(): void {
    if (this.loop) return;
    this.stopped = false;
    this.loop = (async () => {
      while (!this.stopped) {
        await this.o.clock.sleep(this.nextWaitMs());
        if (this.stopped) break;
        await this.tick();
      }
    })();
  }

  /** The wait before the next check: the interval, stretched after a costly check (maxDuty). */
  nextWaitMs(): number {
    const every = this.o.intervalMs ?? 1000;
    const duty = this.o.maxDuty ?? 0.05;
    const stretched = Math.min(this.o.maxIntervalMs ?? 3000, this.stats.lastCheckMs * (1 / duty - 1));
    return Math.max(every, stretched);
  }

  /** Stops after the current sleep or check. */
  async stop(): Promise<void> {
    this.stopped = true;
    await this.loop;
    this.loop = undefined;
  }

  /** One check; a finding calls onTamper. Never throws (a check that cannot run is logged). */
  async tick(): Promise<string[]> {
    const t0 = this.o.clock.now();
    let findings: string[] = [];
    try {
      findings = await this.o.check();
    } catch (e) {
      this.stats.errors++;
      this.o.log?.(`tamper check failed: ${e instanceof Error ? e.message : String(e)}`);
    }
    this.stats.checks++;
    this.stats.lastCheckMs = this.o.clock.now() - t0;
    this.stats.busyMs += this.stats.lastCheckMs;
    if (findings.length) {
      this.stats.detections++;
      this.o.log?.(`tampering detected, full resync: ${findings.join('; ')}`);
      this.o.onTamper(findings);
    }
    return findings;
  }
}
