/**
 * The upstream NetworkPolicy e2e model (namespaces x,y,z x pods a,b,c) and its cases, copied from
 * the Kubernetes e2e tests into test/fixtures/conformance/upstream-e2e.json. Shared by the
 * translation-level conformance test (rule walker) and the packet-level one (real kernel).
 */
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { ClusterSnapshot, NetworkPolicy, Namespace, Pod } from '../../operator/src/translate/k8s.js';

export type Proto = 'TCP' | 'UDP' | 'SCTP';

export interface Probe {
  port: number;
  protocol: Proto;
  deny: [string, string][];
}

export type Action =
  | { createPolicy: NetworkPolicy }
  | { updatePolicy: NetworkPolicy }
  | { deletePolicy: { namespace: string; name: string } }
  | { deleteAllPolicies: Record<string, never> }
  | { setPodLabels: { pod: string; labels: Record<string, string>; mode: 'merge' | 'replace' } }
  | { setNamespaceLabels: { namespace: string; labels: Record<string, string>; mode: 'merge' | 'replace' } };

export interface Step {
  actions: Action[];
  expected: Probe[];
}

export interface Case {
  id: string;
  suite: string;
  description: string;
  requires: string[];
  policies: NetworkPolicy[];
  steps: Step[];
}

export const NAMESPACES = ['x', 'y', 'z'];
export const POD_NAMES = ['a', 'b', 'c'];
export const PODS = NAMESPACES.flatMap((ns) => POD_NAMES.map((p) => `${ns}/${p}`));

/** Pod IPs the cases' ipBlocks are computed from; node k owns 10.244.k.0/24. */
export const POD_IPS: Record<string, string> = {
  'x/a': '10.244.1.10',
  'x/b': '10.244.1.11',
  'x/c': '10.244.1.12',
  'y/a': '10.244.1.13',
  'y/b': '10.244.2.17',
  'y/c': '10.244.2.40',
  'z/a': '10.244.2.5',
  'z/b': '10.244.2.21',
  'z/c': '10.244.2.20',
};

export function nodeOf(pod: string): number {
  return Number(POD_IPS[pod]!.split('.')[2]);
}

export function loadCases(): Case[] {
  const path = fileURLToPath(new URL('../fixtures/conformance/upstream-e2e.json', import.meta.url));
  return JSON.parse(readFileSync(path, 'utf8')) as Case[];
}

export const PORTS: { port: number; protocol: Proto }[] = [80, 81].flatMap((port) =>
  (['TCP', 'UDP', 'SCTP'] as Proto[]).map((protocol) => ({ port, protocol })),
);

/** Replaces {ipBlockOfPod, prefix} placeholders with the CIDR they stand for. */
export function resolvePlaceholders<T>(value: T): T {
  if (Array.isArray(value)) return value.map(resolvePlaceholders) as T;
  if (value && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    if (typeof o.ipBlockOfPod === 'string') {
      const ip = POD_IPS[o.ipBlockOfPod];
      if (!ip) throw new Error(`unknown pod ${o.ipBlockOfPod}`);
      const prefix = Number(o.prefix);
      const n = ip.split('.').reduce((acc, x) => acc * 256 + Number(x), 0);
      const mask = prefix === 0 ? 0 : (0xffffffff << (32 - prefix)) >>> 0;
      const base = (n & mask) >>> 0;
      return `${[base >>> 24, (base >>> 16) & 255, (base >>> 8) & 255, base & 255].join('.')}/${prefix}` as T;
    }
    return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, resolvePlaceholders(v)])) as T;
  }
  return value;
}

/** The model cluster's state as the cases mutate it. */
export class Model {
  readonly nsLabels = new Map<string, Record<string, string>>();
  readonly podLabels = new Map<string, Record<string, string>>();
  readonly policies = new Map<string, NetworkPolicy>();
  /** Objects changed by the last apply(), for an incremental consumer. */
  changed: { namespaces: string[]; pods: string[]; policies: string[] } = { namespaces: [], pods: [], policies: [] };

  constructor() {
    for (const ns of NAMESPACES) this.nsLabels.set(ns, { ns, 'kubernetes.io/metadata.name': ns });
    for (const p of PODS) this.podLabels.set(p, { pod: p.split('/')[1]! });
  }

  apply(actions: Action[]): void {
    this.changed = { namespaces: [], pods: [], policies: [] };
    for (const a of actions) {
      if ('createPolicy' in a) this.putPolicy(a.createPolicy);
      else if ('updatePolicy' in a) this.putPolicy(a.updatePolicy);
      else if ('deletePolicy' in a) this.dropPolicy(`${a.deletePolicy.namespace}/${a.deletePolicy.name}`);
      else if ('deleteAllPolicies' in a) for (const k of [...this.policies.keys()]) this.dropPolicy(k);
      else if ('setPodLabels' in a) {
        const { pod, labels, mode } = a.setPodLabels;
        this.podLabels.set(pod, mode === 'merge' ? { ...this.podLabels.get(pod), ...labels } : { ...labels });
        this.changed.pods.push(pod);
      } else if ('setNamespaceLabels' in a) {
        const { namespace, labels, mode } = a.setNamespaceLabels;
        const next = mode === 'merge' ? { ...this.nsLabels.get(namespace), ...labels } : { ...labels };
        next['kubernetes.io/metadata.name'] = namespace;
        this.nsLabels.set(namespace, next);
        this.changed.namespaces.push(namespace);
      } else throw new Error(`unknown action ${JSON.stringify(a)}`);
    }
  }

  private putPolicy(np: NetworkPolicy): void {
    const resolved = resolvePlaceholders(np);
    const key = `${resolved.metadata.namespace}/${resolved.metadata.name}`;
    this.policies.set(key, resolved);
    this.changed.policies.push(key);
  }

  private dropPolicy(key: string): void {
    this.policies.delete(key);
    this.changed.policies.push(key);
  }

  namespace(ns: string): Namespace {
    return { apiVersion: 'v1', kind: 'Namespace', metadata: { name: ns, labels: { ...this.nsLabels.get(ns) } } };
  }

  pod(key: string): Pod {
    const [ns, name] = key.split('/') as [string, string];
    return {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace: ns, labels: { ...this.podLabels.get(key) } },
      spec: {
        nodeName: `n${nodeOf(key)}`,
        containers: PORTS.map(({ port, protocol }) => ({
          name: `cont-${port}-${protocol.toLowerCase()}`,
          ports: [{ containerPort: port, protocol, name: `serve-${port}-${protocol.toLowerCase()}` }],
        })),
      },
      status: { phase: 'Running', podIP: POD_IPS[key]!, podIPs: [{ ip: POD_IPS[key]! }] },
    };
  }

  snapshot(): ClusterSnapshot {
    return {
      namespaces: NAMESPACES.map((ns) => this.namespace(ns)),
      pods: PODS.map((p) => this.pod(p)),
      policies: [...this.policies.values()],
    };
  }
}

/** Expected verdict of every ordered pair of distinct pods for one probe. */
export function expectedMatrix(probe: Probe): Map<string, boolean> {
  const denied = new Set(probe.deny.map(([a, b]) => `${a}->${b}`));
  const out = new Map<string, boolean>();
  for (const from of PODS) for (const to of PODS) if (from !== to) out.set(`${from}->${to}`, !denied.has(`${from}->${to}`));
  return out;
}
