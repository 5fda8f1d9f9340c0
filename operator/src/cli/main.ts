#!/usr/bin/env node
/**
 * kube-npm: flags and wiring only. Each subcommand lives in its own module.
 */
import { runDebug } from './debug.js';
import { runTranslate, type CliIO } from './translate.js';

const USAGE = `kube-npm: Kubernetes NetworkPolicy manager (ipset + iptables)

Usage:
  kube-npm translate -f FILE [-f FILE ...] [-o yaml|json]
      Namespaces, Pods and NetworkPolicies -> the NpmRuleSet / NpmIPSet objects the operator writes.
  kube-npm operator [--kubeconfig F] [--metrics-bind-address :10091] [--metrics-secure=false] [--metrics-cert-dir D]
                    [--health-probe-bind-address :10092] [--leader-elect=false] [--leader-election-namespace NS]
                    [--agent-lease-namespace NS]
      Watch NetworkPolicies, Pods and Namespaces; write NpmRuleSets / NpmIPSets and their status.
      Metrics are HTTPS with TokenReview + SubjectAccessReview unless --metrics-secure=false.
  kube-npm agent --node-name NAME [--kubeconfig F] [--metrics-bind-address :10091] [--metrics-secure=false]
                 [--metrics-cert-dir D] [--health-probe-bind-address :10092] [--backend B] [--resync-seconds 60]
                 [--pod-startup strict|open] [--pod-cidr CIDR[,CIDR]] [--lease-namespace NS] [--lease-duration 30] [--netns NS]
      Node agent daemon: converge this node's kernel to the NpmRuleSets; report in NpmNode NAME.
  kube-npm agent --once --node-name NAME -f FILE [--dry-run] [--allow-empty] [--backend auto|nft|legacy]
      Converge this network namespace's ipsets and iptables to FILE (a List from translate). Invalid
      input writes nothing (exit 2); a FILE without NpmRuleSets needs --allow-empty (no policy meant).
  kube-npm agent --cleanup [--backend auto|nft|legacy]
      Remove every ipset, chain and hook rule kube-npm owns here.
  kube-npm sandbox up [--nodes 2] [--dir DIR] | down [--dir DIR] | probe NS/POD NS/POD PORT[/tcp|/udp]
      A local cluster of network namespaces with a real API server, the operator and agents.
  kube-npm debug trace --from NS/POD|IP --to NS/POD|IP [--port N[/tcp|/udp|/sctp]] [--kubeconfig F] [--context C]
  kube-npm debug trace -f FILE... --from NS/POD|IP --to NS/POD|IP [--port N[/proto]]
      Explain whether a connection is allowed, by which policy and rule, naming the pods: from the live
      cluster's NpmRuleSets (with each policy's Programmed state), or from objects in files.
      Exit 0 allowed, 1 denied, 2 bad input, 3 the cluster could not be read.
`;

export async function main(argv: string[], io: CliIO): Promise<number> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'translate':
      return runTranslate(rest, io);
    case 'debug':
      return runDebug(rest, io);
    case 'sandbox': {
      const { runSandbox } = await import('./sandbox.js');
      return runSandbox(rest, io);
    }
    case 'operator': {
      const { runOperator } = await import('./operator.js');
      return runOperator(rest, io);
    }
    case 'agent': {
      const { runAgent } = await import('./agent.js');
      return runAgent(rest, io);
    }
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      io.stdout(USAGE);
      return cmd === undefined ? 2 : 0;
    default:
      io.stderr(`unknown command "${cmd}"\n${USAGE}`);
      return 2;
  }
}

const io: CliIO = { stdout: (s) => void process.stdout.write(s), stderr: (s) => void process.stderr.write(s) };
main(process.argv.slice(2), io).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`kube-npm: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exitCode = 1;
  },
);
