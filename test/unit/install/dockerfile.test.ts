// The Dockerfile, checked without a Docker engine (none runs here, and hadolint is neither a Debian
// nor an npm package): a small parser of the Dockerfile syntax (directives, comments, line
// continuations, JSON or shell form) and the rules the image must keep.
import { expect } from 'chai';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO = fileURLToPath(new URL('../../../', import.meta.url));

export interface Instruction {
  line: number;
  cmd: string;
  /** Arguments as written (continuations joined with a space). */
  raw: string;
  /** Exec (JSON array) form, when the arguments are one. */
  json?: string[];
}

export interface Stage {
  index: number;
  name?: string;
  image: string;
  instructions: Instruction[];
}

/** Parse a Dockerfile: parser directives, comments, `\` continuations, instructions by stage. */
export function parseDockerfile(text: string): { directives: Record<string, string>; stages: Stage[]; preamble: Instruction[] } {
  const directives: Record<string, string> = {};
  const lines = text.split('\n');
  let i = 0;
  // Directives: `# key=value` lines before anything else.
  for (; i < lines.length; i++) {
    const m = /^#\s*([a-zA-Z]+)\s*=\s*(\S+)\s*$/.exec(lines[i]!);
    if (!m) break;
    directives[m[1]!.toLowerCase()] = m[2]!;
  }
  const instructions: Instruction[] = [];
  while (i < lines.length) {
    const start = i;
    let l = lines[i++]!;
    if (/^\s*(#|$)/.test(l)) continue;
    let text = '';
    // Continuations: a trailing backslash joins the next line; comment lines inside are dropped.
    while (/\\\s*$/.test(l)) {
      text += l.replace(/\\\s*$/, ' ');
      do l = lines[i++] ?? '';
      while (/^\s*#/.test(l) && i < lines.length);
    }
    text += l;
    const m = /^\s*([A-Za-z]+)\s+([\s\S]*?)\s*$/.exec(text);
    if (!m) throw new Error(`line ${start + 1}: cannot parse "${text}"`);
    const ins: Instruction = { line: start + 1, cmd: m[1]!.toUpperCase(), raw: m[2]!.replace(/\s+/g, ' ') };
    if (ins.raw.startsWith('[')) {
      try {
        const v: unknown = JSON.parse(ins.raw);
        if (Array.isArray(v) && v.every((x) => typeof x === 'string')) ins.json = v as string[];
      } catch {
        /* shell form that starts with '[' */
      }
    }
    instructions.push(ins);
  }
  const stages: Stage[] = [];
  const preamble: Instruction[] = [];
  for (const ins of instructions) {
    if (ins.cmd === 'FROM') {
      const parts = ins.raw.split(' ').filter((p) => !p.startsWith('--'));
      const as = parts.findIndex((p) => p.toLowerCase() === 'as');
      stages.push({ index: stages.length, image: parts[0]!, ...(as > 0 ? { name: parts[as + 1]! } : {}), instructions: [] });
    } else if (stages.length === 0) preamble.push(ins);
    else stages[stages.length - 1]!.instructions.push(ins);
  }
  return { directives, stages, preamble };
}

/** Defaults of the ARGs declared before the first FROM: what FROM lines see without --build-arg. */
export function preambleArgs(preamble: Instruction[]): Record<string, string | undefined> {
  const args: Record<string, string | undefined> = {};
  for (const ins of preamble.filter((x) => x.cmd === 'ARG')) {
    const m = /^([A-Za-z_][A-Za-z0-9_]*)(?:=(.*))?$/.exec(ins.raw);
    if (!m) throw new Error(`line ${ins.line}: cannot parse ARG "${ins.raw}"`);
    args[m[1]!] = m[2];
  }
  return args;
}

/** `$NAME` and `${NAME}` replaced by the ARG values; an unknown or valueless ARG is an error. */
export function expandArgs(text: string, args: Record<string, string | undefined>): string {
  return text.replace(/\$(?:\{([A-Za-z_][A-Za-z0-9_]*)\}|([A-Za-z_][A-Za-z0-9_]*))/g, (_, a: string | undefined, b: string | undefined) => {
    const v = args[(a ?? b)!];
    if (v === undefined) throw new Error(`ARG ${a ?? b} has no default`);
    return v;
  });
}

/** Commands of RUN instructions, split on && and ;. */
const runCommands = (s: Stage): string[] =>
  s.instructions.filter((x) => x.cmd === 'RUN').flatMap((x) => x.raw.split(/&&|;/).map((c) => c.trim().replace(/\s+/g, ' ')).filter(Boolean));

describe('Dockerfile', () => {
  const text = readFileSync(join(REPO, 'Dockerfile'), 'utf8');
  const df = parseDockerfile(text);
  const build = df.stages[0]!;
  const runtime = df.stages[df.stages.length - 1]!;
  // The bases are build arguments (a local base where no registry is reachable, hack/image/build.sh);
  // the rules below hold for their defaults, the images a plain `docker build` uses.
  const args = preambleArgs(df.preamble);
  const image = (s: Stage): string => expandArgs(s.image, args);

  it('the parser: continuations, comments, JSON form, stages', () => {
    const p = parseDockerfile('# syntax=docker/dockerfile:1\nARG X=1\nFROM a:1 AS one\nRUN a \\\n# c\n  && b\nFROM one\nCMD ["x", "y"]\n');
    expect(p.directives).to.deep.equal({ syntax: 'docker/dockerfile:1' });
    expect(p.preamble.map((x) => x.cmd)).to.deep.equal(['ARG']);
    expect(p.stages.map((s) => [s.image, s.name])).to.deep.equal([['a:1', 'one'], ['one', undefined]]);
    expect(p.stages[0]!.instructions[0]!.raw).to.equal('a && b');
    expect(p.stages[1]!.instructions[0]!.json).to.deep.equal(['x', 'y']);
    const q = parseDockerfile('ARG A=img:1.2.3@sha256:00\nARG B\nFROM ${A} AS a\nFROM $B\n');
    const qa = preambleArgs(q.preamble);
    expect(qa).to.deep.equal({ A: 'img:1.2.3@sha256:00', B: undefined });
    expect(expandArgs(q.stages[0]!.image, qa)).to.equal('img:1.2.3@sha256:00');
    expect(() => expandArgs(q.stages[1]!.image, qa)).to.throw(/ARG B has no default/);
  });

  it('takes both bases as build arguments declared before the first FROM', () => {
    expect([build.image, runtime.image]).to.deep.equal(['${BUILD_BASE}', '${RUNTIME_BASE}']);
    expect(Object.keys(args).sort()).to.deep.equal(['BUILD_BASE', 'RUNTIME_BASE']);
  });

  it('is multi-stage: a node:20 build stage and a Debian node:20 runtime stage', () => {
    expect(df.stages.map((s) => s.name)).to.deep.equal(['build', 'runtime']);
    expect(image(build)).to.match(/^node:20\.\d+\.\d+-bookworm@sha256:[0-9a-f]{64}$/);
    expect(image(runtime)).to.match(/^node:20\.\d+\.\d+-bookworm-slim@sha256:[0-9a-f]{64}$/);
  });

  it('pins every base image by a full version tag and a digest (never latest, never untagged)', () => {
    const names = new Set(df.stages.map((s) => s.name));
    for (const s of df.stages) {
      const img = image(s);
      if (names.has(img)) continue;
      const tag = /^[^@]+:([^:/@]+)(@sha256:[0-9a-f]{64})?$/.exec(img)?.[1];
      expect(tag, img).to.be.a('string');
      expect(tag, img).to.not.equal('latest');
      expect(tag, img).to.match(/\d+\.\d+\.\d+/);
      // A tag can be repointed; the digest cannot (#9 item 9).
      expect(img, img).to.match(/@sha256:[0-9a-f]{64}$/);
    }
  });

  it('every COPY --from names an earlier stage', () => {
    let froms = 0;
    for (const s of df.stages)
      for (const ins of s.instructions.filter((x) => x.cmd === 'COPY')) {
        const m = /--from=(\S+)/.exec(ins.raw);
        if (!m) continue;
        froms++;
        const ref = m[1]!;
        const earlier = df.stages.slice(0, s.index);
        expect(earlier.some((e) => e.name === ref || String(e.index) === ref), `line ${ins.line}: --from=${ref}`).to.equal(true);
      }
    expect(froms).to.be.greaterThan(0);
  });

  it('builds with the same npm commands as CI (.ci/run), then prunes dev dependencies', () => {
    const ci = readFileSync(join(REPO, '.ci/run'), 'utf8');
    const ciInstall = /^\s*(npm ci\b.*)$/m.exec(ci)?.[1]?.trim();
    expect(ciInstall).to.be.a('string');
    const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
    expect(pkg.scripts.build).to.be.a('string');
    const cmds = runCommands(build);
    expect(cmds.filter((c) => c.startsWith('npm '))).to.deep.equal([ciInstall, 'npm run build', 'npm prune --omit=dev --no-audit --no-fund']);
    // npm ci needs the lock file in place before it runs.
    const copyLock = build.instructions.findIndex((x) => x.cmd === 'COPY' && x.raw.includes('package-lock.json'));
    const ciAt = build.instructions.findIndex((x) => x.cmd === 'RUN' && x.raw.includes('npm ci'));
    expect(copyLock).to.be.within(0, ciAt - 1);
  });

  it('the build stage copies what tsconfig.build.json compiles', () => {
    const tsb = JSON.parse(readFileSync(join(REPO, 'tsconfig.build.json'), 'utf8')) as { extends: string; include: string[] };
    const copied = build.instructions.filter((x) => x.cmd === 'COPY').map((x) => x.raw);
    for (const inc of tsb.include) expect(copied.some((c) => c.includes(inc.split('/')[0]!)), inc).to.equal(true);
    expect(copied.some((c) => c.includes(tsb.extends.replace('./', '')))).to.equal(true);
  });

  it('the runtime installs iptables (nft + legacy), ipset and conntrack, and holds dist + node_modules', () => {
    const apt = runCommands(runtime).find((c) => c.includes('apt-get install'));
    expect(apt).to.match(/--no-install-recommends/);
    for (const p of ['iptables', 'ipset', 'conntrack']) expect(apt!.split(' ')).to.include(p);
    expect(runCommands(runtime)).to.include('rm -rf /var/lib/apt/lists/*');
    const copies = runtime.instructions.filter((x) => x.cmd === 'COPY').map((x) => x.raw);
    expect(copies).to.include('--from=build /src/dist ./dist');
    expect(copies).to.include('--from=build /src/node_modules ./node_modules');
    expect(runtime.instructions.find((x) => x.cmd === 'WORKDIR')?.raw).to.equal('/app');
  });

  it('runs as non-root uid 65532 with an exec-form ENTRYPOINT of the built CLI', () => {
    const users = runtime.instructions.filter((x) => x.cmd === 'USER');
    expect(users.map((u) => u.raw)).to.deep.equal(['65532:65532']);
    const ep = runtime.instructions.filter((x) => x.cmd === 'ENTRYPOINT');
    expect(ep).to.have.length(1);
    expect(ep[0]!.json).to.deep.equal(['node', '/app/dist/operator/src/cli/main.js']);
    const pkg = JSON.parse(readFileSync(join(REPO, 'package.json'), 'utf8')) as { bin: Record<string, string> };
    expect(`/app/${pkg.bin['kube-npm']}`).to.equal(ep[0]!.json![1]);
    // USER is the last user switch before ENTRYPOINT (nothing after it runs as root).
    expect(users[0]!.line).to.be.lessThan(ep[0]!.line);
  });

  it('.dockerignore admits exactly what the COPY lines read', () => {
    const ignore = readFileSync(join(REPO, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    expect(ignore[0]).to.equal('*');
    const allowed = ignore.slice(1).map((l) => {
      expect(l.startsWith('!'), l).to.equal(true);
      return l.slice(1);
    });
    const sources = build.instructions
      .filter((x) => x.cmd === 'COPY' && !x.raw.includes('--from'))
      .flatMap((x) => x.raw.split(' ').slice(0, -1));
    expect([...allowed].sort()).to.deep.equal([...sources].sort());
    for (const s of runtime.instructions.filter((x) => x.cmd === 'COPY')) expect(s.raw, 'runtime copies only from the build stage').to.match(/^--from=build /);
  });
});
