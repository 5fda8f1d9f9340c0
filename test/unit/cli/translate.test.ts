// The translate command as a user runs it: the built binary through npx, exit codes, stdout/stderr.
import { expect } from 'chai';
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { parse } from 'yaml';

const repo = fileURLToPath(new URL('../../../', import.meta.url));
const input = join(repo, 'test/fixtures/golden/web-app/input.yaml');

function kubeNpm(args: string[]) {
  return spawnSync('npx', ['--no-install', 'kube-npm', ...args], { cwd: repo, encoding: 'utf8' });
}

describe('kube-npm translate (built binary)', function () {
  this.timeout(60000);
  /** Temp dirs of the input files the tests write; removed after the suite. */
  const dirs: string[] = [];
  const tempDir = (): string => {
    const d = mkdtempSync(join(tmpdir(), 'knpm-cli-'));
    dirs.push(d);
    return d;
  };
  before(function () {
    // The test command builds first; build here too when the file runs alone.
    execFileSync('npm', ['run', '--silent', 'build'], { cwd: repo, stdio: 'ignore' });
  });
  after(() => {
    for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
  });

  it('writes a v1 List of NpmIPSets then NpmRuleSets, byte-identical across runs, warning on other kinds', () => {
    const a = kubeNpm(['translate', '-f', input]);
    const b = kubeNpm(['translate', '-f', input]);
    expect(a.status, a.stderr).to.equal(0);
    expect(a.stdout).to.equal(b.stdout);
    expect(a.stderr).to.contain('ignoring Service prod/web');
    const list = parse(a.stdout) as { apiVersion: string; kind: string; items: { kind: string; metadata: { ownerReferences?: unknown[] } }[] };
    expect(list.apiVersion).to.equal('v1');
    expect(list.kind).to.equal('List');
    const kinds = list.items.map((i) => i.kind);
    expect(kinds.lastIndexOf('NpmIPSet')).to.be.lessThan(kinds.indexOf('NpmRuleSet'));
    expect(kinds.filter((k) => k === 'NpmRuleSet')).to.have.length(3);
    expect(list.items.every((i) => !('status' in i))).to.equal(true);
  });

  it('-o json gives the same objects as yaml', () => {
    const y = parse(kubeNpm(['translate', '-f', input]).stdout);
    const j = JSON.parse(kubeNpm(['translate', '-f', input, '-o', 'json']).stdout);
    expect(j).to.deep.equal(y);
  });

  it('reads JSON Lists and several files', () => {
    const dir = tempDir();
    const ns = join(dir, 'ns.json');
    const np = join(dir, 'np.yaml');
    writeFileSync(ns, JSON.stringify({ apiVersion: 'v1', kind: 'List', items: [{ apiVersion: 'v1', kind: 'Namespace', metadata: { name: 'a' } }] }));
    writeFileSync(np, 'apiVersion: networking.k8s.io/v1\nkind: NetworkPolicy\nmetadata: {name: deny, namespace: a}\nspec: {podSelector: {}}\n');
    const r = kubeNpm(['translate', '-f', ns, '-f', np, '-o', 'json']);
    expect(r.status, r.stderr).to.equal(0);
    const items = JSON.parse(r.stdout).items as { kind: string; metadata: { name: string } }[];
    expect(items.map((i) => i.kind)).to.deep.equal(['NpmIPSet', 'NpmRuleSet']);
  });

  it('invalid input: exit 2, names file, object and field, nothing on stdout', () => {
    const dir = tempDir();
    const bad = join(dir, 'bad.yaml');
    writeFileSync(
      bad,
      [
        'apiVersion: networking.k8s.io/v1',
        'kind: NetworkPolicy',
        'metadata: {name: broken, namespace: prod}',
        'spec:',
        '  podSelector: {}',
        '  ingress:',
        '  - from: [{ipBlock: {cidr: 10.0.0.0/33}}]',
        '    ports: [{port: 80, endPort: 70}]',
      ].join('\n'),
    );
    const r = kubeNpm(['translate', '-f', bad]);
    expect(r.status).to.equal(2);
    expect(r.stdout).to.equal('');
    expect(r.stderr).to.contain(`${bad}: NetworkPolicy prod/broken: spec.ingress[0].from[0].ipBlock.cidr`);
    expect(r.stderr).to.contain('spec.ingress[0].ports[0].endPort');
  });

  it('unreadable file and broken YAML: exit 2 with the file name', () => {
    expect(kubeNpm(['translate', '-f', '/nonexistent.yaml']).stderr).to.contain('/nonexistent.yaml: cannot read');
    const dir = tempDir();
    const bad = join(dir, 'broken.yaml');
    writeFileSync(bad, 'kind: [unclosed\n');
    const r = kubeNpm(['translate', '-f', bad]);
    expect(r.status).to.equal(2);
    expect(r.stderr).to.contain(`${bad}: document 1`);
  });

  it('debug trace explains a verdict from the same input', () => {
    const denied = kubeNpm(['debug', 'trace', '-f', input, '--from', 'frontend/lb', '--to', 'prod/db-0', '--port', '5432']);
    expect(denied.status).to.equal(1);
    expect(denied.stdout).to.contain('DENIED');
    expect(denied.stdout).to.contain('isolated by prod/db');
    // Pods are named as they were given, with their address.
    expect(denied.stdout).to.match(/^frontend\/lb \(10\.\d+\.\d+\.\d+\) -> prod\/db-0 \(10\.\d+\.\d+\.\d+\) TCP\/5432: DENIED/);
    const allowed = kubeNpm(['debug', 'trace', '-f', input, '--from', 'prod/web-1', '--to', 'prod/db-0', '--port', '5432']);
    expect(allowed.status, allowed.stdout + allowed.stderr).to.equal(0);
    expect(allowed.stdout).to.contain('allowed by prod/web rule 0');
  });
});
