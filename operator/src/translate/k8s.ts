/**
 * The parts of the core Kubernetes objects the translator reads. Plain data, so that files a user
 * wrote, client-node objects and test tables all fit without conversion.
 */

export interface LabelSelectorRequirement {
  key: string;
  operator: string;
  values?: string[];
}

export interface LabelSelector {
  matchLabels?: Record<string, string>;
  matchExpressions?: LabelSelectorRequirement[];
}

export interface Meta {
  name?: string;
  namespace?: string;
  uid?: string;
  generation?: number;
  labels?: Record<string, string>;
  resourceVersion?: string;
}

export interface IPBlock {
  cidr: string;
  except?: string[];
}

export interface NetworkPolicyPeer {
  podSelector?: LabelSelector;
  namespaceSelector?: LabelSelector;
  ipBlock?: IPBlock;
}

export interface NetworkPolicyPort {
  protocol?: string;
  port?: number | string;
  endPort?: number;
}

export interface NetworkPolicyIngressRule {
  from?: NetworkPolicyPeer[];
  ports?: NetworkPolicyPort[];
}

export interface NetworkPolicyEgressRule {
  to?: NetworkPolicyPeer[];
  ports?: NetworkPolicyPort[];
}

export interface NetworkPolicy {
  apiVersion?: string;
  kind?: string;
  metadata: Meta;
  spec: {
    podSelector?: LabelSelector;
    policyTypes?: string[];
    ingress?: NetworkPolicyIngressRule[];
    egress?: NetworkPolicyEgressRule[];
  };
}

export interface ContainerPort {
  name?: string;
  containerPort: number;
  protocol?: string;
}

export interface Pod {
  apiVersion?: string;
  kind?: string;
  metadata: Meta;
  spec?: {
    nodeName?: string;
    hostNetwork?: boolean;
    containers?: { name?: string; ports?: ContainerPort[] }[];
    initContainers?: { name?: string; ports?: ContainerPort[]; restartPolicy?: string }[];
  };
  status?: {
    phase?: string;
    podIP?: string;
    podIPs?: { ip: string }[];
  };
}

/** A pod's addresses as its status gives them: podIP, then each podIPs entry (podIP usually repeats there). */
export function podAddresses(p: Pod | undefined): string[] {
  return [p?.status?.podIP, ...(p?.status?.podIPs ?? []).map((x) => x.ip)].filter((x): x is string => !!x);
}

export interface Namespace {
  apiVersion?: string;
  kind?: string;
  metadata: Meta;
}

/** Everything the full translation reads. */
export interface ClusterSnapshot {
  namespaces: Namespace[];
  pods: Pod[];
  policies: NetworkPolicy[];
}

export const NAMESPACE_NAME_LABEL = 'kubernetes.io/metadata.name';
