/**
 * `kube-npm debug trace -f FILE... --from POD|IP --to POD|IP [--port 80] [--protocol TCP]`:
 * explains, with the rule walker, whether a connection is allowed and by which policy and rule.
 * FILE holds cluster objects (Namespaces, Pods, NetworkPolicies: translated first) and/or the
 * NpmRuleSet / NpmIPSet objects themselves (`kubectl get nrs,nips -A -o yaml`).
 */
import { RuleWalker, explain } from '../debug/trace.js';
import type { Protocol } from '../api/types.js';
import { parseIPv4 } from '../translate/cidr.js';
import { InputError, readArgs } from './load.js';
import { loadCluster, type CliIO } from './translate.js';

export function runDebug(args: string[], io: CliIO): number {
  const [sub, ...rest] = args;
  if (sub !== 'trace') {
    io.stderr('usage: kube-npm debug trace -f FILE... --from NS/POD|IP --to NS/POD|IP [--port N] [--protocol TCP|UDP|SCTP]\n');
    return 2;
  }
  try {
    const files: string[] = [];
    let from = '';
    let to = '';
    let port = 80;
    let protocol: Protocol = 'TCP';
    readArgs(rest, (a, v) => {
      if (a === '-f') files.push(v());
      else if (a === '--from') from = v();
      else if (a === '--to') to = v();
      else if (a === '--port') port = Number(v());
      else if (a === '--protocol') protocol = v().toUpperCase() as Protocol;
      else throw new InputError(`unknown argument "${a}"`);
    });
    if (!files.length || !from || !to) throw new InputError('need -f FILE, --from and --to');
    if (!Number.isInteger(port) || port < 1 || port > 65535) throw new InputError('--port must be 1-65535');
    if (!['TCP', 'UDP', 'SCTP'].includes(protocol)) throw new InputError('--protocol must be TCP, UDP or SCTP');
    const { engine, loaded, errors } = loadCluster(files, { stdout: io.stdout, stderr: () => undefined });
    // A verdict over input the API server would refuse explains a cluster that cannot exist.
    if (errors.length) throw new InputError(`invalid input:\n${errors.map((e) => `  ${e}`).join('\n')}`);
    const given = loaded.map((l) => l.object).filter((o) => o.kind === 'NpmRuleSet' || o.kind === 'NpmIPSet');
    const walker = new RuleWalker([...engine.all(), ...given]);
    const ipOf = (who: string): string => {
      if (parseIPv4(who) !== undefined) return who;
      const [ns, name] = who.includes('/') ? who.split('/') : ['default', who];
      const pod = loaded.find((l) => {
        const m = (l.object.metadata ?? {}) as { name?: string; namespace?: string };
        return l.object.kind === 'Pod' && m.name === name && (m.namespace ?? 'default') === ns;
      });
      const ip = (pod?.object.status as { podIP?: string } | undefined)?.podIP;
      if (!ip) throw new InputError(`no Pod ${ns}/${name} with status.podIP in the input`);
      return ip;
    };
    const c = { src: ipOf(from), dst: ipOf(to), port, protocol };
    const verdict = walker.verdict(c);
    io.stdout(`${explain(c, verdict)}\n`);
    return verdict.allowed ? 0 : 1;
  } catch (err) {
    if (err instanceof InputError) {
      io.stderr(`error: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
}
