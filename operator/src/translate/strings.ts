/**
 * Memory shape of long-lived strings and arrays. V8 builds `a + b` and template literals as
 * "cons" strings, a tree of 32-byte nodes over the parts; reading a character flattens the tree
 * into one sequential string, and the garbage collector then drops the nodes. An array grown by
 * push() keeps spare capacity (17 slots for one element). The engine keeps, per policy, dozens
 * of both (rule descriptions, chain names, lists of rules), so at 10k policies this is about a
 * third of its heap. Pure: these return equal values.
 */

/** The same string, flattened (see above). */
export function flat(s: string): string {
  s.charCodeAt(0);
  return s;
}

/** A copy of an array built by push(), without spare capacity. */
export function trimmed<T>(xs: T[]): T[] {
  return xs.slice();
}
