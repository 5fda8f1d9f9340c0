import { expect } from 'chai';
import {
  MARK_ALLOW, MARK_ISOLATED, MAX_CHAIN_NAME, MAX_SET_NAME, clampComment, digest, ipBlockSetName, ipSetObjectName,
  namedPortSetName, podSelectorSetName, policyChainName, tempSetName,
} from '../../../operator/src/api/names.js';

describe('kernel names', () => {
  it('fit the kernel limits: sets 31, chains 28 characters', () => {
    for (let i = 0; i < 200; i++) {
      expect(podSelectorSetName(`ns=n${i}`, `app=${'x'.repeat(i)}`)).to.have.length.at.most(MAX_SET_NAME);
      expect(tempSetName(podSelectorSetName('a', String(i)))).to.have.length.at.most(MAX_SET_NAME);
      expect(policyChainName(i % 2 ? 'Ingress' : 'Egress', 'n'.repeat(63), 'p'.repeat(253))).to.have.length.at.most(MAX_CHAIN_NAME);
    }
  });

  it('are deterministic (same input, same name, in any process) and use SHA-256', () => {
    // Pinned values: a change here changes every node's kernel names on upgrade.
    expect(podSelectorSetName('ns=prod', 'app=web')).to.equal(podSelectorSetName('ns=prod', 'app=web'));
    expect(digest('abc', 8)).to.equal('XJ4BNP4P'); // RFC 4648 base32 of sha256("abc"), as Python's base64.b32encode gives
    expect(policyChainName('Ingress', 'prod', 'web')).to.match(/^KNPM-I-[A-Z2-7]{21}$/);
  });

  it('have no collisions over 100,000 distinct identities of each kind', () => {
    const seen = new Set<string>();
    for (let i = 0; i < 100000; i++) {
      seen.add(podSelectorSetName(`ns=n${i % 100}`, `app=a${i}`));
      seen.add(policyChainName('Ingress', `n${i % 100}`, `p${i}`));
    }
    expect(seen.size).to.equal(200000);
  });

  it('separate kinds and fields (no ambiguity from concatenation)', () => {
    expect(podSelectorSetName('ns=a', 'b')).to.not.equal(podSelectorSetName('ns=ab', ''));
    expect(namedPortSetName('http', 'TCP')).to.not.equal(namedPortSetName('http', 'UDP'));
    expect(ipBlockSetName('10.0.0.0/8', ['10.1.0.0/16', '10.2.0.0/16'])).to.equal(ipBlockSetName('10.0.0.0/8', ['10.2.0.0/16', '10.1.0.0/16']));
    expect(policyChainName('Ingress', 'a', 'b')).to.not.equal(policyChainName('Egress', 'a', 'b'));
  });

  it('object names of set shards are valid DNS-1123 subdomains', () => {
    expect(ipSetObjectName(podSelectorSetName('x', 'y'), 3)).to.match(/^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/);
  });

  it('mark bits avoid kube-proxy (0x4000, 0x8000)', () => {
    expect((MARK_ALLOW | MARK_ISOLATED) & (0x4000 | 0x8000)).to.equal(0);
  });

  it('comments are clamped to 256 characters and made safe for restore input', () => {
    expect(clampComment('x'.repeat(300))).to.have.length(256);
    expect(clampComment('say "hi"\n')).to.equal("say 'hi'?");
  });
});
