/**
 * bench:scale: the memory of one real agent process. The simulated agents share processes and a
 * fake kernel, so their RSS says little about the product. Here `kube-npm agent` (the built
 * dist/, what the image runs) programs node-0's kernel state into a network namespace this bench
 * creates (real ipset and iptables there; nothing in the root namespace), against the bench's API
 * server, after the simulated node-0 agent was stopped. Measured once its first sync is logged
 * and it has been quiet for `settleMs`: VmRSS and VmHWM from /proc. Needs root (netns, kernel);
 * the namespace is deleted afterwards, and the agent's kernel state with it. `nodeFlags` and `env`
 * (e.g. MALLOC_ARENA_MAX) run it as a manifest does (scale.bench.ts shippedRuntime).
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { procStat } from './proc.js';

export interface RealAgentMemory {
  rssMiB: number;
  hwmMiB: number;
  /** The agent's "synced" log line (rulesets, lines written). */
  synced: string;
  nodeFlags: string[];
}

export function canRunRealAgent(repo: string): string | undefined {
  if (process.getuid?.() !== 0) return 'not root (a network namespace and the kernel tools need it)';
  if (!existsSync(join(repo, 'dist/operator/src/cli/main.js'))) return 'no dist/ (npm run build)';
  for (const tool of ['ip', 'ipset', 'iptables-restore']) if (spawnSync('sh', ['-c', `command -v ${tool}`]).status !== 0) return `${tool} not installed`;
  return undefined;
}

export async function measureRealAgent(o: { repo: string; kubeconfig: string; node: string; nodeFlags?: string[]; env?: Record<string, string>; settleMs?: number; timeoutMs?: number; log: (s: string) => void }): Promise<RealAgentMemory> {
  const netns = `knpm-bench-${process.pid}`;
  const ip = (...a: string[]) => {
    const r = spawnSync('ip', a, { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`ip ${a.join(' ')}: ${r.stderr.trim()}`);
  };
  ip('netns', 'add', netns);
  const nodeFlags = o.nodeFlags ?? [];
  const child = spawn(process.execPath, [...nodeFlags, join(o.repo, 'dist/operator/src/cli/main.js'), 'agent', '--node-name', o.node, '--kubeconfig', o.kubeconfig, '--netns', netns,
    '--metrics-secure=false', '--metrics-bind-address', '127.0.0.1:0', '--pod-startup', 'open', '--lease-namespace', 'kube-system'], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...o.env } });
  let out = '';
  let lastLine = Date.now();
  let synced = '';
  const onData = (b: Buffer) => {
    out += b.toString();
    lastLine = Date.now();
    const m = /synced \(full\)[^\n]*/.exec(out);
    if (m && !synced) synced = m[0];
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  try {
    const end = Date.now() + (o.timeoutMs ?? 180_000);
    const settle = o.settleMs ?? 5000;
    while (!(synced && Date.now() - lastLine >= settle)) {
      if (child.exitCode !== null) throw new Error(`the agent exited with ${child.exitCode}: ${out.slice(-2000)}`);
      if (Date.now() > end) throw new Error(`the agent did not sync within ${o.timeoutMs ?? 180_000} ms: ${out.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 250));
    }
    const m = procStat(child.pid!);
    o.log(`real agent (${netns}): ${synced}; RSS ${m.rssMiB.toFixed(1)} MiB, peak ${m.hwmMiB.toFixed(1)} MiB${nodeFlags.length || o.env ? ` with ${[...Object.entries(o.env ?? {}).map(([k, v]) => `${k}=${v}`), ...nodeFlags].join(' ')}` : ''}`);
    return { rssMiB: m.rssMiB, hwmMiB: m.hwmMiB, synced, nodeFlags };
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => (child.exitCode !== null ? r(undefined) : child.once('exit', r)));
    spawnSync('ip', ['netns', 'delete', netns]);
  }
}
