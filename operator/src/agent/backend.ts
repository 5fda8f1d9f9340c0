/**
 * Which iptables family to drive: nft or legacy. Both can be installed and both can hold rules, but
 * the kernel evaluates both, and a node's other components (kube-proxy, the CNI) use one of them:
 * we must use the same one, or our FORWARD hook runs in a different order than theirs.
 *
 * Auto-detection follows kube-proxy's iptables-wrapper: (1) the family whose mangle table holds
 * KUBE-IPTABLES-HINT or KUBE-KUBELET-CANARY (written by kubelet/kube-proxy) wins; (2) else the
 * family with more rules; (3) else nft if it works; (4) else legacy if it works; else an error.
 */
import type { Exec } from './exec.js';

export type Backend = 'nft' | 'legacy';
export type BackendChoice = Backend | 'auto';

export interface Binaries {
  backend: Backend;
  iptables: string;
  save: string;
  restore: string;
}

export function binaries(backend: Backend): Binaries {
  return {
    backend,
    iptables: `iptables-${backend}`,
    save: `iptables-${backend}-save`,
    restore: `iptables-${backend}-restore`,
  };
}

function ruleLines(text: string): number {
  let n = 0;
  for (const line of text.split('\n')) if (line.startsWith('-')) n++;
  return n;
}

export async function detectBackend(exec: Exec, choice: BackendChoice = 'auto', log: (s: string) => void = () => undefined): Promise<Backend> {
  if (choice !== 'auto') return choice;
  const probe = async (b: Backend): Promise<{ ok: boolean; hint: boolean; rules: number; why: string }> => {
    const { save } = binaries(b);
    try {
      const mangle = await exec([save, '-t', 'mangle']);
      const all = await exec([save]);
      if (mangle.code !== 0 && all.code !== 0) return { ok: false, hint: false, rules: 0, why: (all.stderr || mangle.stderr).trim() };
      const hint = /KUBE-IPTABLES-HINT|KUBE-KUBELET-CANARY/.test(mangle.stdout);
      return { ok: all.code === 0, hint, rules: ruleLines(all.stdout), why: all.stderr.trim() };
    } catch (e) {
      return { ok: false, hint: false, rules: 0, why: e instanceof Error ? e.message : String(e) };
    }
  };
  const [nft, legacy] = [await probe('nft'), await probe('legacy')];
  let chosen: Backend;
  let reason: string;
  if (legacy.hint && !nft.hint) [chosen, reason] = ['legacy', 'kubelet/kube-proxy hint chains in legacy mangle'];
  else if (nft.hint && !legacy.hint) [chosen, reason] = ['nft', 'kubelet/kube-proxy hint chains in nft mangle'];
  else if (legacy.ok && legacy.rules > nft.rules) [chosen, reason] = ['legacy', `legacy has more rules (${legacy.rules} > ${nft.rules})`];
  else if (nft.ok) [chosen, reason] = ['nft', nft.rules > 0 ? `nft has ${nft.rules} rules` : 'no rules anywhere, nft works'];
  else if (legacy.ok) [chosen, reason] = ['legacy', 'nft does not work'];
  else throw new Error(`no usable iptables backend: nft: ${nft.why || 'failed'}; legacy: ${legacy.why || 'failed'}`);
  log(`backend ${chosen}: ${reason}`);
  return chosen;
}
