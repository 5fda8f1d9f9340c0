/**
 * `sandbox probe`: what the target is, and what a probe result means. Pure (no processes, no
 * clock), so the verdicts are unit-tested as a table.
 *
 * Exit codes (kube-npm sandbox --help and docs/sandbox.md say the same):
 *   0 allowed      connected (TCP) / echoed (UDP)
 *   1 denied       no answer within the timeout: a policy drop is silent (kube-npm DROPs, never
 *                  REJECTs), so a timeout is what a drop looks like
 *   2 bad input    usage, no sandbox, unknown pod, a protocol the prober does not speak
 *   3 refused or unreachable: something answered "no" (TCP RST or ICMP port unreachable: the
 *                  packet got through the policies and nothing listens there), or the address is
 *                  not reachable (ICMP host/net unreachable, no ARP answer). Not a policy drop.
 */
import type { SandboxState } from './state.js';

export const PROBE_ALLOWED = 0;
export const PROBE_DENIED = 1;
export const PROBE_BAD_INPUT = 2;
export const PROBE_REFUSED = 3;

/** What TO names: a sandbox pod, or an IPv4 address that is not one (and what it is instead). */
export type ProbeTarget =
  | { kind: 'pod'; key: string; ip: string }
  | { kind: 'other'; ip: string; what: string }
  | { kind: 'error'; message: string };

const IPV4 = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

function ipv4ToInt(ip: string): number | undefined {
  const m = IPV4.exec(ip);
  if (!m) return undefined;
  const o = m.slice(1).map(Number);
  if (o.some((x) => x > 255)) return undefined;
  return ((o[0]! << 24) | (o[1]! << 16) | (o[2]! << 8) | o[3]!) >>> 0;
}

function inCidr(ip: number, cidr: string): boolean {
  const [base, len] = cidr.split('/');
  const b = base === undefined ? undefined : ipv4ToInt(base);
  const n = Number(len);
  if (b === undefined || !Number.isInteger(n) || n < 0 || n > 32) return false;
  const mask = n === 0 ? 0 : (0xffffffff << (32 - n)) >>> 0;
  return ((ip & mask) >>> 0) === ((b & mask) >>> 0);
}

/**
 * Resolves TO (NS/NAME of a running sandbox pod, or an IPv4 address) against the sandbox state. An
 * address that is not a pod's is still probed, but named for what it is, so that a timeout there
 * is not read as a policy verdict about a pod.
 */
export function resolveTarget(s: Pick<SandboxState, 'pods' | 'nodes'>, to: string): ProbeTarget {
  const known = Object.keys(s.pods).sort().join(', ') || 'none yet';
  if (IPV4.test(to)) {
    const n = ipv4ToInt(to);
    if (n === undefined) return { kind: 'error', message: `"${to}" is not an IPv4 address` };
    const pod = Object.values(s.pods).find((p) => p.ip === to);
    if (pod) return { kind: 'pod', key: pod.key, ip: to };
    const node = s.nodes.find((x) => x.underlayIp === to);
    if (node) return { kind: 'other', ip: to, what: `not a pod: node ${node.name}'s address` };
    const subnet = s.nodes.find((x) => inCidr(n, x.podSubnet));
    if (subnet) return { kind: 'other', ip: to, what: `not a pod: no sandbox pod has this address (node ${subnet.name}'s pod subnet ${subnet.podSubnet})` };
    return { kind: 'other', ip: to, what: 'not a pod: an address outside the sandbox' };
  }
  const pod = s.pods[to];
  if (pod) return { kind: 'pod', key: to, ip: pod.ip };
  if (!to.includes('/')) return { kind: 'error', message: `"${to}" is neither a pod (NS/NAME) nor an IPv4 address (pods: ${known})` };
  return { kind: 'error', message: `no running sandbox pod ${to} (pods: ${known}); give NS/NAME or an IPv4 address` };
}

/** What the in-pod prober (podserver.mjs probe) printed. */
export interface ProbeResult {
  ok?: boolean;
  error?: string;
  ms?: number;
}

/** Errors meaning "an answer came back, and it was no" (RST, ICMP port unreachable). */
const REFUSED = new Set(['ECONNREFUSED', 'ECONNRESET']);
/** Errors meaning "no route or no host" (ICMP host/net unreachable, ARP failure). */
const UNREACHABLE = new Set(['EHOSTUNREACH', 'ENETUNREACH', 'EHOSTDOWN', 'ENETDOWN']);

export interface ProbeVerdict {
  exit: number;
  /** One line for stdout. */
  line: string;
}

/**
 * The verdict line and exit code of one probe. `what` is "FROM -> TO (IP) PORT/proto"; `target`
 * says whether TO is a pod (a timeout to an address nobody uses looks like a drop, so it says so).
 */
export function probeVerdict(r: ProbeResult, o: { what: string; timeoutMs: number; port: number; protocol: 'TCP' | 'UDP'; target: ProbeTarget }): ProbeVerdict {
  const ms = Math.round(r.ms ?? 0);
  const note = o.target.kind === 'other' ? ` [${o.target.ip}: ${o.target.what}]` : '';
  if (r.ok) return { exit: PROBE_ALLOWED, line: `allowed (${ms} ms): ${o.what}${note}` };
  const port = `${o.port}/${o.protocol.toLowerCase()}`;
  if (r.error === 'timeout') {
    // A policy drop is silent; with a target that is not a pod, nobody being there is silent too.
    const why = o.target.kind === 'other' ? ': a policy drop, or nobody at that address (both are silent)' : '';
    return { exit: PROBE_DENIED, line: `denied (timeout ${o.timeoutMs} ms): ${o.what}${note}${why}` };
  }
  const code = r.error ?? 'unknown error';
  if (REFUSED.has(code)) {
    return { exit: PROBE_REFUSED, line: `refused (${code} after ${ms} ms): ${o.what}${note}: nothing listens on ${port} there; the policies let it through (a drop is a silent timeout)` };
  }
  if (UNREACHABLE.has(code)) {
    return { exit: PROBE_REFUSED, line: `unreachable (${code} after ${ms} ms): ${o.what}${note}: no route or no host at that address; not a policy drop` };
  }
  // Anything else the socket reported is also an answer, not the silence of a drop.
  return { exit: PROBE_REFUSED, line: `failed (${code} after ${ms} ms): ${o.what}${note}: not a policy drop (a drop is a silent timeout)` };
}
