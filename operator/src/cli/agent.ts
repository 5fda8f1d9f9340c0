/**
 * `kube-npm agent --once | --cleanup`: flags only; the converge core is operator/src/agent.
 */
import { InputError, readArgs } from './load.js';
import type { CliIO } from './translate.js';

export async function runAgent(args: string[], io: CliIO): Promise<number> {
  let once = false;
  let cleanup = false;
  let dryRun = false;
  let allowEmpty = false;
  let nodeName = '';
  let file: string | undefined;
  let backend: 'auto' | 'nft' | 'legacy' = 'auto';
  const daemon: Record<string, string> = {};
  try {
    readArgs(args, (a, v) => {
      if (a === '--once') once = true;
      else if (a === '--cleanup') cleanup = true;
      else if (a === '--dry-run') dryRun = true;
      else if (a === '--allow-empty') allowEmpty = true;
      else if (a === '--node-name') nodeName = v();
      else if (a === '-f' || a === '--filename') file = v();
      else if (a === '--backend') {
        const b = v();
        if (b !== 'auto' && b !== 'nft' && b !== 'legacy') throw new InputError('--backend must be auto, nft or legacy');
        backend = b;
      } else if (a === '--pod-startup') {
        const m = v();
        if (m !== 'strict' && m !== 'open') throw new InputError('--pod-startup must be strict or open');
        daemon['pod-startup'] = m;
      } else if (['--pod-cidr', '--kubeconfig', '--metrics-bind-address', '--metrics-secure', '--metrics-cert-dir', '--health-probe-bind-address', '--resync-seconds', '--min-sync-interval-ms', '--netns', '--lease-namespace', '--lease-duration'].includes(a)) daemon[a.slice(2)] = v();
      else throw new InputError(`unknown argument "${a}"`);
    });
    if (daemon['lease-duration'] !== undefined && !(Number(daemon['lease-duration']) >= 3)) throw new InputError('--lease-duration must be a number of seconds >= 3');
    if (daemon['metrics-secure'] !== undefined && !['true', 'false'].includes(daemon['metrics-secure'])) throw new InputError('--metrics-secure must be true or false');
    if (once && (!file || !nodeName)) throw new InputError('--once needs --node-name NAME and -f FILE');
    if (!once && !cleanup) {
      nodeName ||= process.env.NODE_NAME ?? '';
      if (!nodeName) throw new InputError('the agent needs --node-name NAME (or NODE_NAME)');
    }
  } catch (err) {
    if (err instanceof InputError) {
      io.stderr(`error: ${err.message}\n`);
      return 2;
    }
    throw err;
  }
  if (!once && !cleanup) {
    const { runDaemon } = await import('./agent-daemon.js');
    return runDaemon({ nodeName, backend, ...daemon }, io);
  }
  const { runOnce } = await import('../agent/once.js');
  const r = await runOnce({ ...(file ? { file } : {}), nodeName: nodeName || 'local', dryRun, cleanup, allowEmpty, backend, log: (s) => io.stderr(`${s}\n`) });
  (r.exitCode === 0 ? io.stdout : io.stderr)(`${r.summary}\n`);
  return r.exitCode;
}
