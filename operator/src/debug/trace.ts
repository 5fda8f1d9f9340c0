/**
 * The rule walker: follows the chains and sets of NpmRuleSets / NpmIPSets for one connection
 * (source IP, destination IP, protocol, port) the way the kernel layout does (see
 * operator/src/agent/iptables/render.ts), and explains the verdict. It is the translation-level
 * conformance oracle and `kube-npm debug trace`.
 *
 * A connection is allowed when the source's egress and the destination's ingress both allow it.
 * In one direction: if no chain guards the pod, it is not isolated (allowed); otherwise any rule of
 * any guarding chain that matches allows it.
 */
import type { Chain, Direction, NpmIPSet, NpmRuleSet, Protocol, RuleMatch, SetType } from '../api/types.js';
import { IPSET_KIND, RULESET_KIND } from '../api/types.js';
import { parseCidr, parseIPv4 } from '../translate/cidr.js';

export interface Connection {
  src: string;
  dst: string;
  protocol: Protocol;
  port: number;
}

export interface DirectionVerdict {
  direction: Direction;
  /** The pod this direction concerns (source for egress, destination for ingress). */
  pod: string;
  isolatedBy: string[];
  /** "ns/name rule 2: allow ..." of the first matching rule, if allowed by a rule. */
  allowedBy?: string;
  allowed: boolean;
}

export interface Verdict {
  allowed: boolean;
  egress: DirectionVerdict;
  ingress: DirectionVerdict;
}

interface SetView {
  type: SetType;
  members: Set<string>;
  /** hash:net: [base, prefix, nomatch] */
  nets?: { base: number; prefix: number; nomatch: boolean }[];
}

export class RuleWalker {
  private readonly sets = new Map<string, SetView>();
  private readonly chains: { owner: string; chain: Chain }[] = [];

  constructor(objects: readonly unknown[]) {
    const rulesets = objects.filter((o): o is NpmRuleSet => (o as NpmRuleSet)?.kind === RULESET_KIND);
    for (const o of objects as NpmIPSet[]) {
      if (o?.kind !== IPSET_KIND) continue;
      const v = this.view(o.spec.setName, o.spec.type);
      for (const m of o.spec.members) this.add(v, m);
    }
    rulesets.sort((a, b) => key(a).localeCompare(key(b)));
    for (const rs of rulesets) {
      for (const ref of rs.spec.ipsets) {
        const v = this.view(ref.name, ref.type);
        for (const m of ref.members ?? []) this.add(v, m);
      }
      for (const chain of rs.spec.chains) this.chains.push({ owner: key(rs), chain });
    }
  }

  private view(name: string, type: SetType): SetView {
    let v = this.sets.get(name);
    if (!v) this.sets.set(name, (v = { type, members: new Set(), ...(type === 'hash:net' ? { nets: [] } : {}) }));
    return v;
  }

  private add(v: SetView, member: string): void {
    v.members.add(member);
    if (v.nets) {
      const [cidr, flag] = member.split(' ');
      const p = parseCidr(cidr!.includes('/') ? cidr! : `${cidr}/32`);
      if (typeof p !== 'string' && p.family === 'IPv4') v.nets.push({ base: p.base, prefix: p.prefix, nomatch: flag === 'nomatch' });
    }
  }

  /** ipset semantics: hash:net picks the most specific entry, and a nomatch entry does not match. */
  inSet(name: string, element: string): boolean {
    const v = this.sets.get(name);
    if (!v) return false;
    if (!v.nets) return v.members.has(element);
    const ip = parseIPv4(element.split(',')[0]!);
    if (ip === undefined) return false;
    let best: { prefix: number; nomatch: boolean } | undefined;
    for (const n of v.nets) {
      const mask = n.prefix === 0 ? 0 : (0xffffffff << (32 - n.prefix)) >>> 0;
      if (((ip & mask) >>> 0) === n.base && (!best || n.prefix > best.prefix)) best = n;
    }
    return !!best && !best.nomatch;
  }

  private ruleMatches(m: RuleMatch, direction: Direction, c: Connection): boolean {
    const peer = direction === 'Ingress' ? c.src : c.dst;
    if (m.peerSet && !this.inSet(m.peerSet, peer)) return false;
    if (m.protocol && m.protocol !== c.protocol) return false;
    if (m.port !== undefined && (c.port < m.port || c.port > (m.endPort ?? m.port))) return false;
    if (m.namedPortSet && !this.inSet(m.namedPortSet, `${c.dst},${c.protocol.toLowerCase()}:${c.port}`)) return false;
    return true;
  }

  private walk(direction: Direction, c: Connection): DirectionVerdict {
    const pod = direction === 'Ingress' ? c.dst : c.src;
    const v: DirectionVerdict = { direction, pod, isolatedBy: [], allowed: true };
    for (const { owner, chain } of this.chains) {
      if (chain.direction !== direction || !this.inSet(chain.targetSet, pod)) continue;
      v.isolatedBy.push(owner);
      if (v.allowedBy) continue;
      const rule = chain.rules.find((r) => this.ruleMatches(r.match, direction, c));
      if (rule) v.allowedBy = `${owner} ${rule.description}`;
    }
    v.allowed = v.isolatedBy.length === 0 || v.allowedBy !== undefined;
    return v;
  }

  verdict(c: Connection): Verdict {
    const egress = this.walk('Egress', c);
    const ingress = this.walk('Ingress', c);
    return { allowed: egress.allowed && ingress.allowed, egress, ingress };
  }
}

function key(rs: NpmRuleSet): string {
  return `${rs.metadata.namespace}/${rs.metadata.name}`;
}

/** How explain() names things: pods by name instead of address, and a note per policy (its Programmed state). */
export interface ExplainNames {
  /** An address -> "ns/pod (10.244.1.2)", or the address itself when it is no pod's. */
  endpoint?: (ip: string) => string;
  /** "ns/name" -> a note printed after the policy's name. */
  policyNote?: (policy: string) => string | undefined;
}

/** Human-readable explanation of a verdict, for `kube-npm debug trace`. */
export function explain(c: Connection, v: Verdict, names: ExplainNames = {}): string {
  const who = names.endpoint ?? ((ip: string) => ip);
  const policy = (p: string) => {
    const note = names.policyNote?.(p);
    return note ? `${p} [${note}]` : p;
  };
  const lines = [`${who(c.src)} -> ${who(c.dst)} ${c.protocol}/${c.port}: ${v.allowed ? 'ALLOWED' : 'DENIED'}`];
  for (const d of [v.egress, v.ingress]) {
    const what = d.direction === 'Egress' ? `egress of ${who(d.pod)}` : `ingress of ${who(d.pod)}`;
    const by = d.isolatedBy.map(policy).join(', ');
    if (!d.isolatedBy.length) lines.push(`  ${what}: not isolated (no policy selects it)`);
    else if (d.allowedBy) lines.push(`  ${what}: isolated by ${by}; allowed by ${d.allowedBy}`);
    else lines.push(`  ${what}: isolated by ${by}; no rule of these policies allows it -> DROP`);
  }
  return lines.join('\n');
}
