// Pod startup (ADR 0009), pure parts: the strict rules in KNPM-FORWARD, when a new pod may enter
// KNPM-LOCAL (PodStartup), which pods count, and which mode the agent runs in.
import { expect } from 'chai';
import { buildDesired } from '../../../operator/src/agent/model.js';
import { STRICT_COMMENT } from '../../../operator/src/agent/iptables/render.js';
import {
  PodStartup,
  appliedView,
  decidePodStartup,
  inPodCidrs,
  localPodsOf,
  normalizePodCidrs,
  notProgrammed,
  policyTargets,
  selectionView,
  type LocalPod,
} from '../../../operator/src/agent/podstartup.js';
import { CHAIN_ROOT, LOCAL_PODS_SET } from '../../../operator/src/api/names.js';
import type { NpmRuleSet } from '../../../operator/src/api/types.js';
import type { NetworkPolicy, Pod } from '../../../operator/src/translate/k8s.js';

const ruleset = (ns: string, name: string, target: string, uid = `uid-${name}`): NpmRuleSet => ({
  apiVersion: 'kubenpm.io/v1alpha1',
  kind: 'NpmRuleSet',
  metadata: { namespace: ns, name },
  spec: {
    policy: { namespace: ns, name, uid },
    policyTypes: ['Ingress'],
    summary: '',
    ipsets: [{ name: target, type: 'hash:ip', kind: 'PodSelector', family: 'IPv4', meaning: 'm' }],
    chains: [{ name: `KNPM-I-${name.toUpperCase()}`, direction: 'Ingress', targetSet: target, guards: 'g', rules: [] }],
  },
});
const policy = (ns: string, name: string, matchLabels: Record<string, string> | undefined, uid = `uid-${name}`): NetworkPolicy => ({
  metadata: { namespace: ns, name, uid },
  spec: { podSelector: matchLabels ? { matchLabels } : {} },
});
const lp = (ip: string, labels: Record<string, string> = { app: 'web' }, uid = `u-${ip}`): LocalPod => ({ uid, namespace: 'prod', name: `p-${ip}`, labels, ip });
const view = (rulesets: NpmRuleSet[], members: Record<string, string[]>) => selectionView(rulesets, Object.entries(members).map(([setName, m]) => ({ spec: { setName, members: m } })));

describe('pod startup: strict rules (render)', () => {
  it('strict: KNPM-FORWARD drops unknown pod-CIDR sources and destinations first, before the conntrack RETURN', () => {
    const d = buildDesired([], { localPods: ['10.244.1.10'], podCidrs: ['10.244.1.0/24'] });
    const fwd = d.chains.get(CHAIN_ROOT)!;
    expect(fwd.slice(0, 3)).to.deep.equal([
      `-s 10.244.1.0/24 -m set ! --match-set ${LOCAL_PODS_SET} src -m comment --comment "${STRICT_COMMENT.src}" -j DROP`,
      `-d 10.244.1.0/24 -m set ! --match-set ${LOCAL_PODS_SET} dst -m comment --comment "${STRICT_COMMENT.dst}" -j DROP`,
      '-m conntrack --ctstate RELATED,ESTABLISHED -j RETURN',
    ]);
  });
  it('open (no CIDR) and agent --once (no local pods) have no strict rules', () => {
    for (const d of [buildDesired([], { localPods: ['10.244.1.10'] }), buildDesired([], { podCidrs: ['10.244.1.0/24'] })]) {
      expect(d.chains.get(CHAIN_ROOT)!.some((r) => r.includes('DROP'))).to.equal(false);
    }
  });
});

describe('pod startup: which pods and CIDRs count', () => {
  it('finished pods, hostNetwork pods and pods without an IPv4 address hold no pod address', () => {
    const p = (name: string, extra: Partial<Pod>): Pod => ({ metadata: { namespace: 'a', name, uid: name }, status: { phase: 'Running', podIP: `10.244.1.${name.length}` }, ...extra });
    const pods = [
      p('run', {}),
      p('done', { status: { phase: 'Succeeded', podIP: '10.244.1.50' } }),
      p('failed', { status: { phase: 'Failed', podIP: '10.244.1.51' } }),
      p('hostnet', { spec: { hostNetwork: true } }),
      p('v6', { status: { phase: 'Running', podIP: 'fd00::1' } }),
      p('pending', { status: { phase: 'Pending' } }),
    ];
    expect(localPodsOf(pods).map((x) => x.name)).to.deep.equal(['run']);
  });
  it('inPodCidrs', () => {
    expect(inPodCidrs('10.244.1.200', ['10.244.1.0/24'])).to.equal(true);
    expect(inPodCidrs('10.244.1.200', ['10.244.1.0/25'])).to.equal(false);
    expect(inPodCidrs('10.244.2.1', ['10.244.1.0/24', '10.244.2.0/24'])).to.equal(true);
    expect(inPodCidrs('fd00::1', ['10.244.1.0/24'])).to.equal(false);
  });
  it('pod CIDRs: IPv4, canonical, deduplicated; IPv6 skipped; /0 and garbage refused', () => {
    expect(normalizePodCidrs(['10.244.1.7/24', '10.244.1.0/24', 'fd00::/64', ' '])).to.deep.equal({ cidrs: ['10.244.1.0/24'], errors: [], skipped: ['fd00::/64'] });
    expect(normalizePodCidrs(['0.0.0.0/0', '10.1/8']).errors).to.have.length(2);
  });
});

describe('pod startup: mode', () => {
  it('default: strict when the pod CIDR is known (flag first, else the Node), open with a warning when not', () => {
    expect(decidePodStartup(undefined, undefined, ['10.244.1.0/24'])).to.include({ mode: 'strict' });
    expect(decidePodStartup(undefined, ['10.9.0.0/16'], ['10.244.1.0/24'])).to.deep.include({ mode: 'strict', cidrs: ['10.9.0.0/16'] });
    const open = decidePodStartup(undefined, undefined, { error: 'HTTP 403' });
    expect(open).to.include({ mode: 'open' });
    expect((open as { log: string[] }).log.join('\n')).to.match(/HTTP 403[\s\S]*WARNING/);
    expect(decidePodStartup(undefined, undefined, ['fd00::/64'])).to.include({ mode: 'open' });
  });
  it('explicit: open stays open; strict without a CIDR is an error; a bad --pod-cidr is an error', () => {
    expect(decidePodStartup('open', undefined, ['10.244.1.0/24'])).to.include({ mode: 'open' });
    expect(decidePodStartup('strict', undefined, { error: 'x' })).to.have.property('error');
    expect(decidePodStartup(undefined, ['banana'], ['10.244.1.0/24'])).to.have.property('error');
  });
});

describe('pod startup: admission (PodStartup)', () => {
  const targets = policyTargets([policy('prod', 'web', { app: 'web' })]);
  const rs = ruleset('prod', 'web', 'KNPM-S-WEB');

  it('strict: a pod no policy selects is admitted in the first sync that sees it', () => {
    const s = new PodStartup('strict');
    const empty = view([], {});
    s.admit([], targets, undefined, empty, 0);
    const pod = lp('10.244.1.20', { app: 'db' });
    expect(s.admit([pod], targets, empty, empty, 100).ips).to.deep.equal(['10.244.1.20']);
    expect(s.synced([pod], targets, new Set(['10.244.1.20']), empty, 130)).to.deep.equal({ programmedSeconds: [0.03], followUp: false });
  });

  it('strict: a selected pod waits for its ruleset and target-set membership, enters only in the sync after they were applied', () => {
    const s = new PodStartup('strict');
    const pod = lp('10.244.1.20');
    s.admit([], targets, undefined, view([], {}), 0);
    let programmed = view([], {});
    // 1. The agent sees the pod; the operator has not written it into the target set yet.
    const next1 = view([rs], { 'KNPM-S-WEB': ['10.244.1.9'] });
    const a1 = s.admit([pod], targets, programmed, next1, 100);
    expect(a1.ips).to.deep.equal([]);
    expect(a1.newlyWaiting[0]).to.match(/policy prod\/web selects it/);
    programmed = next1;
    expect(s.synced([pod], targets, new Set(), programmed, 120)).to.deep.equal({ programmedSeconds: [], followUp: false });
    // 2. The operator's update arrives: this sync writes the membership, not yet KNPM-LOCAL.
    const next2 = view([rs], { 'KNPM-S-WEB': ['10.244.1.9', '10.244.1.20'] });
    expect(s.admit([pod], targets, programmed, next2, 300).ips).to.deep.equal([]);
    programmed = next2;
    expect(s.synced([pod], targets, new Set(), programmed, 320)).to.deep.equal({ programmedSeconds: [], followUp: true });
    // 3. The follow-up sync admits it.
    expect(s.admit([pod], targets, programmed, next2, 321).ips).to.deep.equal(['10.244.1.20']);
    expect(s.synced([pod], targets, new Set(['10.244.1.20']), programmed, 340).programmedSeconds).to.deep.equal([0.24]);
  });

  it('open: every local pod is in KNPM-LOCAL at once; the metric waits for its policies', () => {
    const s = new PodStartup('open');
    const pod = lp('10.244.1.20');
    s.admit([], targets, undefined, view([], {}), 0);
    const v = view([rs], {});
    expect(s.admit([pod], targets, v, v, 100).ips).to.deep.equal(['10.244.1.20']);
    expect(s.synced([pod], targets, new Set(['10.244.1.20']), v, 150).programmedSeconds).to.deep.equal([]);
    const v2 = view([rs], { 'KNPM-S-WEB': ['10.244.1.20'] });
    expect(s.synced([pod], targets, new Set(['10.244.1.20']), v2, 400).programmedSeconds).to.deep.equal([0.3]);
  });

  it('pods present at the first sync are admitted against the state being written, and not measured', () => {
    const s = new PodStartup('strict');
    const pod = lp('10.244.1.20');
    const v = view([rs], { 'KNPM-S-WEB': ['10.244.1.20'] });
    expect(s.admit([pod], targets, undefined, v, 0).ips).to.deep.equal(['10.244.1.20']);
    expect(s.synced([pod], targets, new Set(['10.244.1.20']), v, 10).programmedSeconds).to.deep.equal([]);
  });

  it('a pod that reuses an address (new uid) starts unknown again', () => {
    const s = new PodStartup('strict');
    const v = view([rs], { 'KNPM-S-WEB': ['10.244.1.9'] });
    const old = lp('10.244.1.20', { app: 'db' }, 'old');
    s.admit([old], targets, undefined, v, 0);
    s.synced([old], targets, new Set(['10.244.1.20']), v, 1);
    // Same address, now a web pod (selected, not yet in the target set): it must wait.
    const reuse = lp('10.244.1.20', { app: 'web' }, 'new');
    expect(s.admit([reuse], targets, v, v, 50).ips).to.deep.equal([]);
  });

  it('a ruleset of an older policy of the same name does not count; an invalid podSelector selects every pod', () => {
    const pod = lp('10.244.1.20');
    const v = view([ruleset('prod', 'web', 'KNPM-S-WEB', 'uid-old')], { 'KNPM-S-WEB': ['10.244.1.20'] });
    expect(notProgrammed(pod, targets, v)).to.match(/older policy/);
    const bad = policyTargets([{ metadata: { namespace: 'prod', name: 'bad' }, spec: { podSelector: 'app=web' as never } }]);
    expect(notProgrammed(lp('10.244.1.21', { app: 'other' }), bad, view([], {}))).to.match(/policy prod\/bad selects it/);
  });

  it('appliedView reads the desired state member maps', () => {
    const v = appliedView(new Map([['prod/web', rs]]), new Map([['KNPM-S-WEB', { members: new Map([['10.244.1.20', '10.244.1.20']]) }]]));
    expect(notProgrammed(lp('10.244.1.20'), targets, v)).to.equal(undefined);
    expect(notProgrammed(lp('10.244.1.21'), targets, v)).to.match(/target set KNPM-S-WEB/);
  });
});
