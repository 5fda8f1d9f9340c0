/**
 * `kube-npm sandbox up|down|probe`: flags only; operator/src/sandbox does the work.
 *
 *   kube-npm sandbox up [--nodes 2] [--dir DIR] [--metrics-port 10091]
 *   kube-npm sandbox down [--dir DIR]
 *   kube-npm sandbox probe NS/POD NS/POD|IP PORT[/tcp|/udp] [--timeout-ms 1000] [--dir DIR]
 *     exit 0 allowed, 1 denied (silent timeout), 2 bad input, 3 refused/unreachable (sandbox/probe.ts)
 *
 * Also runnable on its own (`node dist/operator/src/cli/sandbox.js [sandbox] up ...`).
 */
import { realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';
import { InputError } from './load.js';
import type { CliIO } from './translate.js';

export const SANDBOX_USAGE = `kube-npm sandbox: a local cluster made of network namespaces (needs root)

Usage:
  kube-npm sandbox up [--nodes 2] [--dir DIR] [--metrics-port 10091]
      Start a control plane, N nodes, the operator, one agent per node, a netns kubelet and a sample
      workload; stay in the foreground (Ctrl-C stops and removes everything).
  kube-npm sandbox down [--dir DIR]
      Stop the sandbox in DIR (from another shell), or remove what a crashed one left.
  kube-npm sandbox probe FROM TO PORT[/tcp|/udp] [--timeout-ms 1000] [--dir DIR]
      Connect from pod FROM (ns/name) to pod TO (ns/name or IPv4) through FROM's network namespace.
      An IPv4 TO that is no sandbox pod's address is probed, and the verdict says what it is instead.
      Exit codes:
        0  allowed (N ms): connected (TCP) or echoed (UDP)
        1  denied (timeout N ms): no answer; a policy drop is silent, so this is what a drop looks like
        2  bad input: usage, no sandbox, FROM or TO not a pod, a protocol the prober does not speak
        3  refused or unreachable: a TCP RST or an ICMP error came back (nothing listens on the port,
           or no route/host at the address); the policies did not drop it

DIR defaults to $XDG_RUNTIME_DIR/kube-npm-sandbox, else /tmp/kube-npm-sandbox.
`;

interface Parsed {
  positional: string[];
  flags: Record<string, string>;
}

function parse(args: string[], known: readonly string[]): Parsed {
  const positional: string[] = [];
  const flags: Record<string, string> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith('--')) {
      positional.push(a);
      continue;
    }
    const eq = a.indexOf('=');
    const name = a.slice(2, eq < 0 ? undefined : eq);
    if (!known.includes(name)) throw new InputError(`unknown flag --${name}`);
    const v = eq < 0 ? args[++i] : a.slice(eq + 1);
    if (v === undefined || v === '') throw new InputError(`--${name} needs a value`);
    flags[name] = v;
  }
  return { positional, flags };
}

function intFlag(v: string | undefined, name: string, min: number, max: number): number | undefined {
  if (v === undefined) return undefined;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min || n > max) throw new InputError(`--${name} must be an integer in ${min}..${max}, not "${v}"`);
  return n;
}

export function parsePortSpec(s: string): { port: number; protocol: 'TCP' | 'UDP' } {
  const m = /^(\d{1,5})(?:\/(tcp|udp|sctp))?$/i.exec(s);
  const port = m ? Number(m[1]) : NaN;
  if (!m || port < 1 || port > 65535) throw new InputError(`port must be PORT, PORT/tcp or PORT/udp, not "${s}"`);
  const proto = (m[2] ?? 'tcp').toUpperCase();
  if (proto === 'SCTP') throw new InputError('the sandbox prober speaks TCP and UDP only');
  return { port, protocol: proto as 'TCP' | 'UDP' };
}

export async function runSandbox(args: string[], io: CliIO): Promise<number> {
  const [sub, ...rest] = args;
  try {
    switch (sub) {
      case 'up': {
        const p = parse(rest, ['nodes', 'dir', 'metrics-port']);
        if (p.positional.length) throw new InputError(`unexpected argument "${p.positional[0]}"`);
        if (process.getuid?.() !== 0) throw new InputError('the sandbox needs root (network namespaces, iptables)');
        const { sandboxUp } = await import('../sandbox/supervisor.js');
        const nodes = intFlag(p.flags.nodes, 'nodes', 1, 50);
        const metricsPort = intFlag(p.flags['metrics-port'], 'metrics-port', 1024, 65000);
        return await sandboxUp({ ...(p.flags.dir ? { dir: p.flags.dir } : {}), ...(nodes ? { nodes } : {}), ...(metricsPort ? { metricsPort } : {}) }, io);
      }
      case 'down': {
        const p = parse(rest, ['dir']);
        if (p.positional.length) throw new InputError(`unexpected argument "${p.positional[0]}"`);
        const { sandboxDown } = await import('../sandbox/supervisor.js');
        return await sandboxDown({ ...(p.flags.dir ? { dir: p.flags.dir } : {}) }, io);
      }
      case 'probe': {
        const p = parse(rest, ['dir', 'timeout-ms']);
        const [from, to, portSpec, ...extra] = p.positional;
        if (!from || !to || !portSpec || extra.length) throw new InputError('usage: kube-npm sandbox probe FROM TO PORT[/tcp|/udp]');
        const { port, protocol } = parsePortSpec(portSpec);
        const { sandboxProbe } = await import('../sandbox/supervisor.js');
        const timeoutMs = intFlag(p.flags['timeout-ms'], 'timeout-ms', 1, 60_000) ?? 1000;
        return await sandboxProbe({ ...(p.flags.dir ? { dir: p.flags.dir } : {}), from, to, port, protocol, timeoutMs }, io);
      }
      case undefined:
      case 'help':
      case '--help':
      case '-h':
        io.stdout(SANDBOX_USAGE);
        return sub === undefined ? 2 : 0;
      default:
        throw new InputError(`unknown sandbox command "${sub}"`);
    }
  } catch (err) {
    if (err instanceof InputError) {
      io.stderr(`error: ${err.message}\n${sub === 'probe' || sub === 'up' || sub === 'down' ? '' : SANDBOX_USAGE}`);
      return 2;
    }
    throw err;
  }
}

// Standalone entry (until main.ts dispatches `sandbox`): `node sandbox.js [sandbox] up ...`.
const self = process.argv[1];
if (self && import.meta.url === pathToFileURL(realpathSync(self)).href) {
  const argv = process.argv.slice(2);
  if (argv[0] === 'sandbox') argv.shift();
  const io: CliIO = { stdout: (s) => void process.stdout.write(s), stderr: (s) => void process.stderr.write(s) };
  runSandbox(argv, io).then(
    (code) => {
      process.exitCode = code;
    },
    (err: unknown) => {
      process.stderr.write(`kube-npm sandbox: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
      process.exitCode = 1;
    },
  );
}
