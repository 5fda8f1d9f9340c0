/**
 * Rendering of kube-npm's iptables layout (filter table) as data: chain name -> rule specs. Pure.
 *
 * Layout (README of the agent; kube-npm only DROPs, never ACCEPTs, and clears its mark bits):
 *   FORWARD rule 1:  -m comment --comment HOOK_COMMENT -j KNPM-FORWARD
 *   KNPM-FORWARD:    [pod-startup strict: DROP src/dst in the node's pod CIDR and not in KNPM-LOCAL]
 *                    ctstate RELATED,ESTABLISHED -> RETURN; clear marks; KNPM-EGRESS; clear; KNPM-INGRESS; clear
 *   KNPM-EGRESS/INGRESS: per policy chain (rulesets by namespace/name, chains in spec order):
 *                    jump if the guarded pod is in targetSet (src for egress, dst for ingress),
 *                    then RETURN if the allow bit is set (commented with the policy chain's name);
 *                    last: DROP if isolated (and not allowed). The order of these pairs is free
 *                    (PAIR_CHAINS): the kernel may hold them in any order.
 *   policy chain:    set the isolated bit; one rule per allow rule -> KNPM-ALLOW
 *   KNPM-ALLOW:      set the allow bit (falls off the end: back to the policy chain)
 * Besides the layout, each direction-chain jump carries `-m comment --comment "<ns>/<name> ..."`
 * naming its policy: it changes no verdict, makes iptables-save readable, and lets the node metrics
 * count policies from the kernel alone.
 *
 * Canonical form. Every rule is rendered exactly as `iptables-save` prints it back (nft and legacy
 * 1.8.9 print identically here): `-p` first, then matches in insertion order, with the implicit
 * protocol match spelled out (`-p tcp -m tcp --dport 80`), marks in lower-case hex, and the same
 * quoting rules (a token with characters outside [A-Za-z0-9_-./,:] is double-quoted, `"` `\` `'`
 * backslash-escaped; see formatArgs). Read-back rules are tokenised and re-formatted the same way
 * (parse.ts), so "kernel equals desired" is a string comparison and needs no per-rule hash comment.
 * The kernel tests prove the round trip for both backends (a second plan is empty).
 */
import {
  CHAIN_ALLOW,
  CHAIN_EGRESS,
  CHAIN_INGRESS,
  CHAIN_ROOT,
  HOOK_COMMENT,
  MARK_ALLOW,
  MARK_ISOLATED,
  MARK_MASK,
  clampComment,
} from '../../api/names.js';
import type { Chain, Direction, NpmRuleSet, Rule } from '../../api/types.js';

/** Chains whose names are fixed (every other owned chain is a policy chain). */
export const BASE_CHAINS: readonly string[] = [CHAIN_ROOT, CHAIN_EGRESS, CHAIN_INGRESS, CHAIN_ALLOW];

const SAFE = /^[A-Za-z0-9_\-./,:]+$/;

/** One argument as iptables-save prints it (and iptables-restore reads it). */
export function quoteArg(s: string): string {
  // A lone "!" negates the next match; iptables-save prints it bare (and a quoted one would be read
  // as a literal argument by some iptables-restore versions).
  if (SAFE.test(s) || s === '!') return s;
  return `"${s.replace(/[\\"']/g, (c) => `\\${c}`)}"`;
}

export function formatArgs(args: readonly string[]): string {
  return args.map(quoteArg).join(' ');
}

export function hex(n: number): string {
  return `0x${n.toString(16)}`;
}

const CLEAR_MARKS = formatArgs(['-j', 'MARK', '--set-xmark', `0x0/${hex(MARK_MASK)}`]);

/** The FORWARD hook rule spec (what follows "-A FORWARD "). */
export const HOOK_RULE = formatArgs(['-m', 'comment', '--comment', HOOK_COMMENT, '-j', CHAIN_ROOT]);

/** Rule spec of one allow rule, or an error message (the rule is then left out: fail closed). */
export function renderRule(direction: Direction, rule: Rule): string | { error: string } {
  const m = rule.match;
  const args: string[] = [];
  const proto = m.protocol?.toLowerCase();
  if (m.protocol !== undefined && proto !== 'tcp' && proto !== 'udp' && proto !== 'sctp') return { error: `unknown protocol ${String(m.protocol)}` };
  if (proto) args.push('-p', proto);
  if (m.peerSet !== undefined) args.push('-m', 'set', '--match-set', m.peerSet, direction === 'Ingress' ? 'src' : 'dst');
  if (m.namedPortSet !== undefined) args.push('-m', 'set', '--match-set', m.namedPortSet, 'dst,dst');
  if (m.port !== undefined) {
    if (!proto) return { error: 'a port needs a protocol' };
    if (!Number.isInteger(m.port) || m.port < 1 || m.port > 65535) return { error: `invalid port ${m.port}` };
    if (m.endPort !== undefined && (!Number.isInteger(m.endPort) || m.endPort < m.port || m.endPort > 65535)) return { error: `invalid endPort ${m.endPort}` };
    args.push('-m', proto, '--dport', m.endPort !== undefined && m.endPort !== m.port ? `${m.port}:${m.endPort}` : `${m.port}`);
  } else if (m.endPort !== undefined) return { error: 'endPort without port' };
  args.push('-m', 'comment', '--comment', clampComment(rule.description), '-j', CHAIN_ALLOW);
  return formatArgs(args);
}

/**
 * Direction chains: (policy jump, its allow-mark check) pairs, then DROP last. The verdict does not
 * depend on the order of the pairs (a packet's allow bit, once set, stays set; the DROP only looks
 * at the bits), so the planner treats the pairs as a set: one policy is added with two `-I` and
 * removed with two `-D` by spec, and a kernel holding the pairs in another order is in sync.
 */
export const PAIR_CHAINS: ReadonlySet<string> = new Set([CHAIN_EGRESS, CHAIN_INGRESS]);

/**
 * The allow-mark check following the jump to `chain`. It names the chain in a comment (no verdict
 * change) so that each pair's check is a distinct rule: `-D <direction chain> <check>` then deletes
 * exactly that pair's check, whatever the order of the pairs.
 */
export function allowReturnFor(chain: string): string {
  return formatArgs(['-m', 'mark', '--mark', `${hex(MARK_ALLOW)}/${hex(MARK_ALLOW)}`, '-m', 'comment', '--comment', chain, '-j', 'RETURN']);
}

export interface RenderedChains {
  /** Chain name -> rule specs in order (base chains included). */
  chains: Map<string, string[]>;
  problems: string[];
}

/** Comment of the pod-startup drop rules (docs/adr/0009-pod-startup.md). */
export const STRICT_COMMENT: Record<'src' | 'dst', string> = {
  src: "kube-npm pod-startup=strict: source in the node pod CIDR is not a known pod",
  dst: "kube-npm pod-startup=strict: destination in the node pod CIDR is not a known pod",
};

/**
 * The pod-startup=strict rules of KNPM-FORWARD (ADR 0009): a packet from or to an address of this
 * node's pod CIDR that is not in `localSet` is dropped. They come FIRST, before the conntrack
 * RETURN, so that no conntrack entry can carry traffic for an address the agent does not know:
 * a flow of a deleted pod stops with it, and a pod that reuses its IP cannot receive that flow's
 * packets before the agent has programmed the node for it. A dropped NEW packet never confirms its
 * conntrack entry, so once the pod is known its next packet is judged as NEW by the policies.
 */
export function strictRules(podCidrs: readonly string[], localSet: string): string[] {
  const out: string[] = [];
  for (const dir of ['src', 'dst'] as const) {
    for (const cidr of podCidrs) {
      out.push(formatArgs([dir === 'src' ? '-s' : '-d', cidr, '-m', 'set', '!', '--match-set', localSet, dir, '-m', 'comment', '--comment', STRICT_COMMENT[dir], '-j', 'DROP']));
    }
  }
  return out;
}

/**
 * Policy chains of `rulesets` (already validated, sorted by namespace/name) plus the base chains.
 * With `localSet`, a direction chain is entered only for this node's own pods (see LOCAL_PODS_SET);
 * without it (agent --once: the whole cluster's rulesets on every node) every packet is judged.
 * With `localSet` and `podCidrs` (pod-startup=strict, agent daemon), an address of those CIDRs
 * that is not in `localSet` can neither send nor receive (strictRules).
 */
export function renderChains(rulesets: readonly NpmRuleSet[], localSet?: string, podCidrs: readonly string[] = []): RenderedChains {
  const problems: string[] = [];
  const chains = new Map<string, string[]>();
  const jumps: Record<Direction, string[]> = { Ingress: [], Egress: [] };
  for (const rs of rulesets) {
    const policy = `${rs.spec.policy.namespace}/${rs.spec.policy.name}`;
    for (const c of rs.spec.chains) {
      const rules = [formatArgs(['-j', 'MARK', '--set-xmark', `${hex(MARK_ISOLATED)}/${hex(MARK_ISOLATED)}`])];
      c.rules.forEach((r, i) => {
        const spec = renderRule(c.direction, r);
        if (typeof spec === 'string') rules.push(spec);
        else problems.push(`NpmRuleSet ${policy} chain ${c.name} rule ${i}: ${spec.error} (rule left out)`);
      });
      chains.set(c.name, rules);
      jumps[c.direction].push(
        formatArgs([
          '-m', 'set', '--match-set', c.targetSet, c.direction === 'Ingress' ? 'dst' : 'src',
          '-m', 'comment', '--comment', clampComment(`${policy} ${c.direction.toLowerCase()}: ${(c as Chain).guards}`),
          '-j', c.name,
        ]),
        allowReturnFor(c.name),
      );
    }
  }
  const drop = formatArgs(['-m', 'mark', '--mark', `${hex(MARK_ISOLATED)}/${hex(MARK_MASK)}`, '-j', 'DROP']);
  const base = new Map<string, string[]>([
    [
      CHAIN_ROOT,
      [
        ...(localSet ? strictRules(podCidrs, localSet) : []),
        formatArgs(['-m', 'conntrack', '--ctstate', 'RELATED,ESTABLISHED', '-j', 'RETURN']),
        CLEAR_MARKS,
        formatArgs([...(localSet ? ['-m', 'set', '--match-set', localSet, 'src'] : []), '-j', CHAIN_EGRESS]),
        CLEAR_MARKS,
        formatArgs([...(localSet ? ['-m', 'set', '--match-set', localSet, 'dst'] : []), '-j', CHAIN_INGRESS]),
        CLEAR_MARKS,
      ],
    ],
    [CHAIN_EGRESS, [...jumps.Egress, drop]],
    [CHAIN_INGRESS, [...jumps.Ingress, drop]],
    [CHAIN_ALLOW, [formatArgs(['-j', 'MARK', '--set-xmark', `${hex(MARK_ALLOW)}/${hex(MARK_ALLOW)}`])]],
  ]);
  return { chains: new Map([...base, ...chains]), problems };
}
