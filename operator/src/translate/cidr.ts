/**
 * IPv4/IPv6 address and CIDR parsing, pure. IPv4 is what the dataplane enforces today; IPv6 is
 * recognised so that dual-stack input is classified instead of rejected.
 */

export interface Cidr4 {
  family: 'IPv4';
  /** Network address as an unsigned 32-bit integer (host bits cleared). */
  base: number;
  prefix: number;
}

/**
 * Dotted-quad IPv4 (four decimal octets of 1-3 digits, no leading zero, at most 255) as an unsigned
 * 32-bit integer, or undefined. A character loop, not a regular expression: it runs once per pod
 * and once per member sorted (hundreds of thousands of times in a full translation).
 */
export function parseIPv4(s: string): number | undefined {
  const len = s.length;
  if (len < 7 || len > 15) return undefined;
  let n = 0;
  let octet = 0;
  let digits = 0;
  let dots = 0;
  let first = 0;
  for (let i = 0; i < len; i++) {
    const c = s.charCodeAt(i);
    if (c === 46 /* . */) {
      if (digits === 0 || ++dots > 3) return undefined;
      n = n * 256 + octet;
      octet = 0;
      digits = 0;
    } else if (c >= 48 && c <= 57) {
      if (digits === 0) first = c;
      else if (first === 48 || digits === 3) return undefined; // no octal-looking octets; 1-3 digits
      octet = octet * 10 + (c - 48);
      digits++;
      if (octet > 255) return undefined;
    } else return undefined;
  }
  if (dots !== 3 || digits === 0) return undefined;
  return n * 256 + octet;
}

/**
 * True when `s` is an IPv6 address as Go's net.ParseIP (the API server) reads it: eight groups of
 * 1-4 hex digits, or fewer with exactly one "::" standing for at least one zero group, the last two
 * groups optionally written as an IPv4 address. No zone. (":::" and "1::2::3" are not addresses.)
 */
export function isIPv6(s: string): boolean {
  if (!s.includes(':') || !/^[0-9a-fA-F:.]+$/.test(s)) return false;
  const halves = s.split('::');
  if (halves.length > 2) return false;
  const groups = (h: string): string[] | undefined => (h === '' ? [] : h.split(':'));
  const head = groups(halves[0]!);
  const tail = halves.length === 2 ? groups(halves[1]!) : [];
  if (!head || !tail) return false;
  const all = [...head, ...tail];
  let count = 0;
  for (let i = 0; i < all.length; i++) {
    const g = all[i]!;
    if (i === all.length - 1 && g.includes('.')) {
      if (parseIPv4(g) === undefined) return false;
      count += 2;
    } else if (/^[0-9a-fA-F]{1,4}$/.test(g)) count += 1;
    else return false;
  }
  return halves.length === 2 ? count <= 7 : count === 8;
}

export function formatIPv4(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

function maskOf(prefix: number): number {
  return prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
}

export type ParsedCidr = Cidr4 | { family: 'IPv6'; text: string };

/** Parses "a.b.c.d/n" (host bits must be clear? no: Kubernetes accepts them; we mask) or an IPv6 CIDR. */
export function parseCidr(s: string): ParsedCidr | string {
  const slash = s.indexOf('/');
  if (slash < 0) return `"${s}" is not a CIDR (missing /prefix)`;
  const addr = s.slice(0, slash);
  const pfx = s.slice(slash + 1);
  if (!/^\d{1,3}$/.test(pfx)) return `"${s}" has an invalid prefix length`;
  const prefix = Number(pfx);
  if (isIPv6(addr)) {
    if (prefix > 128) return `"${s}" has an invalid prefix length`;
    return { family: 'IPv6', text: s };
  }
  const ip = parseIPv4(addr);
  if (ip === undefined) return `"${s}" is not a valid IPv4 or IPv6 CIDR`;
  if (prefix > 32) return `"${s}" has an invalid prefix length`;
  return { family: 'IPv4', base: (ip & maskOf(prefix)) >>> 0, prefix };
}

export function formatCidr(c: Cidr4): string {
  return `${formatIPv4(c.base)}/${c.prefix}`;
}

/** True when `inner` lies within `outer`. */
export function cidrContains(outer: Cidr4, inner: Cidr4): boolean {
  return inner.prefix >= outer.prefix && ((inner.base & maskOf(outer.prefix)) >>> 0) === outer.base;
}

/**
 * ipset hash:net stores prefixes 1..32 only; /0 is written as its two /1 halves.
 */
export function hashNetEntries(c: Cidr4): string[] {
  if (c.prefix > 0) return [formatCidr(c)];
  return ['0.0.0.0/1', '128.0.0.0/1'];
}
