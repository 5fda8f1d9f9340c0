/**
 * `kube-npm agent --once`: converge this network namespace's kernel to a file of NpmRuleSet /
 * NpmIPSet objects (a v1 List as `kube-npm translate -o yaml|json` writes it), verify by reading
 * back, and report one line. `cleanup` removes everything kube-npm owns and nothing else.
 *
 * Fail closed on input: the file is the whole desired state, so a wrong file would remove policies.
 * Every input error is found before the kernel is touched and nothing is written (exit 2):
 * unparseable text, objects that are not ours (the translate *input* given by mistake), invalid or
 * duplicate objects, a ruleset whose target set has no complete NpmIPSet (an empty target set
 * guards nobody), and a file without any NpmRuleSet (that would remove every policy) unless
 * `allowEmpty` says "no policy" is meant. A peer or named-port set without its NpmIPSet only
 * costs the allow rules that use it (select.ts): they are left out, reported, exit 1.
 */
import { readFile } from 'node:fs/promises';
import { SESSION_PROBE_SET } from '../api/names.js';
import { errorChain } from '../framework/errors.js';
import { DocumentError, parseDocuments } from '../api/documents.js';
import { API_VERSION, IPSET_KIND, RULESET_KIND, type NpmIPSet, type NpmRuleSet } from '../api/types.js';
import { detectBackend, type BackendChoice } from './backend.js';
import { Converger } from './converge.js';
import { realClock, realExec, type Exec } from './exec.js';
import { buildDesired, cleanupDesired, ipSetProblem, rulesetProblem, type DesiredState } from './model.js';
import { planIsEmpty, planText } from './plan.js';
import { incompleteTargets, shardCompleteness, withoutIncompleteRules } from './select.js';

export interface RunOnceOptions {
  file?: string;
  objects?: unknown[];
  nodeName: string;
  dryRun?: boolean;
  cleanup?: boolean;
  /** An input without any NpmRuleSet is meant: converge to "no policy" (the base layout only). */
  allowEmpty?: boolean;
  backend?: BackendChoice;
  exec?: Exec;
  log?: (s: string) => void;
}

export interface RunOnceResult {
  /** 0 converged; 1 converged with problems, or failed while applying; 2 input refused, nothing written. */
  exitCode: number;
  summary: string;
}

export interface Located {
  /** "document 2 items[3]" */
  where: string;
  value: unknown;
}

/** Items of every document: a List contributes its items, anything else itself. */
export function objectsFromText(text: string): Located[] {
  const out: Located[] = [];
  for (const doc of parseDocuments(text)) {
    const v = doc.value;
    if (v === null || v === undefined) continue;
    if (typeof v === 'object' && !Array.isArray(v) && (v as { kind?: unknown }).kind === 'List') {
      const items = (v as { items?: unknown }).items;
      if (!Array.isArray(items)) throw new DocumentError(`${doc.where}: a List needs items`);
      items.forEach((item: unknown, i) => out.push({ where: `${doc.where} items[${i}]`, value: item }));
    } else out.push({ where: doc.where, value: v });
  }
  return out;
}

function isObj(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}

function idOf(o: Record<string, unknown>): string {
  const meta = isObj(o.metadata) ? o.metadata : {};
  return `${String(o.kind)} ${typeof meta.namespace === 'string' ? `${meta.namespace}/` : ''}${String(meta.name)}`;
}

export interface CheckedInput {
  /** What to program: valid objects, rulesets without the rules whose sets are incomplete. */
  objects: (NpmRuleSet | NpmIPSet)[];
  /** Input errors: when any, nothing may be written. */
  errors: string[];
  /** Allow rules left out (fail closed), per ruleset. */
  dropped: string[];
}

/**
 * Validates an --once input as a whole. Pure. `source` names the file in messages.
 */
export function checkOnceInput(items: readonly Located[], source: string, allowEmpty = false): CheckedInput {
  const errors: string[] = [];
  const rulesets: NpmRuleSet[] = [];
  const ipsets: NpmIPSet[] = [];
  const seen = new Map<string, string>();
  for (const { where, value: o } of items) {
    const at = `${source}: ${where}`;
    if (!isObj(o) || o.apiVersion !== API_VERSION || (o.kind !== RULESET_KIND && o.kind !== IPSET_KIND)) {
      const what = isObj(o) ? `${String(o.apiVersion)} ${idOf(o)}` : Array.isArray(o) ? 'a list' : String(JSON.stringify(o)).slice(0, 80);
      errors.push(`${at}: ${what} is not a ${API_VERSION} ${RULESET_KIND} or ${IPSET_KIND} (agent --once reads what \`kube-npm translate\` writes, not its input)`);
      continue;
    }
    const id = idOf(o);
    const first = seen.get(id);
    if (first) {
      errors.push(`${at}: duplicate ${id}: also at ${first}`);
      continue;
    }
    seen.set(id, at);
    const p = o.kind === RULESET_KIND ? rulesetProblem(o) : ipSetProblem(o);
    if (p) errors.push(`${at}: ${id}: ${p}`);
    else if (o.kind === RULESET_KIND) rulesets.push(o as unknown as NpmRuleSet);
    else ipsets.push(o as unknown as NpmIPSet);
  }
  if (!items.length && !errors.length && !allowEmpty) {
    errors.push(`${source}: holds no ${RULESET_KIND} or ${IPSET_KIND}: converging to it would remove every policy; pass --allow-empty if no policy is meant`);
  } else if (!rulesets.length && !errors.length && !allowEmpty) {
    errors.push(`${source}: holds no ${RULESET_KIND}: converging to it would remove every policy; pass --allow-empty if no policy is meant`);
  }
  const complete = shardCompleteness(ipsets);
  const dropped: string[] = [];
  const chosen: NpmRuleSet[] = [];
  for (const rs of rulesets) {
    const missing = incompleteTargets(rs, complete);
    if (missing.length) {
      errors.push(`${source}: ${idOf(rs as unknown as Record<string, unknown>)}: target set ${missing.join(', ')} has no complete ${IPSET_KIND} in the input (every shard): programmed empty it would guard nobody`);
      continue;
    }
    const t = withoutIncompleteRules(rs, complete);
    for (const d of t.dropped) dropped.push(`${idOf(rs as unknown as Record<string, unknown>)}: left out ${d}`);
    chosen.push(t.ruleset);
  }
  return { objects: [...ipsets, ...chosen], errors, dropped };
}

function counts(d: DesiredState): string {
  let members = 0;
  for (const s of d.sets.values()) members += s.members.size;
  let rules = d.hook ? 1 : 0;
  for (const r of d.chains.values()) rules += r.length;
  return `${d.sets.size} sets (${members} members), ${d.chains.size} chains (${rules} rules)`;
}

/**
 * The daemon's ipset session keeps one empty marker set outside the KNPM- prefix (ipset/session.ts:
 * the planner must never see it as ours to destroy or as drift), so cleanup removes it by name.
 */
async function destroySessionProbe(exec: Exec): Promise<void> {
  const names = await exec(['ipset', 'list', '-n']);
  if (names.code !== 0) throw new Error(`ipset list -n failed with exit ${names.code}: ${names.stderr.trim()}`);
  if (!names.stdout.split('\n').includes(SESSION_PROBE_SET)) return;
  const r = await exec(['ipset', 'destroy', SESSION_PROBE_SET]);
  if (r.code !== 0) throw new Error(`ipset destroy ${SESSION_PROBE_SET} failed with exit ${r.code}: ${r.stderr.trim()}`);
}

export async function runOnce(opts: RunOnceOptions): Promise<RunOnceResult> {
  const log = opts.log ?? (() => undefined);
  const t0 = realClock.now();
  const node = `node ${opts.nodeName}`;
  let dropped: string[] = [];
  let desired: DesiredState;
  // Input first, all of it, before anything touches the kernel.
  if (opts.cleanup) desired = cleanupDesired();
  else {
    const source = opts.file ?? 'input';
    let items: Located[];
    try {
      if (opts.objects) items = opts.objects.map((value, i) => ({ where: `objects[${i}]`, value }));
      else if (opts.file) items = objectsFromText(await readFile(opts.file, 'utf8'));
      else throw new Error('no input: give a file or objects');
    } catch (e) {
      return { exitCode: 2, summary: `${node}: input refused, nothing written: ${source}: ${errorChain(e)}` };
    }
    const checked = checkOnceInput(items, source, opts.allowEmpty);
    let errors = checked.errors;
    let built: DesiredState | undefined;
    if (!errors.length) {
      built = buildDesired(checked.objects);
      errors = built.problems.map((p) => `${source}: ${p}`);
    }
    if (!built || errors.length) {
      return { exitCode: 2, summary: `${node}: input refused, nothing written (${errors.length} error(s)):\n${errors.map((e) => `  ${e}`).join('\n')}` };
    }
    desired = built;
    dropped = checked.dropped;
  }
  for (const d of dropped) log(`problem: ${d}`);
  try {
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
    if (opts.cleanup) await destroySessionProbe(exec);
    const verify = await conv.syncOnce(desired, { dryRun: true });
    const ms = Math.round(realClock.now() - t0);
    if (!planIsEmpty(verify.plan)) {
      return { exitCode: 1, summary: `${node}: verification failed: the kernel still differs after apply (backend ${backend}):\n${planText(verify.plan)}` };
    }
    const what = opts.cleanup ? 'cleaned up' : `converged ${counts(desired)}`;
    const wrote = `wrote ${r.lines.ipset + r.lines.destroy} ipset lines, ${r.lines.iptables} iptables lines`;
    const problems = dropped.length ? `; ${dropped.length} allow rule(s) left out (fail closed), first: ${dropped[0]}` : '';
    return { exitCode: problems ? 1 : 0, summary: `${node}: ${what} in ${ms} ms; ${wrote}; backend ${backend}${problems}` };
  } catch (e) {
    return { exitCode: 1, summary: `${node}: failed: ${errorChain(e)}` };
  }
}
