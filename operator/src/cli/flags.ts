/**
 * Tiny flag parser shared by the daemon subcommands: --name value, --name=value, --bool; and the
 * operator's KubeConfig. The agent imports none of this (it would load @kubernetes/client-node):
 * it parses addresses with metrics/serve.ts parseBindAddress and connects with framework/client.ts.
 */
import { KubeConfig } from '@kubernetes/client-node';
import { parseBindAddress } from '../metrics/serve.js';
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
  try {
    return parseBindAddress(s, flag);
  } catch (err) {
    throw new InputError(err instanceof Error ? err.message : String(err));
  }
}

export function loadKubeConfig(path: string | undefined): KubeConfig {
  const kc = new KubeConfig();
  if (path) kc.loadFromFile(path);
  else kc.loadFromDefault();
  return kc;
}
