/**
 * End-to-end plumbing: a real control plane (controlplane.ts), nodes and pods as network
 * namespaces (test/kernel/harness), the operator and agents as real processes of the built CLI.
 * The test plays the kubelet: it creates each pod's network namespace, then the Pod object, then
 * writes status.podIP / phase through the status subresource.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ControlPlane } from './controlplane.js';

export const REPO = fileURLToPath(new URL('../../', import.meta.url));
export const CLI = join(REPO, 'dist/operator/src/cli/main.js');

export interface Proc {
  name: string;
  child: ChildProcess;
  log: string;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

/** Starts `kube-npm ARGS` as a process, output to DIR/NAME.log. */
export function startCli(cp: ControlPlane, name: string, args: string[]): Proc {
  const log = join(cp.dir, `${name}.log`);
  const out = createWriteStream(log, { flags: 'a' });
  const child = spawn(process.execPath, [CLI, ...args, '--kubeconfig', cp.kubeconfigPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  child.stdout!.pipe(out);
  child.stderr!.pipe(out);
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return {
    name,
    child,
    log,
    async stop(signal: NodeJS.Signals = 'SIGTERM') {
      if (child.exitCode !== null || child.signalCode !== null) return child.exitCode;
      child.kill(signal);
      const t = setTimeout(() => child.kill('SIGKILL'), 10_000);
      const code = await exited;
      clearTimeout(t);
      return code;
    },
  };
}

export async function kubectlOk(cp: ControlPlane, args: string[], input?: string): Promise<string> {
  const r = await cp.kubectl(args, input !== undefined ? { input } : {});
  if (r.code !== 0) throw new Error(`kubectl ${args.join(' ')} failed (${r.code}): ${r.stderr}`);
  return r.stdout;
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 30_000, everyMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
}

/** Pod manifest of the upstream model: one container per served port/protocol, named ports. */
export function podManifest(ns: string, name: string, node: string, labels: Record<string, string>): object {
  return {
    apiVersion: 'v1',
    kind: 'Pod',
    metadata: { name, namespace: ns, labels },
    spec: {
      nodeName: node,
      containers: [80, 81].flatMap((port) =>
        ['TCP', 'UDP'].map((protocol) => ({
          name: `cont-${port}-${protocol.toLowerCase()}`,
          image: 'registry.k8s.io/pause:3.10',
          ports: [{ containerPort: port, protocol, name: `serve-${port}-${protocol.toLowerCase()}` }],
        })),
      ),
    },
  };
}

/** The kubelet's part: mark the pod running with its IP (status subresource). */
export async function setPodRunning(cp: ControlPlane, ns: string, name: string, ip: string): Promise<void> {
  const status = { status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [{ type: 'Ready', status: 'True' }] } };
  await kubectlOk(cp, ['-n', ns, 'patch', 'pod', name, '--subresource=status', '--type=merge', '-p', JSON.stringify(status)]);
}
