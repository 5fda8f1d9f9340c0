/**
 * `kube-npm debug trace --from NS/POD|IP --to NS/POD|IP [--port 80[/tcp]] [--protocol TCP]`, with
 *  - `[--kubeconfig K] [--context C]` (the default): the live cluster. Pods are looked up by name (or
 *    an address by its pod), and the verdict walks the NpmRuleSets and NpmIPSets the operator wrote
 *    (debug/live.ts), with each isolating policy's Programmed state;
 *  - `-f FILE...`: cluster objects in files (Namespaces, Pods, NetworkPolicies: translated first)
 *    and/or NpmRuleSet / NpmIPSet objects (`kubectl get nrs,nips -A -o yaml`).
 * Exit 0 allowed, 1 denied, 2 bad input, 3 the cluster could not be read.
 */
import { parseArgs } from 'node:util';
import { RuleWalker, explain, type Connection } from '../debug/trace.js';
import { EndpointError, loadPolicyObjects, programmedNotes, resolveEndpoint, type Endpoint } from '../debug/live.js';
import type { Protocol } from '../api/types.js';
import { KubeClient, loadClientConfig } from '../framework/client.js';
import { parseIPv4 } from '../translate/cidr.js';
import { InputError } from './load.js';
import { loadCluster, type CliIO } from './translate.js';

const USAGE =
  'usage: kube-npm debug trace --from NS/POD|IP --to NS/POD|IP [--port N[/tcp|/udp|/sctp]] [--protocol TCP|UDP|SCTP]\n' +
  '                            [--kubeconfig FILE] [--context NAME]   (the live cluster: default)\n' +
  '                            | -f FILE...                         (objects in files)\n' +
  'exit: 0 allowed, 1 denied, 2 bad input, 3 the cluster could not be read\n';

const PROTOCOLS: readonly Protocol[] = ['TCP', 'UDP', 'SCTP'];

/** "80", "80/tcp" with an optional --protocol (which must agree) -> port and protocol. */
export function parsePort(port: string, protocol: string | undefined): { port: number; protocol: Protocol } {
  const m = /^(\d+)(?:\/([a-zA-Z]+))?$/.exec(port);
  if (!m) throw new InputError(`--port "${port}": expected N or N/tcp, N/udp, N/sctp`);
  const n = Number(m[1]);
  if (!Number.isInteger(n) || n < 1 || n > 65535) throw new InputError(`--port "${port}": the port must be 1-65535`);
  const fromPort = m[2]?.toUpperCase();
  const fromFlag = protocol?.toUpperCase();
  if (fromPort && fromFlag && fromPort !== fromFlag) throw new InputError(`--port says ${fromPort} but --protocol says ${fromFlag}`);
  const p = (fromPort ?? fromFlag ?? 'TCP') as Protocol;
  if (!PROTOCOLS.includes(p)) throw new InputError(`protocol "${p}": expected TCP, UDP or SCTP`);
  return { port: n, protocol: p };
}

function named(e: Endpoint): string {
  return e.pod ? `${e.pod} (${e.ip}${e.node ? ` on ${e.node}` : ''})` : `${e.ip} (no pod)`;
}

export async function runDebug(args: string[], io: CliIO): Promise<number> {
  const [sub, ...rest] = args;
  if (sub !== 'trace') {
    io.stderr(USAGE);
    return 2;
  }
  let opts: { from?: string; to?: string; port: string; protocol?: string; kubeconfig?: string; context?: string; file?: string[] };
  let conn: Connection;
  try {
    const { values, positionals } = parseArgs({
      args: rest,
      options: {
        from: { type: 'string' },
        to: { type: 'string' },
        port: { type: 'string', default: '80' },
        protocol: { type: 'string' },
        kubeconfig: { type: 'string' },
        context: { type: 'string' },
        file: { type: 'string', short: 'f', multiple: true },
      },
      strict: true,
      allowPositionals: true,
    });
    if (positionals.length) throw new InputError(`unexpected argument "${positionals[0]}"`);
    opts = values;
    if (!opts.from || !opts.to) throw new InputError('need --from and --to');
    if (opts.file?.length && (opts.kubeconfig || opts.context)) throw new InputError('-f reads files; --kubeconfig/--context read the live cluster: give one or the other');
    const { port, protocol } = parsePort(opts.port, opts.protocol);
    conn = { src: '', dst: '', port, protocol };
  } catch (err) {
    // util.parseArgs throws TypeErrors with ERR_PARSE_ARGS_* codes for unknown or malformed flags.
    const msg = err instanceof InputError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? (err as Error).message : undefined;
    if (msg === undefined) throw err;
    io.stderr(`error: ${msg}\n${USAGE}`);
    return 2;
  }
  if (opts.file?.length) return traceFiles(opts.file, opts.from!, opts.to!, conn, io);
  return traceLive(opts, conn, io);
}

async function traceLive(opts: { from?: string; to?: string; kubeconfig?: string; context?: string }, conn: Connection, io: CliIO): Promise<number> {
  let client: KubeClient;
  try {
    const cfg = await loadClientConfig({ ...(opts.kubeconfig ? { kubeconfig: opts.kubeconfig } : {}), ...(opts.context ? { context: opts.context } : {}) });
    client = new KubeClient(cfg, { timeoutMs: 30_000 });
  } catch (err) {
    io.stderr(`error: no cluster to read: ${err instanceof Error ? err.message : String(err)}\n`);
    return 2;
  }
  try {
    const [from, to, objects] = await Promise.all([resolveEndpoint(client, opts.from!), resolveEndpoint(client, opts.to!), loadPolicyObjects(client)]);
    const c = { ...conn, src: from.ip, dst: to.ip };
    const verdict = new RuleWalker(objects).verdict(c);
    const byIp = new Map([from, to].map((e) => [e.ip, named(e)]));
    const notes = programmedNotes(objects);
    io.stdout(`${explain(c, verdict, { endpoint: (ip) => byIp.get(ip) ?? ip, policyNote: (p) => notes.get(p) })}\n`);
    return verdict.allowed ? 0 : 1;
  } catch (err) {
    if (err instanceof EndpointError) {
      io.stderr(`error: ${err.message}\n`);
      return 2;
    }
    io.stderr(`error: reading the cluster: ${err instanceof Error ? err.message : String(err)}\n`);
    return 3;
  } finally {
    client.close();
  }
}

function traceFiles(files: string[], from: string, to: string, conn: Connection, io: CliIO): number {
  try {
    const { engine, loaded, errors } = loadCluster(files, { stdout: io.stdout, stderr: () => undefined });
    // A verdict over input the API server would refuse explains a cluster that cannot exist.
    if (errors.length) throw new InputError(`invalid input:\n${errors.map((e) => `  ${e}`).join('\n')}`);
    const given = loaded.map((l) => l.object).filter((o) => o.kind === 'NpmRuleSet' || o.kind === 'NpmIPSet');
    const walker = new RuleWalker([...engine.all(), ...given]);
    const pods = loaded.filter((l) => l.object.kind === 'Pod').map((l) => l.object as { metadata?: { name?: string; namespace?: string }; status?: { podIP?: string } });
    const endpoint = (who: string): Endpoint => {
      if (parseIPv4(who) !== undefined) {
        const p = pods.find((x) => x.status?.podIP === who);
        return p ? { ip: who, pod: `${p.metadata?.namespace ?? 'default'}/${p.metadata?.name ?? ''}` } : { ip: who };
      }
      const [ns, name] = who.includes('/') ? who.split('/', 2) : ['default', who];
      const ip = pods.find((x) => x.metadata?.name === name && (x.metadata?.namespace ?? 'default') === ns)?.status?.podIP;
      if (!ip) throw new InputError(`no Pod ${ns}/${name} with status.podIP in the input`);
      return { ip, pod: `${ns}/${name}` };
    };
    const src = endpoint(from);
    const dst = endpoint(to);
    const c = { ...conn, src: src.ip, dst: dst.ip };
    const verdict = walker.verdict(c);
    const byIp = new Map([src, dst].map((e) => [e.ip, named(e)]));
    io.stdout(`${explain(c, verdict, { endpoint: (ip) => byIp.get(ip) ?? ip })}\n`);
    return verdict.allowed ? 0 : 1;
  } catch (err) {
    if (err instanceof InputError) {
      io.stderr(`error: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
}
