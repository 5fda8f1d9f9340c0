/** Tiny flag parser shared by the daemon subcommands: --name value, --name=value, --bool. */
import { KubeConfig } from '@kubernetes/client-node';
import { InputError } from './load.js';

export function parseFlags(args: string[], spec: Record<string, 'string' | 'bool'>): Record<string, string | boolean> {
  const out: Record<string, string | boolean> = {};
  for (let i = 0; i < args.length; i++) {
    const a = args[i]!;
    if (!a.startsWith('--')) throw new InputError(`unexpected argument "${a}"`);
    const eq = a.indexOf('=');
    const name = a.slice(2, eq < 0 ? undefined : eq);
    const kind = spec[name];
    if (!kind) throw new InputError(`unknown flag --${name}`);
    if (kind === 'bool') out[name] = eq < 0 ? true : a.slice(eq + 1) !== 'false';
    else {
      const v = eq < 0 ? args[++i] : a.slice(eq + 1);
      if (v === undefined) throw new InputError(`--${name} needs a value`);
      out[name] = v;
    }
  }
  return out;
}

/** "host:port" or ":port" -> { host, port }. */
export function parseAddress(s: string, flag: string): { host: string; port: number } {
  const i = s.lastIndexOf(':');
  const port = Number(s.slice(i + 1));
  if (i < 0 || !Number.isInteger(port) || port < 0 || port > 65535) throw new InputError(`${flag} must be host:port, not "${s}"`);
  return { host: s.slice(0, i) || '0.0.0.0', port };
}

export function loadKubeConfig(path: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  return kc;
}
