/**
 * Parses `iptables-save -t filter` (or `iptables -S FORWARD`) output into what we own: chains named
 * KNPM-* with their rule specs in canonical form (render.ts), and the FORWARD rules that carry our
 * hook comment. Everything else is ignored. Pure.
 */
import { HOOK_COMMENT, isOwned } from '../../api/names.js';
import { formatArgs } from './render.js';

export interface HookState {
  /** Canonical specs of every FORWARD rule carrying HOOK_COMMENT, in order. */
  copies: string[];
  /** Canonical spec of FORWARD's first rule ('' when FORWARD is empty). */
  first: string;
}

export interface ActualChains {
  /** Read-only once built (may share rule arrays with a DesiredState). */
  chains: Map<string, readonly string[]>;
  hook: HookState;
}

/** Splits a save line into arguments as iptables-restore does: double quotes group, backslash escapes. */
export function tokenize(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let inToken = false;
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i] as string;
    if (c === '\\' && i + 1 < line.length) {
      cur += line[++i];
      inToken = true;
    } else if (c === '"') {
      quoted = !quoted;
      inToken = true;
    } else if ((c === ' ' || c === '\t') && !quoted) {
      if (inToken) out.push(cur);
      cur = '';
      inToken = false;
    } else {
      cur += c;
      inToken = true;
    }
  }
  if (inToken) out.push(cur);
  return out;
}

/** Only chains (and the FORWARD rules) of the filter table are read; `text` may hold other tables. */
export function parseIptablesSave(text: string): ActualChains {
  const chains = new Map<string, string[]>();
  const hook: HookState = { copies: [], first: '' };
  let forwardSeen = false;
  let table = 'filter';
  for (const line of text.split('\n')) {
    if (line.startsWith('*')) table = line.slice(1).trim();
    if (table !== 'filter') continue;
    if (line.startsWith(':')) {
      const name = line.slice(1).split(' ')[0] ?? '';
      if (isOwned(name) && !chains.has(name)) chains.set(name, []);
    } else if (line.startsWith('-A ') || line.startsWith('-N ')) {
      const args = tokenize(line);
      const chain = args[1] ?? '';
      if (args[0] === '-N') {
        if (isOwned(chain) && !chains.has(chain)) chains.set(chain, []);
        continue;
      }
      const spec = formatArgs(args.slice(2));
      if (chain === 'FORWARD') {
        if (!forwardSeen) hook.first = spec;
        forwardSeen = true;
        const ci = args.indexOf('--comment');
        if (ci >= 0 && args[ci + 1] === HOOK_COMMENT) hook.copies.push(spec);
      } else if (isOwned(chain)) {
        const rules = chains.get(chain);
        if (rules) rules.push(spec);
        else chains.set(chain, [spec]);
      }
    }
  }
  return { chains: chains as Map<string, readonly string[]>, hook };
}
