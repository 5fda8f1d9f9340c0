/** Parses `ipset list -o save` (same format as `ipset save`), keeping only sets we own. Pure. */
import { isOwned } from '../../api/names.js';
import type { SetType } from '../../api/types.js';

export interface ActualSet {
  name: string;
  type: SetType | string;
  family: string;
  hashsize: number;
  maxelem: number;
  /** Member (kernel print form, with " nomatch" when set) by memberKey. Never mutated once parsed (may be shared with a DesiredSet). */
  members: ReadonlyMap<string, string>;
}

export type ActualSets = Map<string, ActualSet>;

export function parseIpsetSave(text: string): ActualSets {
  const sets: ActualSets = new Map();
  const members = new Map<string, Map<string, string>>();
  for (const line of text.split('\n')) {
    if (line.startsWith('create ')) {
      const f = line.split(/\s+/);
      const name = f[1] ?? '';
      if (!isOwned(name)) continue;
      const opt = (k: string): string | undefined => {
        const i = f.indexOf(k);
        return i >= 0 ? f[i + 1] : undefined;
      };
      const m = new Map<string, string>();
      members.set(name, m);
      sets.set(name, {
        name,
        type: f[2] ?? '',
        family: opt('family') ?? 'inet',
        hashsize: Number(opt('hashsize') ?? 0),
        maxelem: Number(opt('maxelem') ?? 0),
        members: m,
      });
    } else if (line.startsWith('add ')) {
      const sp = line.indexOf(' ', 4);
      const name = line.slice(4, sp);
      const set = sets.get(name);
      const into = members.get(name);
      if (!set || !into || sp < 0) continue;
      const member = line.slice(sp + 1).trim();
      const key = set.type === 'hash:net' && member.endsWith(' nomatch') ? member.slice(0, -8) : member;
      into.set(key, member);
    }
  }
  return sets;
}
