// Golden fixtures: test/fixtures/golden/<case>/input.yaml -> expected.yaml (the exact output of
// `kube-npm translate -o yaml`). Regenerate with UPDATE_GOLDEN=1 and review the diff.
import { expect } from 'chai';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { runTranslate } from '../../../operator/src/cli/translate.js';

const root = fileURLToPath(new URL('../../fixtures/golden/', import.meta.url));

describe('golden translations', () => {
  for (const name of readdirSync(root).sort()) {
    it(name, () => {
      const input = `${root}${name}/input.yaml`;
      const expectedPath = `${root}${name}/expected.yaml`;
      let out = '';
      const code = runTranslate(['-f', input], { stdout: (s) => (out += s), stderr: () => undefined });
      expect(code).to.equal(0);
      if (process.env.UPDATE_GOLDEN === '1' || !existsSync(expectedPath)) {
        if (process.env.CI === 'true') throw new Error(`${expectedPath} missing in CI`);
        writeFileSync(expectedPath, out);
      }
      expect(out, `case ${name}: output differs from expected.yaml (UPDATE_GOLDEN=1 to regenerate)`).to.equal(readFileSync(expectedPath, 'utf8'));
    });
  }
});
