/**
 * One line of text for an error and its `cause` chain: "sync failed after 5 attempt(s): ipset
 * restore (phase 2) failed with exit 1: ipset v7.19: Error in line 3: ..." instead of only the
 * outermost wrapper, so a status field or a log line names the failing command and the kernel
 * tool's own message. A cause whose first line its wrapper already quotes is not repeated; at most
 * `depth` levels (a cyclic chain cannot loop). For API server errors use formatError (kube.ts): it
 * reduces an ApiException's body to the Status reason and message and walks causes too.
 */
export function errorChain(e: unknown, depth = 5): string {
  const parts: string[] = [];
  for (let x: unknown = e, i = 0; x !== undefined && x !== null && i < depth; x = x instanceof Error ? x.cause : undefined, i++) {
    const m = x instanceof Error ? x.message : String(x);
    const head = m.split('\n')[0]!;
    if (!parts.some((p) => p.includes(head))) parts.push(m);
  }
  return parts.join(': ');
}
