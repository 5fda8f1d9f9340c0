/**
 * `kube-npm agent --once` input that must never weaken the kernel (issue #9 items 2 and 3), on a
 * real kernel: one node namespace made by the harness, with three pods.
 *
 *   pod   labels   policy x/iso (isolates x/a for ingress)
 *   x/a   app=a    guarded
 *   y/b   role=b   allowed to x/a (peer set: role=b in any namespace)
 *   y/c            not allowed
 *
 * A good file is applied first; then each bad file (the translate input, an empty file, a foreign
 * object, a duplicate, unparseable text, a ruleset whose target set has no NpmIPSet) must exit 2
 * and leave `iptables-save` and `ipset save` byte-identical (counters and comments aside), and the
 * verdicts unchanged. A file whose *peer* set has no NpmIPSet is applied fail closed: x/a stays
 * isolated, only the allow from y/b goes. Cleanup: the cluster's namespaces are deleted in `after`.
 */
import { expect } from 'chai';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { binaries, detectBackend, type Backend, type BackendChoice } from '../../operator/src/agent/backend.js';
import { Converger } from '../../operator/src/agent/converge.js';
import { realExec } from '../../operator/src/agent/exec.js';
import { cleanupDesired } from '../../operator/src/agent/model.js';
import { runOnce } from '../../operator/src/agent/once.js';
import type { NpmIPSet, NpmRuleSet } from '../../operator/src/api/types.js';
import { translate } from '../../operator/src/translate/engine.js';
import type { ClusterSnapshot } from '../../operator/src/translate/k8s.js';
import { createCluster, type Cluster } from './harness/cluster.js';

const isRoot = process.getuid?.() === 0;
const backendChoice = (process.env.KNPM_BACKEND ?? 'auto') as BackendChoice;
const repo = fileURLToPath(new URL('../../', import.meta.url));
const A = 'x/a';
const B = 'y/b';
const C = 'y/c';

const cluster0: ClusterSnapshot = {
  namespaces: [{ metadata: { name: 'x' } }, { metadata: { name: 'y' } }],
  pods: [
    { metadata: { name: 'a', namespace: 'x', labels: { app: 'a' } }, spec: { nodeName: 'n1' }, status: { phase: 'Running', podIP: '10.244.1.10' } },
    { metadata: { name: 'b', namespace: 'y', labels: { role: 'b' } }, spec: { nodeName: 'n1' }, status: { phase: 'Running', podIP: '10.244.1.11' } },
    { metadata: { name: 'c', namespace: 'y' }, spec: { nodeName: 'n1' }, status: { phase: 'Running', podIP: '10.244.1.12' } },
  ],
  policies: [
    {
      metadata: { name: 'iso', namespace: 'x' },
      spec: { podSelector: { matchLabels: { app: 'a' } }, policyTypes: ['Ingress'], ingress: [{ from: [{ namespaceSelector: {}, podSelector: { matchLabels: { role: 'b' } } }] }] },
    },
  ],
};
const good = translate(cluster0).items;
const ruleset = good.find((o): o is NpmRuleSet => o.kind === 'NpmRuleSet')!;
const targetSet = ruleset.spec.chains[0]!.targetSet;
const peerSet = ruleset.spec.chains[0]!.rules[0]!.match.peerSet!;
const withoutSet = (name: string) => good.filter((o) => !(o.kind === 'NpmIPSet' && (o as NpmIPSet).spec.setName === name));
const list = (items: unknown[]) => JSON.stringify({ apiVersion: 'v1', kind: 'List', items }, null, 2);

describe('agent --once: bad input leaves the real kernel untouched (#9 items 2, 3)', function () {
  this.timeout(120_000);
  let cluster: Cluster | undefined;
  let backend: Backend = 'nft';
  let dir = '';

  const exec = () => realExec({ netns: cluster!.nodeNs(1) });
  /** The node's kernel state: iptables (filter) and ipsets, without packet counters. */
  const kernelState = async (): Promise<string> => {
    const ipt = (await cluster!.exec(cluster!.nodeNs(1), [binaries(backend).save, '-t', 'filter'])).stdout;
    const sets = (await cluster!.exec(cluster!.nodeNs(1), ['ipset', 'save'])).stdout;
    return `${ipt.split('\n').filter((l) => !l.startsWith('#')).map((l) => l.replace(/\[\d+:\d+\]/g, '')).join('\n')}\n${sets}`;
  };
  const file = (name: string, text: string): string => {
    const f = join(dir, name);
    writeFileSync(f, text);
    return f;
  };
  const verdicts = async () => ({ b: await cluster!.probe(B, A, 80, 'TCP', 800), c: await cluster!.probe(C, A, 80, 'TCP', 800) });

  before(async function () {
    if (!isRoot) {
      console.warn('      !!! SKIPPED: --once input tests need root (network namespaces, iptables)');
      this.skip();
    }
    dir = mkdtempSync(join(tmpdir(), 'knpm-once-input-'));
    cluster = await createCluster({
      nodes: 1,
      pods: [
        { name: A, node: 1, ip: '10.244.1.10' },
        { name: B, node: 1, ip: '10.244.1.11' },
        { name: C, node: 1, ip: '10.244.1.12' },
      ],
      defaultTimeoutMs: 800,
    });
    backend = await detectBackend(exec(), backendChoice);
  });

  after(async () => {
    if (dir) rmSync(dir, { recursive: true, force: true });
    if (!cluster) return;
    try {
      await new Converger({ exec: exec(), backend, retry: { attempts: 1 } }).sync(cleanupDesired());
    } finally {
      await cluster.destroy();
    }
  });

  it('a good file isolates x/a except from y/b', async () => {
    const r = await runOnce({ file: file('good.json', list(good)), nodeName: 'n1', backend, exec: exec() });
    expect(r.exitCode, r.summary).to.equal(0);
    expect(await verdicts()).to.deep.equal({ b: true, c: false });
  });

  const bad: [string, () => string][] = [
    ['the translate input (no NpmRuleSet)', () => list([...cluster0.namespaces.map((n) => ({ apiVersion: 'v1', kind: 'Namespace', ...n })), ...cluster0.policies.map((p) => ({ apiVersion: 'networking.k8s.io/v1', kind: 'NetworkPolicy', ...p }))])],
    ['an empty file', () => ''],
    ['a foreign object among the good ones', () => list([...good, { apiVersion: 'v1', kind: 'ConfigMap', metadata: { name: 'c', namespace: 'x' } }])],
    ['a duplicate NpmRuleSet', () => list([...good, ruleset])],
    ['unparseable text', () => `${list(good).slice(0, 200)}\n`],
    ['a ruleset whose target set has no NpmIPSet', () => list(withoutSet(targetSet))],
  ];
  for (const [name, text] of bad) {
    it(`${name}: exit 2, iptables-save and ipset save byte-identical`, async () => {
      const before = await kernelState();
      const r = await runOnce({ file: file(`${name.replace(/\W+/g, '-')}.json`, text()), nodeName: 'n1', backend, exec: exec() });
      expect(r.exitCode, r.summary).to.equal(2);
      expect(r.summary).to.contain('nothing written');
      expect(await kernelState()).to.equal(before);
    });
  }

  it('after all of them x/a is as protected as before (verdicts)', async () => {
    expect(await verdicts()).to.deep.equal({ b: true, c: false });
  });

  it('the CLI: exit 2 on an empty file, nothing on stdout; --allow-empty converges to no policy', async () => {
    const empty = file('empty.yaml', '');
    const before = await kernelState();
    const cli = (extra: string[]) =>
      spawnSync('ip', ['netns', 'exec', cluster!.nodeNs(1), process.execPath, '--import', 'tsx', 'operator/src/cli/main.ts', 'agent', '--once', '--node-name', 'n1', '--backend', backend, '-f', empty, ...extra], { cwd: repo, encoding: 'utf8' });
    const refused = cli([]);
    expect(refused.status, refused.stderr).to.equal(2);
    expect(refused.stdout).to.equal('');
    expect(refused.stderr).to.contain(empty).and.contain('--allow-empty');
    expect(await kernelState()).to.equal(before);
    const allowed = cli(['--allow-empty']);
    expect(allowed.status, allowed.stderr).to.equal(0);
    expect(await verdicts()).to.deep.equal({ b: true, c: true });
  });

  it('a peer set without its NpmIPSet: x/a stays isolated, only the allow from y/b goes (exit 1, named)', async () => {
    const r = await runOnce({ file: file('no-peer.json', list(withoutSet(peerSet))), nodeName: 'n1', backend, exec: exec() });
    expect(r.exitCode, r.summary).to.equal(1);
    expect(r.summary).to.contain(peerSet);
    expect(await verdicts()).to.deep.equal({ b: false, c: false });
    const again = await runOnce({ file: file('good-again.json', list(good)), nodeName: 'n1', backend, exec: exec() });
    expect(again.exitCode, again.summary).to.equal(0);
    expect(await verdicts()).to.deep.equal({ b: true, c: false });
  });
});
