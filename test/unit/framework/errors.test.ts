import { expect } from 'chai';
import { errorChain } from '../../../operator/src/framework/errors.js';

describe('errorChain', () => {
  it('joins the cause chain, skipping a cause its wrapper already quotes', () => {
    const kernel = new Error('ipset restore (phase 2) failed with exit 1: ipset v7.19: Error in line 3: Kernel error received\n>    3: add KNPM-S-X 10.244.0.1');
    const e = new Error('sync failed after 5 attempt(s)', { cause: kernel });
    expect(errorChain(e)).to.equal(`sync failed after 5 attempt(s): ${kernel.message}`);
    const quoted = new Error(`running ipset: ${kernel.message.split('\n')[0]}`, { cause: kernel });
    expect(errorChain(quoted)).to.equal(quoted.message);
    expect(errorChain('plain')).to.equal('plain');
  });

  it('stops after depth levels (a cyclic chain cannot loop)', () => {
    const a = new Error('a');
    const b = new Error('b', { cause: a });
    (a as { cause?: unknown }).cause = b;
    expect(errorChain(b)).to.equal('b: a');
    expect(errorChain(b, 1)).to.equal('b');
  });
});
