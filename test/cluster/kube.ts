/**
 * Access to the real local cluster of hack/cluster (docs/adr/0012-real-cluster.md) from a test
 * process in the host's root network namespace. Nothing here opens a socket: the API server lives
 * in the control-plane namespace, so kubectl runs there (hack/cluster/kubectl.sh), and anything that
 * must reach a Service or a pod runs inside a node's network namespace (nsenter --net).
 */
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { REPO } from '../support/e2e.js';

export const CLUSTER_DIR = process.env.CLUSTER_DIR ?? '/tmp/kube-npm-cluster';
export const NODES = ['kc-n1', 'kc-n2'] as const;
export type NodeName = (typeof NODES)[number];

export interface Result {
  code: number;
  stdout: string;
  stderr: string;
}

export function run(cmd: string, args: string[], input?: string, timeoutMs = 120_000): Promise<Result> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { env: { ...process.env, CLUSTER_DIR }, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    const timer = setTimeout(() => p.kill('SIGKILL'), timeoutMs);
    p.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    p.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    p.on('error', reject);
    p.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code: code ?? (signal ? 128 : 1), stdout, stderr });
    });
    p.stdin.end(input ?? '');
  });
}

export function kubectl(args: string[], input?: string, timeoutMs?: number): Promise<Result> {
  return run('bash', [join(REPO, 'hack/cluster/kubectl.sh'), ...args], input, timeoutMs);
}

/** kubectl that must succeed; the error names the command and carries its stderr. */
export async function kubectlOk(args: string[], input?: string, timeoutMs?: number): Promise<string> {
  const r = await kubectl(args, input, timeoutMs);
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} exited ${r.code}: ${r.stderr.trim() || r.stdout.trim()}`);
  return r.stdout;
}

export async function getJson<T>(args: string[]): Promise<T> {
  return JSON.parse(await kubectlOk([...args, '-o', 'json'])) as T;
}

/** A command inside a node's network namespace (only its network: cgroups and mounts stay the host's). */
export function inNode(node: NodeName, cmd: string, args: string[], input?: string): Promise<Result> {
  return run('nsenter', [`--net=/var/run/netns/${node}`, cmd, ...args], input);
}
