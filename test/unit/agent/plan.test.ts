/** Pure render/plan tests: tables of named cases, and golden restore text (UPDATE_GOLDEN=1 regenerates). */
import { expect } from 'chai';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { HOOK_COMMENT, tempSetName } from '../../../operator/src/api/names.js';
import type { Rule } from '../../../operator/src/api/types.js';
import { parseIptablesSave, tokenize } from '../../../operator/src/agent/iptables/parse.js';
import { planIptables, sameChain } from '../../../operator/src/agent/iptables/plan.js';
import { HOOK_RULE, allowReturnFor, formatArgs, quoteArg, renderRule } from '../../../operator/src/agent/iptables/render.js';
import { parseIpsetSave } from '../../../operator/src/agent/ipset/parse.js';
import { planIpsets, type DesiredSet } from '../../../operator/src/agent/ipset/plan.js';
import { normalizeMember, requiredMaxelem } from '../../../operator/src/agent/ipset/render.js';
import { buildDesired } from '../../../operator/src/agent/model.js';
import { detectDrift, planIsEmpty, planSync, planText, appliedState, unswappableSets, viaTempNames, type ActualState } from '../../../operator/src/agent/plan.js';
import { objects } from './fixtures.js';

const GOLDEN = join(dirname(fileURLToPath(import.meta.url)), '../../fixtures/agent');

function empty(): ActualState {
  return { sets: new Map(), iptables: { chains: new Map(), hook: { copies: [], first: '' } } };
}

function golden(name: string, actual: string): void {
  const file = join(GOLDEN, `${name}.txt`);
  if (process.env.UPDATE_GOLDEN === '1' || !existsSync(file)) {
    if (process.env.UPDATE_GOLDEN !== '1' && process.env.CI) throw new Error(`golden file ${file} missing (run with UPDATE_GOLDEN=1)`);
    mkdirSync(GOLDEN, { recursive: true });
    writeFileSync(file, actual);
    return;
  }
  const want = readFileSync(file, 'utf8');
  if (want !== actual) {
    const a = actual.split('\n');
    const w = want.split('\n');
    const i = a.findIndex((l, k) => l !== w[k]);
    throw new Error(`golden ${name}: first difference at line ${i + 1}:\n  want: ${w[i]}\n  got:  ${a[i]}\n(UPDATE_GOLDEN=1 to accept)`);
  }
}

describe('agent render', () => {
  const cases: { name: string; dir: 'Ingress' | 'Egress'; rule: Rule; want: string }[] = [
    { name: 'any peer any port', dir: 'Ingress', rule: { description: 'all', match: {} }, want: '-m comment --comment all -j KNPM-ALLOW' },
    { name: 'ingress peer + tcp port', dir: 'Ingress', rule: { description: 'web 80', match: { peerSet: 'KNPM-S-A', protocol: 'TCP', port: 80 } }, want: '-p tcp -m set --match-set KNPM-S-A src -m tcp --dport 80 -m comment --comment "web 80" -j KNPM-ALLOW' },
    { name: 'egress peer is dst', dir: 'Egress', rule: { description: 'x', match: { peerSet: 'KNPM-S-A', protocol: 'UDP' } }, want: '-p udp -m set --match-set KNPM-S-A dst -m comment --comment x -j KNPM-ALLOW' },
    { name: 'port range', dir: 'Ingress', rule: { description: 'r', match: { protocol: 'SCTP', port: 5000, endPort: 5010 } }, want: '-p sctp -m sctp --dport 5000:5010 -m comment --comment r -j KNPM-ALLOW' },
    { name: 'endPort equal to port', dir: 'Ingress', rule: { description: 'r', match: { protocol: 'TCP', port: 53, endPort: 53 } }, want: '-p tcp -m tcp --dport 53 -m comment --comment r -j KNPM-ALLOW' },
    { name: 'named port', dir: 'Ingress', rule: { description: 'n', match: { peerSet: 'KNPM-S-A', protocol: 'TCP', namedPortSet: 'KNPM-P-B' } }, want: '-p tcp -m set --match-set KNPM-S-A src -m set --match-set KNPM-P-B dst,dst -m comment --comment n -j KNPM-ALLOW' },
    { name: 'quotes and backslashes escaped', dir: 'Ingress', rule: { description: 'a "b" c\\d\'e', match: {} }, want: `-m comment --comment "a \\'b\\' c\\\\d\\'e" -j KNPM-ALLOW` },
  ];
  for (const c of cases) {
    it(c.name, () => {
      expect(renderRule(c.dir, c.rule)).to.equal(c.want);
      // Round trip through the save-line tokenizer gives the same canonical text.
      expect(formatArgs(tokenize(c.want))).to.equal(c.want);
    });
  }
  it('rejects a port without protocol and a bad range (the rule is left out: fail closed)', () => {
    expect(renderRule('Ingress', { description: '', match: { port: 80 } })).to.deep.equal({ error: 'a port needs a protocol' });
    expect(renderRule('Ingress', { description: '', match: { protocol: 'TCP', port: 90, endPort: 80 } })).to.have.property('error');
  });
  it('quotes like iptables-save', () => {
    expect(quoteArg('plain_word-1')).to.equal('plain_word-1');
    expect(quoteArg('two words')).to.equal('"two words"');
    expect(quoteArg('')).to.equal('""');
    expect(tokenize('-A X -m comment --comment "it\\\'s a \\"q\\" back\\\\slash" -j RETURN')).to.deep.equal(['-A', 'X', '-m', 'comment', '--comment', 'it\'s a "q" back\\slash', '-j', 'RETURN']);
  });
  it('hook rule', () => {
    expect(HOOK_RULE).to.equal(`-m comment --comment "${HOOK_COMMENT}" -j KNPM-FORWARD`);
  });
});

describe('agent ipset members', () => {
  const cases: [string, Parameters<typeof normalizeMember>[0], string, string | null][] = [
    ['hash:ip plain', 'hash:ip', '10.244.1.10', '10.244.1.10'],
    ['hash:ip rejects cidr', 'hash:ip', '10.0.0.0/8', null],
    ['hash:net /32 printed bare', 'hash:net', '10.0.0.1/32', '10.0.0.1'],
    ['hash:net host bits cleared', 'hash:net', '10.0.5.7/24', '10.0.5.0/24'],
    ['hash:net nomatch kept', 'hash:net', '10.0.5.0/24 nomatch', '10.0.5.0/24 nomatch'],
    ['hash:net /0 refused', 'hash:net', '0.0.0.0/0', null],
    ['ip,port default tcp', 'hash:ip,port', '10.0.0.1,80', '10.0.0.1,tcp:80'],
    ['ip,port lower-cases', 'hash:ip,port', '10.0.0.1,UDP:53', '10.0.0.1,udp:53'],
    ['ip,port bad proto', 'hash:ip,port', '10.0.0.1,icmp:0', null],
  ];
  for (const [name, type, raw, want] of cases) {
    it(name, () => {
      const r = normalizeMember(type, raw);
      if (want === null) expect(r).to.have.property('error');
      else expect(r).to.deep.equal({ member: want });
    });
  }
  it('maxelem has headroom and a floor, deterministically', () => {
    expect(requiredMaxelem(0)).to.equal(65536);
    expect(requiredMaxelem(32768)).to.equal(65536);
    expect(requiredMaxelem(32769)).to.equal(131072);
  });
});

function dset(name: string, type: DesiredSet['type'], members: string[]): DesiredSet {
  return { name, type, meaning: name, members: new Map(members.map((m) => [m.replace(/ nomatch$/, ''), m])) };
}

describe('agent ipset plan', () => {
  const save = (s: string): ReturnType<typeof parseIpsetSave> => parseIpsetSave(s);
  it('creates and fills a new set', () => {
    const p = planIpsets(new Map([['KNPM-S-A', dset('KNPM-S-A', 'hash:ip', ['10.0.0.1', '10.0.0.2'])]]), new Map());
    expect(p.apply).to.deep.equal(['create KNPM-S-A hash:ip family inet hashsize 1024 maxelem 65536', 'add KNPM-S-A 10.0.0.1', 'add KNPM-S-A 10.0.0.2']);
    expect(p.destroy).to.deep.equal([]);
  });
  it('writes a delta: additions before removals, across sets', () => {
    const actual = save('create KNPM-S-A hash:ip family inet hashsize 1024 maxelem 65536\nadd KNPM-S-A 10.0.0.1\nadd KNPM-S-A 10.0.0.9\ncreate KNPM-S-B hash:ip family inet hashsize 1024 maxelem 65536\nadd KNPM-S-B 10.0.1.1\n');
    const p = planIpsets(new Map([['KNPM-S-A', dset('KNPM-S-A', 'hash:ip', ['10.0.0.1', '10.0.0.2'])], ['KNPM-S-B', dset('KNPM-S-B', 'hash:ip', ['10.0.1.2'])]]), actual);
    expect(p.apply).to.deep.equal(['add -exist KNPM-S-A 10.0.0.2', 'add -exist KNPM-S-B 10.0.1.2', 'del -exist KNPM-S-A 10.0.0.9', 'del -exist KNPM-S-B 10.0.1.1']);
  });
  it('a nomatch flag change is one add, never a del', () => {
    const actual = save('create KNPM-N-A hash:net family inet hashsize 1024 maxelem 65536\nadd KNPM-N-A 10.0.5.0/24\n');
    const p = planIpsets(new Map([['KNPM-N-A', dset('KNPM-N-A', 'hash:net', ['10.0.5.0/24 nomatch'])]]), actual);
    expect(p.apply).to.deep.equal(['add -exist KNPM-N-A 10.0.5.0/24 nomatch']);
  });
  it('rebuilds under the temp name and swaps when maxelem is too small or a semantic option is set', () => {
    const actual = save('create KNPM-S-A hash:ip family inet hashsize 1024 maxelem 4\nadd KNPM-S-A 10.0.0.1\n');
    const tmp = tempSetName('KNPM-S-A');
    const p = planIpsets(new Map([['KNPM-S-A', dset('KNPM-S-A', 'hash:ip', ['10.0.0.1'])]]), actual);
    expect(p.apply).to.deep.equal([`create ${tmp} hash:ip family inet hashsize 1024 maxelem 65536`, `add ${tmp} 10.0.0.1`, `swap ${tmp} KNPM-S-A`, `destroy ${tmp}`]);
    const leftover = save(`create KNPM-S-A hash:ip family inet hashsize 1024 maxelem 65536 timeout 0 bucketsize 12 initval 0x777c8510\ncreate ${tmp} hash:ip family inet hashsize 1024 maxelem 65536\n`);
    const p2 = planIpsets(new Map([['KNPM-S-A', dset('KNPM-S-A', 'hash:ip', [])]]), leftover);
    expect(p2.rebuilt).to.deep.equal(['KNPM-S-A']);
    expect(p2.apply[0]).to.equal(`destroy ${tmp}`);
    expect(p2.destroy).to.deep.equal([]);
  });
  it('parses every header option the kernel prints; only semantic ones make a set different', () => {
    const a = save([
      'create KNPM-S-T hash:ip family inet hashsize 1024 maxelem 65536 timeout 0 bucketsize 12 initval 0x777c8510',
      'create KNPM-S-C hash:ip family inet hashsize 1024 maxelem 65536 counters comment bucketsize 12 initval 0xb19eff81',
      'create KNPM-S-M hash:ip family inet hashsize 1024 maxelem 65536 netmask 24 bucketsize 12 initval 0xdded1884',
      'create KNPM-S-6 hash:ip family inet6 hashsize 1024 maxelem 65536 bucketsize 12 initval 0xc46eb346',
      'create KNPM-S-N hash:net family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0xe0b6e913',
      'create KNPM-S-OK hash:ip family inet hashsize 1024 maxelem 65536 bucketsize 12 initval 0x1',
      '',
    ].join('\n'));
    expect(a.get('KNPM-S-T')?.options).to.deep.equal(['timeout 0']);
    expect(a.get('KNPM-S-C')?.options).to.deep.equal(['counters', 'comment']);
    expect(a.get('KNPM-S-M')?.options).to.deep.equal(['netmask 24']);
    expect(a.get('KNPM-S-6')?.family).to.equal('inet6');
    expect(a.get('KNPM-S-OK')?.options).to.deep.equal([]);
    const want = new Map([...a.keys()].map((n) => [n, dset(n, 'hash:ip', [])]));
    const p = planIpsets(want, a);
    // timeout / netmask: same type and family, so `swap` can replace them; counters/comment are harmless.
    expect(p.rebuilt.sort()).to.deep.equal(['KNPM-S-M', 'KNPM-S-T']);
    // Another family or type: the kernel refuses `swap`; no line for them (the converger replaces them).
    expect(p.unswappable.sort()).to.deep.equal(['KNPM-S-6', 'KNPM-S-N']);
    expect(p.apply.filter((l) => l.includes('KNPM-S-6') || l.includes('KNPM-S-N'))).to.deep.equal([]);
    expect(p.apply.filter((l) => l.includes('KNPM-S-C') || l.includes('KNPM-S-OK'))).to.deep.equal([]);
  });
  it('viaTempNames renames a set everywhere it is matched, and shares everything else', () => {
    const d = buildDesired(objects({ namespaces: 2, podsPerNamespace: 3, policiesPerNamespace: 1 }), { localPods: ['10.244.0.1'] });
    const target = [...d.sets.keys()].find((n) => n.startsWith('KNPM-S-')) as string;
    const via = viaTempNames(d, [target, 'KNPM-LOCAL']);
    const tmp = tempSetName(target);
    expect(via.sets.has(target)).to.equal(false);
    expect(via.sets.get(tmp)?.members).to.equal(d.sets.get(target)?.members);
    expect(via.sets.get(tmp)?.name).to.equal(tmp);
    const uses = (st: typeof d, n: string): number => [...st.chains.values()].flat().filter((r) => r.includes(` --match-set ${n} `)).length;
    expect(uses(d, target)).to.be.greaterThan(0);
    expect(uses(via, tmp)).to.equal(uses(d, target));
    expect(uses(via, target)).to.equal(0);
    expect(uses(via, tempSetName('KNPM-LOCAL'))).to.equal(2);
    for (const [c, rules] of d.chains) if (!rules.some((r) => r.includes(target) || r.includes('KNPM-LOCAL'))) expect(via.chains.get(c)).to.equal(rules);
    expect(unswappableSets(d, { sets: parseIpsetSave(`create ${target} hash:net family inet hashsize 1024 maxelem 65536\n`), iptables: empty().iptables })).to.deep.equal([target]);
  });
  it('an unchanged set costs nothing: the same member Map is skipped, an equal one compared without writing', () => {
    const d = dset('KNPM-S-A', 'hash:ip', ['10.0.0.1', '10.0.0.2']);
    const shared = new Map([['KNPM-S-A', { name: 'KNPM-S-A', type: 'hash:ip', family: 'inet', hashsize: 1024, maxelem: 65536, options: [], members: d.members }]]);
    expect(planIpsets(new Map([['KNPM-S-A', d]]), shared).apply).to.deep.equal([]);
    const equal = save('create KNPM-S-A hash:ip family inet hashsize 1024 maxelem 65536\nadd KNPM-S-A 10.0.0.2\nadd KNPM-S-A 10.0.0.1\n');
    expect(planIpsets(new Map([['KNPM-S-A', d]]), equal).apply).to.deep.equal([]);
    // Same size, one swapped: one add, one del (only the removed keys are sorted).
    const swapped = save('create KNPM-S-A hash:ip family inet hashsize 1024 maxelem 65536\nadd KNPM-S-A 10.0.0.1\nadd KNPM-S-A 10.0.0.9\nadd KNPM-S-A 10.0.0.3\n');
    const p = planIpsets(new Map([['KNPM-S-A', dset('KNPM-S-A', 'hash:ip', ['10.0.0.1', '10.0.0.2'])]]), swapped);
    expect(p.apply).to.deep.equal(['add -exist KNPM-S-A 10.0.0.2', 'del -exist KNPM-S-A 10.0.0.3', 'del -exist KNPM-S-A 10.0.0.9']);
    expect([p.added, p.removed]).to.deep.equal([1, 2]);
  });
  it('the merge diff (both Maps known sorted) writes exactly what the keyed diff writes', () => {
    for (const [from, to] of [[0, 1], [1, 0], [0, 3], [2, 0]] as const) {
      const before = buildDesired(objects({ namespaces: 3, podsPerNamespace: 5, policiesPerNamespace: 2, ipOffset: from }));
      const after = buildDesired(objects({ namespaces: 3, podsPerNamespace: 4, policiesPerNamespace: 2, ipOffset: to }));
      const sorted = appliedState(before, empty()).sets;
      // The same content as the kernel would print it: not known sorted, diffed by key.
      const text = [...before.sets.values()].flatMap((x) => [`create ${x.name} ${x.type} family inet hashsize 1024 maxelem ${requiredMaxelem(x.members.size)}`, ...[...x.members.values()].reverse().map((m) => `add ${x.name} ${m}`)]).join('\n');
      const merged = planIpsets(after.sets, sorted);
      const keyed = planIpsets(after.sets, save(text));
      expect(merged.apply.length).to.be.greaterThan(0);
      expect(merged.apply).to.deep.equal(keyed.apply);
      expect([merged.added, merged.removed]).to.deep.equal([keyed.added, keyed.removed]);
    }
  });
  it('destroys owned sets no longer wanted, ignores foreign ones', () => {
    const actual = save('create KNPM-S-OLD hash:ip family inet hashsize 1024 maxelem 65536\ncreate cali40-foo hash:ip family inet hashsize 1024 maxelem 65536\n');
    expect(actual.has('cali40-foo')).to.equal(false);
    expect(planIpsets(new Map(), actual).destroy).to.deep.equal(['destroy KNPM-S-OLD']);
  });
});

describe('agent iptables plan', () => {
  const desired = { chains: new Map([['KNPM-FORWARD', ['-j KNPM-INGRESS']], ['KNPM-INGRESS', ['-j RETURN']]]), hook: true };
  const save = (forward: string[], own: Record<string, string[]>): ReturnType<typeof parseIptablesSave> =>
    parseIptablesSave(['*filter', ':FORWARD ACCEPT [0:0]', ...Object.keys(own).map((c) => `:${c} - [0:0]`), ':KUBE-FORWARD - [0:0]', ...forward.map((r) => `-A FORWARD ${r}`), ...Object.entries(own).flatMap(([c, rs]) => rs.map((r) => `-A ${c} ${r}`)), '-A KUBE-FORWARD -j ACCEPT', 'COMMIT'].join('\n'));
  const cases: { name: string; actual: ReturnType<typeof parseIptablesSave>; want: string[] }[] = [
    { name: 'in sync: nothing', actual: save([HOOK_RULE, '-j KUBE-FORWARD'], { 'KNPM-FORWARD': ['-j KNPM-INGRESS'], 'KNPM-INGRESS': ['-j RETURN'] }), want: [] },
    {
      name: 'from scratch: declare, fill, hook at 1',
      actual: save(['-j KUBE-FORWARD'], {}),
      want: ['*filter', ':KNPM-FORWARD - [0:0]', ':KNPM-INGRESS - [0:0]', '-A KNPM-FORWARD -j KNPM-INGRESS', '-A KNPM-INGRESS -j RETURN', `-I FORWARD 1 ${HOOK_RULE}`, 'COMMIT'],
    },
    {
      name: 'one chain changed: only it is rewritten',
      actual: save([HOOK_RULE], { 'KNPM-FORWARD': ['-j KNPM-INGRESS'], 'KNPM-INGRESS': ['-j DROP', '-j RETURN'] }),
      want: ['*filter', ':KNPM-INGRESS - [0:0]', '-A KNPM-INGRESS -j RETURN', 'COMMIT'],
    },
    {
      name: 'stale chain flushed and deleted after the rewrite',
      actual: save([HOOK_RULE], { 'KNPM-FORWARD': ['-j KNPM-INGRESS', '-j KNPM-I-OLD'], 'KNPM-INGRESS': ['-j RETURN'], 'KNPM-I-OLD': ['-j DROP'] }),
      want: ['*filter', ':KNPM-FORWARD - [0:0]', ':KNPM-I-OLD - [0:0]', '-A KNPM-FORWARD -j KNPM-INGRESS', '-X KNPM-I-OLD', 'COMMIT'],
    },
    {
      name: 'misplaced hook: removed by spec, inserted at 1',
      actual: save(['-j KUBE-FORWARD', HOOK_RULE], { 'KNPM-FORWARD': ['-j KNPM-INGRESS'], 'KNPM-INGRESS': ['-j RETURN'] }),
      want: ['*filter', `-D FORWARD ${HOOK_RULE}`, `-I FORWARD 1 ${HOOK_RULE}`, 'COMMIT'],
    },
    {
      name: 'duplicate and altered hooks all removed',
      actual: save([HOOK_RULE, `-m comment --comment "${HOOK_COMMENT}" -j ACCEPT`, HOOK_RULE], { 'KNPM-FORWARD': ['-j KNPM-INGRESS'], 'KNPM-INGRESS': ['-j RETURN'] }),
      want: ['*filter', `-D FORWARD ${HOOK_RULE}`, `-D FORWARD -m comment --comment "${HOOK_COMMENT}" -j ACCEPT`, `-D FORWARD ${HOOK_RULE}`, `-I FORWARD 1 ${HOOK_RULE}`, 'COMMIT'],
    },
  ];
  for (const c of cases) it(c.name, () => expect(planIptables(desired, c.actual).lines).to.deep.equal(c.want));

  // Direction chains: (jump, its check) pairs in any order, DROP last.
  const J = (x: string): string => `-m set --match-set KNPM-S-${x} dst -j KNPM-I-${x}`;
  const R = (x: string): string => allowReturnFor(`KNPM-I-${x}`);
  const DROP = '-m mark --mark 0x20000/0x30000 -j DROP';
  const dir = (...xs: string[]): string[] => [...xs.flatMap((x) => [J(x), R(x)]), DROP];
  const pairCases: { name: string; desired: string[]; actual: string[]; want: string[] }[] = [
    { name: 'pairs in another order: in sync', desired: dir('A', 'B', 'C'), actual: dir('C', 'A', 'B'), want: [] },
    { name: 'one pair removed: two -D by spec', desired: dir('A', 'C'), actual: dir('C', 'B', 'A'), want: ['*filter', `-D KNPM-INGRESS ${J('B')}`, `-D KNPM-INGRESS ${R('B')}`, 'COMMIT'] },
    { name: 'one pair added: two -I at the top', desired: dir('A', 'B', 'C'), actual: dir('C', 'A'), want: ['*filter', `-I KNPM-INGRESS 1 ${J('B')}`, `-I KNPM-INGRESS 2 ${R('B')}`, 'COMMIT'] },
    {
      name: 'two pairs added: they end up in desired order, before the kept ones',
      desired: dir('A', 'B', 'C'),
      actual: dir('B'),
      want: ['*filter', `-I KNPM-INGRESS 1 ${J('C')}`, `-I KNPM-INGRESS 2 ${R('C')}`, `-I KNPM-INGRESS 1 ${J('A')}`, `-I KNPM-INGRESS 2 ${R('A')}`, 'COMMIT'],
    },
    { name: 'a jump not followed by its own check: rewritten', desired: dir('A', 'B'), actual: [J('A'), R('B'), J('B'), R('A'), DROP], want: ['*filter', ':KNPM-INGRESS - [0:0]', ...dir('A', 'B').map((r) => `-A KNPM-INGRESS ${r}`), 'COMMIT'] },
    { name: 'DROP not last: rewritten', desired: dir('A'), actual: [DROP, J('A'), R('A')], want: ['*filter', ':KNPM-INGRESS - [0:0]', ...dir('A').map((r) => `-A KNPM-INGRESS ${r}`), 'COMMIT'] },
    { name: 'a foreign rule: rewritten', desired: dir('A'), actual: ['-j ACCEPT', ...dir('A')], want: ['*filter', ':KNPM-INGRESS - [0:0]', ...dir('A').map((r) => `-A KNPM-INGRESS ${r}`), 'COMMIT'] },
    { name: 'a duplicated pair: rewritten', desired: dir('A', 'B'), actual: dir('A', 'A'), want: ['*filter', ':KNPM-INGRESS - [0:0]', ...dir('A', 'B').map((r) => `-A KNPM-INGRESS ${r}`), 'COMMIT'] },
  ];
  for (const c of pairCases) {
    it(`direction chain: ${c.name}`, () => {
      const p = planIptables({ chains: new Map([['KNPM-INGRESS', c.desired]]), hook: false }, { chains: new Map([['KNPM-INGRESS', c.actual]]), hook: { copies: [], first: '' } });
      expect(p.lines).to.deep.equal(c.want);
      expect(sameChain('KNPM-INGRESS', c.desired, c.actual)).to.equal(c.want.length === 0);
    });
  }
  it('a pair swapped in a policy chain (not a direction chain) is a difference', () => {
    expect(sameChain('KNPM-I-X', dir('A', 'B'), dir('B', 'A'))).to.equal(false);
  });
  it('a removed policy: its pairs deleted before its chain is deleted, in one transaction', () => {
    const d = new Map([['KNPM-INGRESS', dir('A')], ['KNPM-I-A', ['-j MARK --set-xmark 0x20000/0x20000']]]);
    const a = new Map([['KNPM-INGRESS', dir('B', 'A')], ['KNPM-I-A', ['-j MARK --set-xmark 0x20000/0x20000']], ['KNPM-I-B', ['-j MARK --set-xmark 0x20000/0x20000']]]);
    const p = planIptables({ chains: d, hook: false }, { chains: a, hook: { copies: [], first: '' } });
    expect(p.lines).to.deep.equal(['*filter', ':KNPM-I-B - [0:0]', `-D KNPM-INGRESS ${J('B')}`, `-D KNPM-INGRESS ${R('B')}`, '-X KNPM-I-B', 'COMMIT']);
    expect([p.changed, p.patched, p.deleted]).to.deep.equal([[], ['KNPM-INGRESS'], ['KNPM-I-B']]);
  });
  it('never touches a foreign chain', () => {
    const p = planIptables({ chains: new Map(), hook: false }, save([HOOK_RULE, '-j KUBE-FORWARD'], { 'KNPM-FORWARD': [] }));
    expect(p.lines.join('\n')).not.to.contain('KUBE-');
    expect(p.lines).to.deep.equal(['*filter', ':KNPM-FORWARD - [0:0]', `-D FORWARD ${HOOK_RULE}`, '-X KNPM-FORWARD', 'COMMIT']);
  });
});

describe('agent plan (whole sync) golden', () => {
  it('from scratch, small cluster', () => {
    const d = buildDesired(objects({ namespaces: 2, podsPerNamespace: 3, policiesPerNamespace: 1 }));
    expect(d.problems).to.deep.equal([]);
    golden('scratch-small', `${planText(planSync(d, empty()))}\n`);
  });
  it('delta after pods moved and a policy went away', () => {
    const before = buildDesired(objects({ namespaces: 2, podsPerNamespace: 3, policiesPerNamespace: 2 }));
    const after = buildDesired(objects({ namespaces: 2, podsPerNamespace: 3, policiesPerNamespace: 1, ipOffset: 1 }));
    const applied = appliedState(before, empty());
    const p = planSync(after, applied);
    golden('delta-small', `${planText(p)}\n`);
    // Applying the plan's model gives an empty second plan.
    expect(planIsEmpty(planSync(after, appliedState(after, applied)))).to.equal(true);
  });
  it('drift classification', () => {
    const d = buildDesired(objects({ namespaces: 1, podsPerNamespace: 3, policiesPerNamespace: 1 }));
    const exp = appliedState(d, empty());
    const k = appliedState(d, empty());
    const [pol] = [...k.iptables.chains.keys()].filter((c) => c.startsWith('KNPM-I-'));
    const [set] = [...k.sets.keys()];
    k.iptables.chains.set(pol as string, []);
    k.iptables.chains.set('KNPM-INGRESS', [...(exp.iptables.chains.get('KNPM-INGRESS') ?? [])].reverse());
    k.iptables.chains.set('KNPM-ALLOW', ['-j ACCEPT', ...(exp.iptables.chains.get('KNPM-ALLOW') ?? [])]);
    k.iptables.chains.delete('KNPM-EGRESS');
    k.iptables.hook = { copies: [], first: '' };
    k.sets.delete(set as string);
    expect(detectDrift(exp, k).map((x) => x.kind).sort()).to.deep.equal(['chain_flushed', 'chain_foreign_rule', 'chain_missing', 'chain_reordered', 'hook', 'set_missing']);
  });
  it('direction-chain pairs in another order are no drift; a jump separated from its check is', () => {
    const d = buildDesired(objects({ namespaces: 2, podsPerNamespace: 3, policiesPerNamespace: 2 }));
    const exp = appliedState(d, empty());
    const k = appliedState(d, empty());
    const rules = [...(exp.iptables.chains.get('KNPM-INGRESS') ?? [])];
    expect(rules.length).to.be.greaterThan(3);
    const pairs: string[][] = [];
    for (let i = 0; i + 1 < rules.length; i += 2) pairs.push(rules.slice(i, i + 2));
    k.iptables.chains.set('KNPM-INGRESS', [...pairs.reverse().flat(), rules.at(-1) as string]);
    expect(detectDrift(exp, k)).to.deep.equal([]);
    expect(planIsEmpty(planSync(d, k))).to.equal(true);
    k.iptables.chains.set('KNPM-INGRESS', [rules[1] as string, rules[0] as string, ...rules.slice(2)]);
    expect(detectDrift(exp, k).map((x) => x.kind)).to.deep.equal(['chain_reordered']);
  });
  it('appliedState shares the desired members and rules (no copies) and reuses unchanged set entries', () => {
    const d = buildDesired(objects({ namespaces: 1, podsPerNamespace: 3, policiesPerNamespace: 1 }));
    const a1 = appliedState(d, empty());
    for (const [name, s] of d.sets) expect(a1.sets.get(name)?.members).to.equal(s.members);
    for (const [name, r] of d.chains) expect(a1.iptables.chains.get(name)).to.equal(r);
    expect(a1.iptables.chains).to.not.equal(d.chains);
    const a2 = appliedState(d, a1);
    for (const [name, s] of a1.sets) expect(a2.sets.get(name)).to.equal(s);
    expect(planIsEmpty(planSync(d, a2))).to.equal(true);
  });
});
