/**
 * Parses `ipset list -o save` (same format as `ipset save`), keeping only sets we own. Pure.
 *
 * The header is read whole, because a set of ours that someone else created (or an older version
 * left) with another type, family or semantics must be recognised as different: `create X hash:ip
 * family inet hashsize 1024 maxelem 65536 timeout 0 bucketsize 12 initval 0x...`. Every header
 * option besides the ones we write or the kernel adds by itself (family, hashsize, maxelem,
 * bucketsize, initval) is kept in `options`; ipset/plan.ts decides which of them matter.
 */
import { isOwned } from '../../api/names.js';
import type { SetType } from '../../api/types.js';

export interface ActualSet {
  name: string;
  type: SetType | string;
  family: string;
  hashsize: number;
  maxelem: number;
  /**
   * Header options beyond family/hashsize/maxelem/bucketsize/initval, as printed ("timeout 0",
   * "counters", "netmask 24"...). Empty for the sets we create.
   */
  options: readonly string[];
  /** Member (kernel print form, with " nomatch" when set) by memberKey. Never mutated once parsed (may be shared with a DesiredSet). */
  members: ReadonlyMap<string, string>;
}

export type ActualSets = Map<string, ActualSet>;

/** Header keywords that take a value (ipset 7.x `list -o save`); any other word is a flag. */
const VALUED = new Set(['family', 'hashsize', 'maxelem', 'bucketsize', 'initval', 'timeout', 'netmask', 'markmask', 'size', 'range', 'bitmask']);
/** Written by us or added by the kernel on its own: not an option of the set's semantics. */
const OURS = new Set(['family', 'hashsize', 'maxelem', 'bucketsize', 'initval']);

/** The header words after the type, split into keyword -> value (flags map to ''). */
function headerOptions(words: readonly string[]): { values: Map<string, string>; options: string[] } {
  const values = new Map<string, string>();
  const options: string[] = [];
  for (let i = 0; i < words.length; i++) {
    const k = words[i] as string;
    if (!k) continue;
    const v = VALUED.has(k) ? (words[++i] ?? '') : '';
    values.set(k, v);
    if (!OURS.has(k)) options.push(v ? `${k} ${v}` : k);
  }
  return { values, options };
}

export function parseIpsetSave(text: string): ActualSets {
  const sets: ActualSets = new Map();
  const members = new Map<string, Map<string, string>>();
  for (const line of text.split('\n')) {
    if (line.startsWith('create ')) {
      const f = line.split(/\s+/);
      const name = f[1] ?? '';
      if (!isOwned(name)) continue;
      const { values, options } = headerOptions(f.slice(3));
      const m = new Map<string, string>();
      members.set(name, m);
      sets.set(name, {
        name,
        type: f[2] ?? '',
        family: values.get('family') ?? 'inet',
        hashsize: Number(values.get('hashsize') ?? 0),
        maxelem: Number(values.get('maxelem') ?? 0),
        options,
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
