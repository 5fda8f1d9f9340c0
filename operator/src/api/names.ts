/**
 * Kernel names and marks: the only place they are built.
 *
 * Every name is a fixed prefix plus a SHA-256 digest of a stable identity string, in base32, so
 *  - the same input gives the same name on every node and after every restart (no counters, no uids);
 *  - collisions need a SHA-256 prefix collision (120 bits for sets, 105 for chains), unlike the
 *    32-bit hashes that collided in Azure NPM (#4611);
 *  - set names fit ipset's 31 characters and chain names iptables' 28.
 * Everything kube-npm owns in the kernel starts with OWNED_PREFIX; the agent never touches anything else.
 */
import { createHash } from 'node:crypto';
import type { Direction, Protocol } from './types.js';

declare const kernelNameBrand: unique symbol;
/** A name of a kernel ipset or iptables chain built by this module. */
export type KernelName = string & { readonly [kernelNameBrand]: true };

export const OWNED_PREFIX = 'KNPM-';
export const MAX_SET_NAME = 31;
export const MAX_CHAIN_NAME = 28;
/** iptables' comment match accepts at most 256 characters. */
export const MAX_COMMENT = 256;

/** Top-level chains (filter table). */
export const CHAIN_ROOT = 'KNPM-FORWARD' as KernelName;
export const CHAIN_INGRESS = 'KNPM-INGRESS' as KernelName;
export const CHAIN_EGRESS = 'KNPM-EGRESS' as KernelName;
/** Jump target of every allow rule: sets the allow bit and returns to the policy chain's caller. */
export const CHAIN_ALLOW = 'KNPM-ALLOW' as KernelName;
/**
 * Set of this node's own pod IPs (agent daemon only). With node-local programming a node holds only
 * the policies of its own pods, so it must judge only its own pods: egress when the source is local,
 * ingress when the destination is local. The remote side is judged on its own node.
 */
export const LOCAL_PODS_SET = 'KNPM-LOCAL' as KernelName;
/**
 * Empty set the agent's long-lived ipset process lists after each batch to learn that the batch is
 * done (agent/ipset/session.ts). Deliberately outside OWNED_PREFIX: the planner must never see,
 * count as drift or destroy it while the session uses it.
 */
export const SESSION_PROBE_SET = 'knpm-session-probe' as KernelName;
/** The comment that identifies our FORWARD hook rule. */
export const HOOK_COMMENT = 'kube-npm: NetworkPolicy enforcement';

/**
 * Packet-mark bits used while a packet walks our chains; cleared before it leaves them.
 * kube-proxy owns 0x4000 (masquerade) and 0x8000 (drop); Azure NPM's 0x2000/0x4000 clashed with
 * it (#1313). We use two bits of the upper half-word, which neither kube-proxy nor the common CNIs
 * (Calico defaults to 0xffff0000 only when it runs, and then kube-npm would not) use.
 */
export const MARK_ALLOW = 0x10000;
export const MARK_ISOLATED = 0x20000;
export const MARK_MASK = MARK_ALLOW | MARK_ISOLATED;

const BASE32 = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';

/** First `chars` base32 characters of SHA-256(identity). */
export function digest(identity: string, chars: number): string {
  const bytes = createHash('sha256').update(identity).digest();
  let out = '';
  let acc = 0;
  let bits = 0;
  for (const b of bytes) {
    acc = (acc << 8) | b;
    bits += 8;
    while (bits >= 5 && out.length < chars) {
      out += BASE32[(acc >>> (bits - 5)) & 31];
      bits -= 5;
    }
    acc &= (1 << bits) - 1;
    if (out.length >= chars) break;
  }
  return out;
}

function setName(kind: string, identity: string): KernelName {
  const prefix = `${OWNED_PREFIX}${kind}-`;
  return (prefix + digest(identity, MAX_SET_NAME - prefix.length)) as KernelName;
}

/** Set of the pods a selector pair picks. `scope` is the canonical namespace scope, `pods` the canonical pod selector. */
export function podSelectorSetName(scope: string, pods: string): KernelName {
  return setName('S', `podsel\u0000${scope}\u0000${pods}`);
}

export function namedPortSetName(portName: string, protocol: Protocol): KernelName {
  return setName('P', `namedport\u0000${portName}\u0000${protocol}`);
}

export function ipBlockSetName(cidr: string, except: readonly string[]): KernelName {
  return setName('N', `ipblock\u0000${cidr}\u0000${[...except].sort().join(',')}`);
}

/**
 * Temporary name under which a set is rebuilt when its kernel header must change (type, family,
 * maxelem): filled, swapped with the live set, then destroyed. Derived from the live name so that
 * an agent that died mid-swap recognises and removes it.
 */
export function tempSetName(live: string): KernelName {
  return `${OWNED_PREFIX}T-${digest(`temp\u0000${live}`, MAX_SET_NAME - OWNED_PREFIX.length - 2)}` as KernelName;
}

export function policyChainName(direction: Direction, namespace: string, name: string): KernelName {
  const prefix = `${OWNED_PREFIX}${direction === 'Ingress' ? 'I' : 'E'}-`;
  return (prefix + digest(`chain\u0000${direction}\u0000${namespace}/${name}`, MAX_CHAIN_NAME - prefix.length)) as KernelName;
}

/** Kubernetes object name of shard `shard` of a set's NpmIPSet objects (lower case: DNS-1123). */
export function ipSetObjectName(set: string, shard: number): string {
  return `${set.toLowerCase()}-${shard}`;
}

export function isOwned(name: string): boolean {
  return name.startsWith(OWNED_PREFIX);
}

/** Clamp a comment to what the kernel accepts, keeping it valid UTF-8-free ASCII-safe text. */
export function clampComment(text: string): string {
  const clean = text.replace(/[^\x20-\x7e]/g, '?').replace(/"/g, "'");
  return clean.length <= MAX_COMMENT ? clean : `${clean.slice(0, MAX_COMMENT - 3)}...`;
}

/** Prefix of the node label keys (nodeLabelKey); every key that starts with it is one of them. */
export const NODE_LABEL_PREFIX = 'node.kubenpm.io/';

/** A label name part (the part after the prefix): at most 63 characters, alphanumeric at both ends. */
const LABEL_NAME = /^[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$/;

/**
 * Label key that marks an NpmRuleSet or NpmIPSet as concerning node `node` (value ""): agents
 * watch only objects carrying their own key (docs/adr/0011-node-scoped-watches.md). A node name
 * that is not a valid label name part (longer than 63 characters: node names may be DNS
 * subdomains of 253) is replaced by a digest, the same on every side that builds it.
 */
export function nodeLabelKey(node: string): string {
  const part = node.length <= 63 && LABEL_NAME.test(node) ? node : `h-${digest(node, 40).toLowerCase()}`;
  return `${NODE_LABEL_PREFIX}${part}`;
}

/**
 * Name of the Lease an agent renews as its liveness heartbeat (holder: the node name). Lease
 * names are DNS subdomains (253 characters), so only names past that limit are hashed.
 */
export function agentLeaseName(node: string): string {
  const name = `kube-npm-agent-${node}`;
  return name.length <= 253 ? name : `kube-npm-agent-h-${digest(node, 40).toLowerCase()}`;
}
