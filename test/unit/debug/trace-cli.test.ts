// `kube-npm debug trace` flags: --port N[/proto] with --protocol, and what counts as bad input.
import { expect } from 'chai';
import { parsePort, runDebug } from '../../../operator/src/cli/debug.js';

describe('debug trace flags', () => {
  it('--port N, N/tcp, N/udp, N/sctp; --protocol alone or agreeing', () => {
    expect(parsePort('80', undefined)).to.deep.equal({ port: 80, protocol: 'TCP' });
    expect(parsePort('53/udp', undefined)).to.deep.equal({ port: 53, protocol: 'UDP' });
    expect(parsePort('53', 'udp')).to.deep.equal({ port: 53, protocol: 'UDP' });
    expect(parsePort('9/SCTP', 'sctp')).to.deep.equal({ port: 9, protocol: 'SCTP' });
  });

  for (const [port, protocol, msg] of [
    ['0', undefined, '1-65535'],
    ['65536', undefined, '1-65535'],
    ['http', undefined, 'expected N or N/tcp'],
    ['80/tcp', 'udp', 'says TCP but --protocol says UDP'],
    ['80/icmp', undefined, 'expected TCP, UDP or SCTP'],
  ] as const) {
    it(`--port ${port}${protocol ? ` --protocol ${protocol}` : ''}: refused (${msg})`, () => {
      expect(() => parsePort(port, protocol)).to.throw(msg);
    });
  }

  it('bad input exits 2 with the usage: unknown flag, missing --to, -f with --kubeconfig', async () => {
    for (const args of [['--bogus'], ['--from', 'a/b'], ['-f', 'x.yaml', '--kubeconfig', 'k', '--from', 'a/b', '--to', 'c/d']]) {
      let err = '';
      const code = await runDebug(['trace', ...args], { stdout: () => undefined, stderr: (s) => void (err += s) });
      expect(code, args.join(' ')).to.equal(2);
      expect(err).to.contain('usage: kube-npm debug trace');
    }
  });
});
