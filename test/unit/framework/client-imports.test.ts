/**
 * The agent process must not load @kubernetes/client-node (docs/scale.md "Agent memory": importing
 * it costs ~70 MiB of RSS). A child node process imports the agent's modules (cli/agent.ts and
 * what it loads: agent-daemon.ts, agent/once.ts) under a module-resolution hook that records every
 * resolution of '@kubernetes/client-node' and who asked for it. Type-only imports are erased and
 * never resolve; the operator path (a KubeConfig handed to framework/kube.ts) loads it on demand.
 */
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { expect } from 'chai';

const ROOT = fileURLToPath(new URL('../../../', import.meta.url));
const AGENT_MODULES = ['operator/src/cli/agent.ts', 'operator/src/cli/agent-daemon.ts', 'operator/src/agent/once.ts'];

/** Resolve hook (runs on the loader thread): report resolutions of client-node to the main thread. */
const HOOK = `
let port;
export function initialize(data) { port = data.port; }
export async function resolve(specifier, context, next) {
  if (specifier === '@kubernetes/client-node' || specifier.startsWith('@kubernetes/client-node/')) {
    port.postMessage({ specifier, parent: context.parentURL ?? '' });
  }
  return next(specifier, context);
}
`;

const child = (modules: string[]): string => `
import { register } from 'node:module';
import { MessageChannel } from 'node:worker_threads';
const { port1, port2 } = new MessageChannel();
const hits = [];
port1.on('message', (m) => hits.push(m));
register('data:text/javascript,' + encodeURIComponent(${JSON.stringify(HOOK)}), { data: { port: port2 }, transferList: [port2] });
for (const m of ${JSON.stringify(modules)}) await import(new URL(m, 'file://${ROOT}').href);
// The loader thread posts asynchronously: let its last messages arrive.
await new Promise((r) => setTimeout(r, 200));
port1.close();
process.stdout.write(JSON.stringify(hits));
`;

/** The modules (repository paths) that resolved client-node while `modules` were imported. */
function clientNodeImporters(modules: string[]): Promise<string[]> {
  return new Promise((resolve, reject) => {
    const p = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', child(modules)], { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    p.stdout.on('data', (c: Buffer) => (out += c.toString()));
    p.stderr.on('data', (c: Buffer) => (err += c.toString()));
    p.on('error', reject);
    p.on('close', (code) => {
      if (code !== 0) return reject(new Error(`importing the agent modules failed (exit ${code}):\n${err}`));
      try {
        const hits = JSON.parse(out) as { specifier: string; parent: string }[];
        resolve([...new Set(hits.map((h) => h.parent.replace(`file://${ROOT}`, '')))].sort());
      } catch (e) {
        reject(new Error(`unexpected child output: ${out}\n${err}`, { cause: e }));
      }
    });
  });
}

describe('the agent process does not load @kubernetes/client-node', function () {
  this.timeout(60_000);

  it('no module on the agent path resolves @kubernetes/client-node at runtime', async function () {
    const importers = await clientNodeImporters(AGENT_MODULES);
    expect(importers, 'modules that load @kubernetes/client-node in the agent process').to.deep.equal([]);
  });

  it('the hook sees client-node where it is loaded (the operator path)', async function () {
    // The method works: a module known to import client-node is reported.
    expect(await clientNodeImporters(['operator/src/framework/kube-node.ts'])).to.deep.equal(['operator/src/framework/kube-node.ts']);
  });
});
