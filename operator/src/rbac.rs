//! The RBAC rules the operator's code needs: the chart's Role/ClusterRole is written from this
//! list, and every entry names the code that uses it.
//!
//! | apiGroup | resource | verbs | used by |
//! | --- | --- | --- | --- |
//! | flashcards.dev | flashcardpipelines | get, list, watch, patch | `run`: the Controller's watch; start-up CRD check (list); `reconcile::lifecycle`: the `deletionPolicy: Delete` finalizer (JSON patch) |
//! | flashcards.dev | flashcardpipelines/status | get, patch | `reconcile::status`: server-side apply of status |
//! | apps | deployments | get, list, watch, create, patch, delete | `reconcile::apply` (server-side apply); `controller`: watch (drift, pod readiness); `reconcile::lifecycle`: delete before the store of a `deletionPolicy: Delete` pipeline is purged |
//! | "" (core) | services, configmaps | get, list, watch, create, patch | `reconcile::apply` (server-side apply); `controller`: metadata watch (drift) |
//! | networking.k8s.io | ingresses | get, list, watch, create, patch, delete | `reconcile::apply` (SSA); delete when `spec.api.ingress` is removed; `controller`: metadata watch |
//! | monitoring.coreos.com | prometheusrules, servicemonitors | get, create, patch | `reconcile::apply`, only when the CRDs exist |
//! | "" (core) | pods | patch | `reconcile::deletion_cost`: pod-deletion-cost before a scale-down (merge patch) |
//! | "" (core) | secrets | get | `connector`: the Redis URL of a pipeline (`spec.redis.urlSecretRef`), and the labels (metadata only) of every Secret a pipeline references (`consent`); by default only Secrets named in `rbac.secretNames` (`resourceNames`; a Forbidden read refuses the Secret) |
//! | "" (core) | secrets | create, patch | only with an admin URL of the operator's Redis (chart `operator.redisAdmin.secretRef`, [`MANAGED_REDIS_RULE`]): `reconcile::apply` writes `<pipeline>-redis-credential` for each pipeline on that Redis (server-side apply, not forced, so another writer's Secret of that name is a conflict, never overwritten) |
//! | events.k8s.io | events | create, patch | `events::Recorder` (patch: the series of a repeated Event) |
//! | coordination.k8s.io | leases | get, create, update | `leader`: the leader-election Lease |
//!
//! API discovery (`/apis/monitoring.coreos.com/v1`) needs no RBAC (system:discovery).

/// One RBAC rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rule {
    pub api_group: &'static str,
    pub resources: &'static [&'static str],
    pub verbs: &'static [&'static str],
}

/// Children are applied and watched (by label), so a deleted or edited child is repaired at once.
const CHILD: &[&str] = &["get", "list", "watch", "create", "patch"];
/// PrometheusRule and ServiceMonitor are applied, not watched (their CRDs may be absent).
const UNWATCHED_CHILD: &[&str] = &["get", "create", "patch"];

/// Every rule, as in the table above.
pub const RBAC_RULES: &[Rule] = &[
    Rule {
        api_group: "flashcards.dev",
        resources: &["flashcardpipelines"],
        verbs: &["get", "list", "watch", "patch"],
    },
    Rule {
        api_group: "flashcards.dev",
        resources: &["flashcardpipelines/status"],
        verbs: &["get", "patch"],
    },
    Rule {
        api_group: "apps",
        resources: &["deployments"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
    },
    Rule {
        api_group: "",
        resources: &["services", "configmaps"],
        verbs: CHILD,
    },
    Rule {
        api_group: "networking.k8s.io",
        resources: &["ingresses"],
        verbs: &["get", "list", "watch", "create", "patch", "delete"],
    },
    Rule {
        api_group: "monitoring.coreos.com",
        resources: &["prometheusrules", "servicemonitors"],
        verbs: UNWATCHED_CHILD,
    },
    Rule {
        api_group: "",
        resources: &["pods"],
        verbs: &["patch"],
    },
    Rule {
        api_group: "",
        resources: &["secrets"],
        verbs: &["get"],
    },
    Rule {
        api_group: "events.k8s.io",
        resources: &["events"],
        verbs: &["create", "patch"],
    },
    Rule {
        api_group: "coordination.k8s.io",
        resources: &["leases"],
        verbs: &["get", "create", "update"],
    },
];

/// The extra rule of an operator given the admin URL of its own Redis ([`crate::acl`]).
pub const MANAGED_REDIS_RULE: Rule = Rule {
    api_group: "",
    resources: &["secrets"],
    verbs: &["create", "patch"],
};
