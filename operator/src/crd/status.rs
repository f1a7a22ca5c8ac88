//! The status half of the resource: what the operator observed and decided. Written only by the
//! operator, with server-side apply on the status subresource.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::KubeSchema;
use serde::{Deserialize, Serialize};

/// Condition types the operator maintains. Each changes only when its meaning does.
pub mod condition {
    /// The children are applied, the API Deployment has all its pods ready and the store
    /// answers.
    pub const READY: &str = "Ready";
    /// The API or worker Deployment has not finished rolling out (new pods not yet updated and
    /// available, old ones not yet gone), by the rules of `kubectl rollout status`.
    pub const PROGRESSING: &str = "Progressing";
    /// The autoscaler's state: FollowingQueue, Stabilizing (a scale-down waits for its window),
    /// Paused or StoreUnavailable (False: the count is frozen).
    pub const SCALING: &str = "Scaling";
    /// True while the kill-switch is on.
    pub const BUDGET_EXCEEDED: &str = "BudgetExceeded";
    /// Whether the PrometheusRule and ServiceMonitor could be created.
    pub const MONITORING_AVAILABLE: &str = "MonitoringAvailable";
    /// Whether every child is applied; False (reason `ApplyFailed`) names each child the API
    /// server refused, while the others are applied.
    pub const APPLIED: &str = "Applied";
    /// Whether every Secret the pipeline references carries the consent label
    /// `flashcards.dev/pipeline-secret=true`; False (reason `SecretNotLabelled`): no Deployment
    /// is applied.
    pub const SECRETS_ALLOWED: &str = "SecretsAllowed";
    /// True after the store lost its data and the operator restored the period's spend.
    pub const SPEND_RESTORED: &str = "SpendRestored";
    /// True while the deletion of a `deletionPolicy: Delete` pipeline waits because its store
    /// cannot be cleaned up (reason `StoreUnavailable`).
    pub const DELETION_BLOCKED: &str = "DeletionBlocked";
}

/// Observed state of a pipeline.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct FlashcardPipelineStatus {
    /// Ready, Progressing, Scaling, BudgetExceeded, MonitoringAvailable.
    #[serde(default)]
    pub conditions: Vec<Condition>,
    /// The spec generation the status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// API pods, from the API Deployment's status.
    #[serde(default)]
    pub api: ApiStatus,
    /// Queue depth at the last poll.
    #[serde(default)]
    pub queue: QueueStatus,
    /// Worker replicas: pods from the worker Deployment, live workers from their heartbeats.
    #[serde(default)]
    pub workers: WorkersStatus,
    /// Spend of the current period and the kill-switch.
    #[serde(default)]
    pub budget: BudgetStatus,
}

/// Jobs per state at the last poll.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct QueueStatus {
    /// Jobs ready to run.
    pub waiting: u64,
    /// Jobs a worker is running.
    pub active: u64,
    /// Jobs waiting for a retry.
    pub delayed: u64,
}

/// API pods.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ApiStatus {
    /// Replicas of the API Deployment (`spec.api.replicas`).
    #[serde(default)]
    pub desired: u32,
    /// API pods that pass their readiness probe (the Deployment's `readyReplicas`).
    #[serde(default)]
    pub ready: u32,
    /// `ready/desired`, for `kubectl get`.
    #[serde(default)]
    pub summary: String,
}

/// Worker replicas and the last scaling decision.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct WorkersStatus {
    /// Replicas the autoscaler set on the worker Deployment.
    pub desired: u32,
    /// Worker pods that pass their readiness probe (the Deployment's `readyReplicas`).
    #[serde(default)]
    pub ready: u32,
    /// Workers with a live heartbeat in the store (pods that are running the worker loop; a
    /// draining pod counts until it stops).
    #[serde(default)]
    pub live: u32,
    /// `ready/desired` pods, for `kubectl get`.
    #[serde(default)]
    pub summary: String,
    /// When the replica count last changed (RFC 3339).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_time: Option<String>,
    /// Why it last changed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_scale_reason: Option<String>,
}

/// Spend of the current period and the kill-switch state (never any secret).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BudgetStatus {
    /// The current period's key (`2026-11`, `2026-W48`, `2026-11-26`).
    #[serde(default)]
    pub period: String,
    /// Spend in the current period, US dollars.
    pub spent_usd: f64,
    /// The same in integer micro-dollars: what the operator restores if the store loses its
    /// data.
    #[serde(default)]
    pub spent_micros: u64,
    /// Held by running jobs' reservations, US dollars.
    #[serde(default)]
    pub reserved_usd: f64,
    /// The store's epoch when the spend was recorded; another epoch means the store lost its
    /// data.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub store_epoch: Option<String>,
    /// The limit, US dollars (0 = none).
    pub limit_usd: f64,
    /// Spend as percent of the limit (0 without a limit).
    pub percent: f64,
    /// `spent/limit`, for `kubectl get`.
    #[serde(default)]
    pub summary: String,
    /// Whether new jobs are refused.
    pub kill_switch: bool,
    /// Who set the kill-switch: budget (the automatic stop: spend reached the limit), resource
    /// (spec.budget.killSwitch.manual) or admin (admin API).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_switch_set_by: Option<String>,
    /// Why the kill-switch is on.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kill_switch_reason: Option<String>,
}
