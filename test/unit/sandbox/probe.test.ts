// `kube-npm sandbox probe`: what TO is, and the verdict and exit code of each kind of probe result.
// A policy drop is a silent timeout (exit 1); an answer that says no (RST, ICMP) is not a drop (exit 3).
import { expect } from 'chai';
import { probeVerdict, resolveTarget, type ProbeResult, type ProbeTarget } from '../../../operator/src/sandbox/probe.js';
import type { PodState, SandboxState } from '../../../operator/src/sandbox/state.js';

const pod = (key: string, ip: string, node: string): PodState => ({ key, uid: `uid-${key}`, node, ip, netns: `ns-${key}`, hostIf: 'veth0' });

const STATE: Pick<SandboxState, 'pods' | 'nodes'> = {
  pods: { 'demo/web': pod('demo/web', '10.244.1.2', 'n1'), 'demo/db': pod('demo/db', '10.244.2.2', 'n2') },
  nodes: [
    { name: 'n1', netns: 'knpm-sbx-x-n1', underlayIp: '192.168.250.1', podSubnet: '10.244.1.0/24' },
    { name: 'n2', netns: 'knpm-sbx-x-n2', underlayIp: '192.168.250.2', podSubnet: '10.244.2.0/24' },
  ],
};

describe('sandbox probe: target', () => {
  const cases: [string, string, ProbeTarget | RegExp][] = [
    ['a pod by name', 'demo/db', { kind: 'pod', key: 'demo/db', ip: '10.244.2.2' }],
    ["a pod's address is that pod", '10.244.1.2', { kind: 'pod', key: 'demo/web', ip: '10.244.1.2' }],
    ["a node's address is not a pod", '192.168.250.2', { kind: 'other', ip: '192.168.250.2', what: "not a pod: node n2's address" }],
    ['a free address in a pod subnet', '10.244.1.99', /^not a pod: no sandbox pod has this address \(node n1's pod subnet 10\.244\.1\.0\/24\)$/],
    ['an address outside the sandbox', '8.8.8.8', { kind: 'other', ip: '8.8.8.8', what: 'not a pod: an address outside the sandbox' }],
  ];
  for (const [name, to, want] of cases) {
    it(name, () => {
      const got = resolveTarget(STATE, to);
      if (want instanceof RegExp) {
        expect(got.kind).to.equal('other');
        expect((got as { what: string }).what).to.match(want);
      } else expect(got).to.deep.equal(want);
    });
  }

  const errors: [string, string, RegExp][] = [
    ['an unknown pod', 'demo/nope', /^no running sandbox pod demo\/nope \(pods: demo\/db, demo\/web\)/],
    ['neither NS/NAME nor an address', 'web', /^"web" is neither a pod \(NS\/NAME\) nor an IPv4 address/],
    ['an octet over 255', '10.244.1.300', /^"10\.244\.1\.300" is not an IPv4 address$/],
  ];
  for (const [name, to, want] of errors) {
    it(`bad input: ${name}`, () => {
      const got = resolveTarget(STATE, to);
      expect(got.kind).to.equal('error');
      expect((got as { message: string }).message).to.match(want);
    });
  }
});

describe('sandbox probe: verdict and exit code', () => {
  const podTarget = resolveTarget(STATE, 'demo/db');
  const offTarget = resolveTarget(STATE, '10.244.2.77');
  const base = { what: 'demo/web -> demo/db (10.244.2.2) 80/tcp', timeoutMs: 1000, port: 80, protocol: 'TCP' as const };
  const cases: [string, ProbeResult, ProbeTarget, number, RegExp][] = [
    ['connected', { ok: true, ms: 1.4 }, podTarget, 0, /^allowed \(1 ms\): demo\/web -> demo\/db \(10\.244\.2\.2\) 80\/tcp$/],
    ['silent timeout: what a policy drop looks like', { ok: false, error: 'timeout', ms: 1000 }, podTarget, 1, /^denied \(timeout 1000 ms\): demo\/web -> demo\/db \(10\.244\.2\.2\) 80\/tcp$/],
    ['RST: let through, nothing listens', { ok: false, error: 'ECONNREFUSED', ms: 2 }, podTarget, 3, /^refused \(ECONNREFUSED after 2 ms\): .*: nothing listens on 80\/tcp there; the policies let it through/],
    ['a reset is an answer too', { ok: false, error: 'ECONNRESET', ms: 3 }, podTarget, 3, /^refused \(ECONNRESET after 3 ms\)/],
    ['ICMP host unreachable', { ok: false, error: 'EHOSTUNREACH', ms: 3050 }, podTarget, 3, /^unreachable \(EHOSTUNREACH after 3050 ms\): .*: no route or no host at that address; not a policy drop$/],
    ['no route', { ok: false, error: 'ENETUNREACH', ms: 0 }, podTarget, 3, /^unreachable \(ENETUNREACH after 0 ms\)/],
    ['any other socket error is an answer, not a drop', { ok: false, error: 'EPERM', ms: 1 }, podTarget, 3, /^failed \(EPERM after 1 ms\): .*: not a policy drop/],
    ['a timeout to an address no pod has says both readings', { ok: false, error: 'timeout', ms: 1000 }, offTarget, 1, /^denied \(timeout 1000 ms\): .* \[10\.244\.2\.77: not a pod: no sandbox pod has this address .*\]: a policy drop, or nobody at that address \(both are silent\)$/],
    ['allowed to an address no pod has says it is not a pod', { ok: true, ms: 1 }, offTarget, 0, /^allowed \(1 ms\): .* \[10\.244\.2\.77: not a pod: /],
  ];
  for (const [name, r, target, exit, line] of cases) {
    it(`${name}: exit ${exit}`, () => {
      const v = probeVerdict(r, { ...base, target });
      expect(v.exit).to.equal(exit);
      expect(v.line).to.match(line);
    });
  }

  it('UDP: an ICMP port unreachable (ECONNREFUSED on the connected socket) names the UDP port', () => {
    const v = probeVerdict({ ok: false, error: 'ECONNREFUSED', ms: 1 }, { ...base, port: 53, protocol: 'UDP', target: podTarget });
    expect(v).to.include({ exit: 3 });
    expect(v.line).to.include('nothing listens on 53/udp there');
  });
});
