/**
 * The kubenpm.io/v1alpha1 API: NpmRuleSet (one per NetworkPolicy) and NpmIPSet (shared set members).
 *
 * Model
 *  - An NpmRuleSet records what one NetworkPolicy means for the kernel: the ipsets it references (by
 *    kernel name, with their meaning in words) and its chains with ordered, structured rules. It never
 *    holds pod-derived members: those change on every pod event and are shared by many policies.
 *  - Pod-derived members (selector sets, named-port sets) live in cluster-scoped NpmIPSet objects, one
 *    per kernel set, sharded when large (docs/adr/0001-where-set-members-live.md). ipBlock sets are
 *    policy-owned and static, so their members are inline in the NpmRuleSet.
 *  - These interfaces are checked against crds/*.yaml by test/unit/api/schema.test.ts: a field added
 *    here and not there (or the reverse) fails the test.
 */

export const GROUP = 'kubenpm.io';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;

export const RULESET_KIND = 'NpmRuleSet';
export const RULESET_PLURAL = 'npmrulesets';
export const IPSET_KIND = 'NpmIPSet';
export const IPSET_PLURAL = 'npmipsets';

/** Label put on every object kube-npm writes, so it can list exactly its own objects. */
export const MANAGED_BY_LABEL = 'app.kubernetes.io/managed-by';
export const MANAGED_BY_VALUE = 'kube-npm';
/** Label on NpmIPSet shards: the kernel set the shard belongs to. */
export const SET_LABEL = 'kubenpm.io/set';
/**
 * On an NpmIPSet shard: the operator asks every agent that programs it to acknowledge this version
 * (write its NpmNode `status.observed`) once applied. A new value asks; an unchanged one asks
 * nothing. Set only when a pod with the membership readiness gate waits for the change (ADR 0015).
 */
export const ACK_ANNOTATION = 'kubenpm.io/ack';
/** Pod condition type of the membership signal; a readiness gate of this type opts a pod in (ADR 0007). */
export const POD_CONDITION = 'kubenpm.io/PolicyProgrammed';

export type Direction = 'Ingress' | 'Egress';
export type Protocol = 'TCP' | 'UDP' | 'SCTP';
/** Kernel ipset types kube-npm uses. */
export type SetType = 'hash:ip' | 'hash:net' | 'hash:ip,port';
/**
 * What a set is built from: a pod selector in the policy's namespace (PodSelector), a peer whose
 * namespaceSelector picks the namespaces (NamespaceSelector, with or without a podSelector), a
 * named container port (NamedPort), or an ipBlock (IPBlock, members inline in the ruleset).
 */
export type SetKind = 'PodSelector' | 'NamespaceSelector' | 'NamedPort' | 'IPBlock';
export type IPFamily = 'IPv4' | 'IPv6';

export interface ObjectMeta {
  name: string;
  namespace?: string;
  uid?: string;
  generation?: number;
  resourceVersion?: string;
  labels?: Record<string, string>;
  annotations?: Record<string, string>;
  ownerReferences?: OwnerReference[];
  creationTimestamp?: string;
}

export interface OwnerReference {
  apiVersion: string;
  kind: string;
  name: string;
  uid: string;
  controller?: boolean;
  blockOwnerDeletion?: boolean;
}

/** A reference from a ruleset to a kernel ipset, with what it means. */
export interface SetRef {
  /** Kernel name (KNPM-S-...), within 31 characters. */
  name: string;
  type: SetType;
  kind: SetKind;
  family: IPFamily;
  /** What the set holds, in words: "pods with app=web in namespace prod". */
  meaning: string;
  /**
   * Inline members (ipBlock sets only: "10.0.0.0/16", "10.0.5.0/24 nomatch"). Absent for pod-derived
   * sets, whose members are in the NpmIPSet objects labelled kubenpm.io/set=<name>.
   */
  members?: string[];
}

/** One rule of a policy chain, in the structured form the agent renders to iptables arguments. */
export interface RuleMatch {
  /** The peer set: the source (ingress) or destination (egress) must be in it. Absent: any peer. */
  peerSet?: string;
  /** Absent: any protocol (and then no ports). */
  protocol?: Protocol;
  /** Destination port, or the first of a range. */
  port?: number;
  /** Last port of a range (inclusive); only with port. */
  endPort?: number;
  /** hash:ip,port set of (pod IP, protocol:port) pairs: resolves a named port on the destination pod. */
  namedPortSet?: string;
}

export interface Rule {
  /** What the rule allows, in words. Rendered (clamped) as the rule's iptables comment. */
  description: string;
  match: RuleMatch;
}

export interface Chain {
  /** Kernel chain name (KNPM-I-... / KNPM-E-...), within 28 characters. */
  name: string;
  direction: Direction;
  /** Set of the pods this chain guards (the policy's podSelector in its namespace). */
  targetSet: string;
  /** Which pods it guards, in words. */
  guards: string;
  /** Allow rules, in order. An empty list isolates the targets in this direction and allows nothing. */
  rules: Rule[];
}

export interface PolicySource {
  name: string;
  namespace: string;
  uid?: string;
  generation?: number;
}

export interface NpmRuleSetSpec {
  policy: PolicySource;
  /** policyTypes after defaulting. */
  policyTypes: Direction[];
  /**
   * policyTypes joined with commas ("Egress,Ingress"): the TYPES column of `kubectl get nrs` (a
   * column's jsonPath on the list prints a JSON array). Optional: rulesets written before it lack it.
   */
  policyTypesText?: string;
  /** Summary in words of what the policy selects and does. */
  summary: string;
  ipsets: SetRef[];
  chains: Chain[];
  /** Problems found while translating (the policy is then enforced fail-closed: isolate, allow none). */
  problems?: string[];
}

export interface Condition {
  type: string;
  status: 'True' | 'False' | 'Unknown';
  observedGeneration?: number;
  lastTransitionTime: string;
  reason: string;
  message: string;
}

export interface NodeProgress {
  node: string;
  generation?: number;
  error?: string;
}

/**
 * A valid part of the policy that allows nothing right now (a peer selecting no pod, a named port no
 * destination pod declares, an IPv6 ipBlock). It follows pods: written only when the list changes.
 */
export interface RuleWarning {
  /** Where, as `kubectl describe nrs` numbers rules: "ingress[0].from[1]", "egress[1].ports[0]". */
  rule: string;
  /** NoPeersSelected | NamedPortNotDeclared | IPv6NotEnforced (translate/policy.ts WARNING). */
  reason: string;
  message: string;
}

export interface NpmRuleSetStatus {
  observedGeneration?: number;
  conditions?: Condition[];
  /**
   * Absent when there is none (see RuleWarning; the Resolved condition sums them up). null only in
   * a status being written: the merge patch removes the list.
   */
  warnings?: RuleWarning[] | null;
  /** Counts shown by `kubectl get nrs`. */
  setCount?: number;
  ruleCount?: number;
  /** "n/N": nodes that applied the current generation / nodes that must. */
  nodesProgrammed?: string;
  nodes?: NodeProgress[];
}

export interface NpmRuleSet {
  apiVersion: typeof API_VERSION;
  kind: typeof RULESET_KIND;
  metadata: ObjectMeta;
  spec: NpmRuleSetSpec;
  status?: NpmRuleSetStatus;
}

export interface NpmIPSetSpec {
  /** Kernel set name this object holds members of. */
  setName: string;
  type: SetType;
  kind: SetKind;
  family: IPFamily;
  meaning: string;
  /** Shard index in [0, shardCount): the kernel set is the union of all shards' members. */
  shard: number;
  shardCount: number;
  /**
   * members.length: the MEMBERS column of `kubectl get nips` (a column cannot count a list). The
   * agent ignores it. Optional: shards written before it lack it.
   */
  memberCount?: number;
  /** Members in ipset syntax ("10.244.1.10", "10.244.1.10,tcp:8080"), sorted. */
  members: string[];
}

export interface NpmIPSet {
  apiVersion: typeof API_VERSION;
  kind: typeof IPSET_KIND;
  metadata: ObjectMeta;
  spec: NpmIPSetSpec;
}

export type NpmObject = NpmRuleSet | NpmIPSet;

export interface KubeList<T> {
  apiVersion: 'v1';
  kind: 'List';
  items: T[];
}

export const NODE_KIND = 'NpmNode';
export const NODE_PLURAL = 'npmnodes';

/** What one node's agent applied: the per-node report the operator aggregates into NpmRuleSet status. */
export interface AppliedRuleSet {
  namespace: string;
  name: string;
  /** metadata.generation of the NpmRuleSet the agent programmed. */
  generation: number;
  /**
   * metadata.uid of that NpmRuleSet. A policy deleted and re-created under the same name starts again
   * at generation 1: without the uid the old object's report would vouch for the new one.
   */
  uid?: string;
}

/**
 * How far the agent's watch streams had got when it computed the state its kernel now holds
 * (resourceVersions, which etcd makes comparable as integers within one resource). The operator
 * compares them with the resourceVersions of its own NpmIPSet writes to tell when a membership change
 * is enforced on a node (docs/adr/0007-membership-signal.md).
 */
export interface ObservedRevisions {
  /** Highest NpmIPSet resourceVersion seen (list or watch event) before the last successful sync. */
  ipsets?: string;
  /** Highest resourceVersion of this node's pods seen before the last successful sync. */
  pods?: string;
}

/**
 * What the node programs, in counts that move with policies, not with pods: a set's member count
 * would make every pod event a write by every node that programs the set (ADR 0015). Members are
 * on /node-metrics (npm_ipset_counts, read from the kernel).
 */
export interface KernelCounts {
  ipsets: number;
  chains: number;
  rules: number;
}

export interface NpmNodeStatus {
  /** iptables backend in use: nft or legacy. */
  backend?: string;
  /**
   * Empty when the last sync succeeded, else the failure with its causes (the failing command and
   * the kernel tool's own message). Per-sync figures (time, duration, counts) are on /node-metrics:
   * this status is written only when its content changes (issue #10).
   */
  lastError?: string;
  kernel?: KernelCounts;
  /** Rulesets programmed on this node (only those selecting a local pod). */
  applied?: AppliedRuleSet[];
  /** Watch positions the kernel state reflects (set only by a successful sync). */
  observed?: ObservedRevisions;
  conditions?: Condition[];
}

export interface NpmNode {
  apiVersion: typeof API_VERSION;
  kind: typeof NODE_KIND;
  metadata: ObjectMeta;
  status?: NpmNodeStatus;
}
