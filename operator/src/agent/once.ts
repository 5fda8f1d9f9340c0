/**
 * `kube-npm agent --once`: converge this network namespace's kernel to a file of NpmRuleSet /
 * NpmIPSet objects (a v1 List as `kube-npm translate -o yaml|json` writes it), verify by reading
 * back, and report one line. `cleanup` removes everything kube-npm owns and nothing else.
 */
import { readFile } from 'node:fs/promises';
import { parseAllDocuments } from 'yaml';
import { detectBackend, type BackendChoice } from './backend.js';
import { Converger } from './converge.js';
import { realClock, realExec, type Exec } from './exec.js';
import { buildDesired, cleanupDesired, type DesiredState } from './model.js';
import { planIsEmpty, planText } from './plan.js';

export interface RunOnceOptions {
  file?: string;
  objects?: unknown[];
  nodeName: string;
  dryRun?: boolean;
  cleanup?: boolean;
  backend?: BackendChoice;
  exec?: Exec;
  log?: (s: string) => void;
}

export interface RunOnceResult {
  exitCode: number;
  summary: string;
}

/** Items of every document: a List contributes its items, anything else itself. */
export function objectsFromText(text: string): unknown[] {
  const out: unknown[] = [];
  for (const doc of parseAllDocuments(text)) {
    if (doc.errors.length) throw new Error(`invalid YAML/JSON: ${doc.errors[0]?.message ?? ''}`);
    const v: unknown = doc.toJSON();
    if (v === null || v === undefined) continue;
    if (typeof v === 'object' && !Array.isArray(v) && (v as { kind?: unknown }).kind === 'List') {
      const items = (v as { items?: unknown }).items;
      if (!Array.isArray(items)) throw new Error('a List needs items');
      out.push(...(items as unknown[]));
    } else out.push(v);
  }
  return out;
}

function describe(e: unknown): string {
  const parts: string[] = [];
  for (let x: unknown = e; x !== undefined && parts.length < 5; x = x instanceof Error ? x.cause : undefined) {
    parts.push(x instanceof Error ? x.message : String(x));
  }
  return parts.join(': ');
}

function counts(d: DesiredState): string {
  let members = 0;
  for (const s of d.sets.values()) members += s.members.size;
  let rules = d.hook ? 1 : 0;
  for (const r of d.chains.values()) rules += r.length;
  return `${d.sets.size} sets (${members} members), ${d.chains.size} chains (${rules} rules)`;
}

export async function runOnce(opts: RunOnceOptions): Promise<RunOnceResult> {
  const log = opts.log ?? (() => undefined);
  const t0 = realClock.now();
  const node = `node ${opts.nodeName}`;
  try {
    let desired: DesiredState;
    if (opts.cleanup) desired = cleanupDesired();
    else {
      let objects = opts.objects;
      if (!objects) {
        if (!opts.file) throw new Error('no input: give a file or objects');
        objects = objectsFromText(await readFile(opts.file, 'utf8'));
      }
      desired = buildDesired(objects);
    }
    for (const p of desired.problems) log(`problem: ${p}`);
    const exec = opts.exec ?? realExec();
    const backend = await detectBackend(exec, opts.backend ?? 'auto', log);
    const conv = new Converger({ exec, backend, log, retry: { attempts: 3, initialDelayMs: 200 } });
    if (opts.dryRun) {
      const r = await conv.syncOnce(desired, { dryRun: true });
      const text = planText(r.plan);
      return {
        exitCode: 0,
        summary: `${node}: dry run: would write ${r.lines.ipset + r.lines.destroy} ipset lines, ${r.lines.iptables} iptables lines; backend ${backend}${text ? `\n${text}` : ' (nothing to do)'}`,
      };
    }
    const r = await conv.sync(desired, { forceFull: true });
    const verify = await conv.syncOnce(desired, { dryRun: true });
    const ms = Math.round(realClock.now() - t0);
    if (!planIsEmpty(verify.plan)) {
      return { exitCode: 1, summary: `${node}: verification failed: the kernel still differs after apply (backend ${backend}):\n${planText(verify.plan)}` };
    }
    const what = opts.cleanup ? 'cleaned up' : `converged ${counts(desired)}`;
    const wrote = `wrote ${r.lines.ipset + r.lines.destroy} ipset lines, ${r.lines.iptables} iptables lines`;
    const problems = desired.problems.length ? `; ${desired.problems.length} problem(s), first: ${desired.problems[0]}` : '';
    return { exitCode: problems ? 1 : 0, summary: `${node}: ${what} in ${ms} ms; ${wrote}; backend ${backend}${problems}` };
  } catch (e) {
    return { exitCode: 1, summary: `${node}: failed: ${describe(e)}` };
  }
}
