//! The spec half of the resource: what the user asks for. Defaults live in the schema.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::KubeSchema;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key in a Secret of the pipeline's namespace. The operator passes it to the pods as a
/// `secretKeyRef`; the value is never copied.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1))]
    pub key: String,
}

/// The Redis the pipeline's pods and the operator share.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, Default, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct RedisSpec {
    /// Secret key holding the Redis URL, with password if any: `redis://` or `rediss://` (one
    /// node), `redis+cluster://h:p[,h:p]` (Redis Cluster) or `redis+sentinel://h:p[,h:p]/<master>`
    /// (Sentinel); the `rediss+` forms use TLS. Omit it to use the operator's Redis (given to
    /// the operator as an admin URL): the operator then makes the pipeline its own ACL user,
    /// limited to the pipeline's keys, and gives the pods that user in the Secret
    /// `<name>-redis-credential` (annotate `flashcards.dev/rotate-redis-credential` with a new
    /// value to rotate its password).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url_secret_ref: Option<SecretKeyRef>,
}

impl RedisSpec {
    /// The pipeline uses the operator's Redis through its own ACL user.
    pub fn managed(&self) -> bool {
        self.url_secret_ref.is_none()
    }
}

/// The HTTP API Deployment.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(BODY_BEHIND_INGRESS_RULE).message("identity mode body behind an Ingress lets any client claim any userId (its rate limit and jobs): use apiKey or proxy, or set ingress.allowBodyIdentity").field_path(".identity.mode").reason(kube::core::Reason::FieldValueForbidden))]
pub struct ApiSpec {
    /// API pods. SSE clients spread over them; each pod reads job events with one connection.
    #[serde(default = "default_api_replicas")]
    #[schemars(range(min = 0, max = 100))]
    pub replicas: u32,
    /// Container image. Empty: `ghcr.io/flashcards-dev/flashcard-service:<operator version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// CPU and memory requests and limits of the API container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Secret key holding the bearer token of `/api/admin/*` (passed as `ADMIN_TOKEN`).
    /// Without it the admin endpoints are disabled.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub admin_token_secret_ref: Option<SecretKeyRef>,
    /// An Ingress for client apps. Omit it to reach the API only inside the cluster.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ingress: Option<IngressSpec>,
    /// Browser origins allowed to call the API (CORS), e.g. `https://app.example.org`; `*` allows
    /// any. Empty: no CORS headers (same-origin clients and non-browser clients need none).
    /// Passed as `CORS_ORIGINS`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cors_origins: Vec<String>,
    /// Jobs one user (`userId`) may submit per `rateLimitWindowSeconds`; more get 429
    /// `RATE_LIMITED` with `Retry-After`. 0 disables the limit. Passed as `RATE_LIMIT_JOBS`.
    #[serde(default = "default_rate_limit_jobs")]
    #[schemars(range(min = 0, max = 1_000_000))]
    pub rate_limit_jobs: u32,
    /// Window of the per-user rate limit in seconds. Passed as `RATE_LIMIT_WINDOW_SECONDS`.
    #[serde(default = "default_rate_limit_window_seconds")]
    #[schemars(range(min = 1, max = 86_400))]
    pub rate_limit_window_seconds: u32,
    /// Who the API's clients are: the identity that the rate limit counts and that owns a job.
    /// Default `body` (the request's `userId`, for trusted networks only).
    #[serde(default)]
    pub identity: IdentitySpec,
    /// Seconds an API pod keeps serving after its deletion starts (a `preStop` sleep), so the
    /// Service's endpoints and the Ingress stop sending it connections first; then its SSE
    /// streams end over 2 s with a `retry:` and it exits. 0 stops at once.
    #[serde(default = "default_drain_seconds")]
    #[schemars(range(min = 0, max = 300))]
    pub drain_seconds: u32,
}

/// How the API identifies its clients.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase")]
pub enum IdentityMode {
    /// The request's `userId` (or `user-id` header) names the client, as in the seed. Anyone may
    /// claim any id: use it only when everything in front already authenticated the caller.
    #[default]
    Body,
    /// Every request presents an API key (`X-API-Key: <key>` or `Authorization: Bearer <key>`);
    /// the Secret `apiKeysSecretRef` maps the keys' SHA-256 hashes to principals. Jobs are served
    /// only to the principal that submitted them.
    ApiKey,
    /// An authenticating proxy in front (oauth2-proxy, ingress-nginx external auth) sets the
    /// `header` to the user's identity; it counts only from `trustedProxies`. Jobs are served only
    /// to the user that submitted them.
    Proxy,
}

impl IdentityMode {
    /// The service's `--client-identity` value (`CLIENT_IDENTITY`).
    pub fn as_flag(self) -> &'static str {
        match self {
            IdentityMode::Body => "body",
            IdentityMode::ApiKey => "api-key",
            IdentityMode::Proxy => "proxy",
        }
    }
}

/// Client identity of the API pods (`CLIENT_IDENTITY`, `API_KEYS_FILE`, `IDENTITY_HEADER`,
/// `TRUSTED_PROXIES`). Without an identity in a request, the client address counts: the peer,
/// or behind `trustedProxies` the last untrusted address of `X-Forwarded-For`.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.mode != 'apiKey' || has(self.apiKeysSecretRef)").message("identity mode apiKey needs apiKeysSecretRef").field_path(".apiKeysSecretRef").reason(kube::core::Reason::FieldValueRequired))]
pub struct IdentitySpec {
    /// `body`: the request's `userId` (or `user-id` header) names the client; anyone may claim
    /// any id, so only for trusted networks. `apiKey`: every request needs a key (`X-API-Key` or
    /// `Authorization: Bearer`) listed in `apiKeysSecretRef`. `proxy`: the `header` set by an
    /// authenticating proxy at one of `trustedProxies`. With `apiKey` and `proxy` a job's status
    /// and events are served only to the client that submitted it.
    #[serde(default)]
    pub mode: IdentityMode,
    /// Secret key holding the API keys file (required for `apiKey`): one
    /// `<sha256-hex-of-key> <principal>` per line (`printf %s "$KEY" | sha256sum`), `#` comments
    /// allowed. Mounted read-only into the API pods as a file (`API_KEYS_FILE`); the operator
    /// never reads it. The file is read when a pod starts: restart the API pods after a change.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_keys_secret_ref: Option<SecretKeyRef>,
    /// Header the authenticating proxy sets to the user's identity (`proxy` mode), e.g.
    /// oauth2-proxy's `X-Forwarded-User` or `X-Auth-Request-Email`.
    #[serde(default = "default_identity_header")]
    #[schemars(length(min = 1, max = 100), pattern(r"^[A-Za-z0-9!#$%&'*+.^_`|~-]+$"))]
    pub header: String,
    /// Addresses or CIDRs of the proxies in front (usually the Ingress controller's pod CIDR,
    /// e.g. `10.244.0.0/16`): only from them are the identity header and `X-Forwarded-For`
    /// trusted. Empty: none (the header is ignored and the peer address counts).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(
        length(max = 64),
        inner(length(min = 2, max = 49), pattern(r"^[0-9A-Fa-f:.]+(/[0-9]{1,3})?$"))
    )]
    pub trusted_proxies: Vec<String>,
}

fn default_identity_header() -> String {
    "X-Forwarded-User".into()
}

impl Default for IdentitySpec {
    fn default() -> Self {
        Self {
            mode: IdentityMode::Body,
            api_keys_secret_ref: None,
            header: default_identity_header(),
            trusted_proxies: Vec::new(),
        }
    }
}

fn default_rate_limit_jobs() -> u32 {
    30
}

fn default_rate_limit_window_seconds() -> u32 {
    60
}

impl Default for ApiSpec {
    fn default() -> Self {
        Self {
            replicas: default_api_replicas(),
            image: None,
            resources: None,
            admin_token_secret_ref: None,
            ingress: None,
            cors_origins: Vec::new(),
            rate_limit_jobs: default_rate_limit_jobs(),
            rate_limit_window_seconds: default_rate_limit_window_seconds(),
            identity: IdentitySpec::default(),
            drain_seconds: default_drain_seconds(),
        }
    }
}

/// An Ingress in front of the API Service. The operator adds the ingress-nginx annotations SSE
/// needs (no buffering, one-hour read timeout, HTTP/1.1 upstream); `annotations` may override them.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct IngressSpec {
    /// Host name clients use, e.g. `cards.example.org`.
    #[schemars(length(min = 1, max = 253))]
    pub host: String,
    /// IngressClass name. Empty: the cluster's default class.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub class_name: Option<String>,
    /// TLS Secret (type kubernetes.io/tls) for the host. Omit for plain HTTP.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret_name: Option<String>,
    /// Path prefix routed to the API.
    #[serde(default = "default_path")]
    pub path: String,
    /// Extra Ingress annotations (e.g. cert-manager issuer); they win over the SSE defaults.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    /// Allow `identity.mode: body` behind this Ingress: clients then name themselves (`userId`),
    /// so anyone who reaches the host can use another client's rate limit and read its jobs.
    /// Refused unless set (for a demo, or an Ingress that only trusted networks reach).
    #[serde(default)]
    pub allow_body_identity: bool,
}

/// The worker Deployment and how its replicas follow the queue.
///
/// desired = clamp(ceil((waiting + active) / targetJobsPerReplica), minReplicas, maxReplicas);
/// up at once, down only after the stabilization window, idle workers removed first.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.minReplicas <= self.maxReplicas").message("minReplicas must not exceed maxReplicas").field_path(".minReplicas").reason(kube::core::Reason::FieldValueInvalid))]
pub struct WorkerSpec {
    /// Container image. Empty: `ghcr.io/flashcards-dev/flashcard-service:<operator version>`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Jobs one worker pod runs at the same time (`WORKER_CONCURRENCY`).
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 1000))]
    pub concurrency: u32,
    /// Fewest worker pods. 0 allows scale to zero when the queue is idle.
    #[serde(default)]
    #[schemars(range(min = 0, max = 1000))]
    pub min_replicas: u32,
    /// Most worker pods.
    #[serde(default = "default_max_replicas")]
    #[schemars(range(min = 0, max = 1000))]
    pub max_replicas: u32,
    /// Waiting plus active jobs one worker pod should carry. Usually equal to `concurrency`.
    #[serde(default = "default_concurrency")]
    #[schemars(range(min = 1, max = 100000))]
    pub target_jobs_per_replica: u32,
    /// Scale down only to the highest replica count wanted during this many seconds (like the
    /// HPA's scale-down stabilization). Scale-up is immediate.
    #[serde(default = "default_stabilization")]
    #[schemars(range(min = 0, max = 86400))]
    pub scale_down_stabilization_seconds: u32,
    /// Seconds between two reads of the queue depth.
    #[serde(default = "default_poll")]
    #[schemars(range(min = 1, max = 300))]
    pub poll_interval_seconds: u32,
    /// Seconds a worker may take to finish its jobs after SIGTERM (`SHUTDOWN_GRACE_SECONDS`);
    /// the pod's terminationGracePeriodSeconds is this plus 45 (30 s in which a finished job's
    /// outcome may still be retried against the store, and a 15 s margin).
    #[serde(default = "default_shutdown_grace")]
    #[schemars(range(min = 1, max = 86400))]
    pub shutdown_grace_seconds: u32,
    /// Freeze autoscaling: the replica count stays where it is (or at `pausedReplicas`).
    #[serde(default)]
    pub paused: bool,
    /// Replica count to hold while `paused` is true. Empty: keep the current count.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0, max = 1000))]
    pub paused_replicas: Option<u32>,
    /// CPU and memory requests and limits of the worker container.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for WorkerSpec {
    fn default() -> Self {
        Self {
            image: None,
            concurrency: default_concurrency(),
            min_replicas: 0,
            max_replicas: default_max_replicas(),
            target_jobs_per_replica: default_concurrency(),
            scale_down_stabilization_seconds: default_stabilization(),
            poll_interval_seconds: default_poll(),
            shutdown_grace_seconds: default_shutdown_grace(),
            paused: false,
            paused_replicas: None,
            resources: None,
        }
    }
}

/// Which flashcard generator the workers call.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ProviderKind {
    /// Offline, deterministic cards extracted from the text; needs no key.
    #[default]
    Local,
    /// Any OpenAI-compatible chat-completions endpoint (OpenAI, Azure OpenAI, vLLM, Ollama).
    Openai,
}

impl ProviderKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ProviderKind::Local => "local",
            ProviderKind::Openai => "openai",
        }
    }
}

/// Where the workers may send the provider's API key: anywhere over TLS, in clear only inside
/// the cluster or the pod (a CEL rule of the CRD; [`BASE_URL_PATTERN`] is its `http://` half).
pub const BASE_URL_RULE: &str = "!has(self.baseUrl) || self.baseUrl.startsWith('https://') || self.baseUrl.matches('^http://(localhost|127[.]0[.]0[.]1|[^/:@?#]+[.]svc([.]cluster[.]local)?)(:[0-9]+)?(/.*)?$')";
/// An Ingress (clients on the internet) with `body` identity (the client names itself) only
/// when the author says so.
pub const BODY_BEHIND_INGRESS_RULE: &str = "!has(self.ingress) || (has(self.ingress.allowBodyIdentity) && self.ingress.allowBodyIdentity) || (has(self.identity) && has(self.identity.mode) && self.identity.mode != 'body')";
/// The in-cluster `http://` URLs [`BASE_URL_RULE`] allows (RE2, as CEL's `matches`).
pub const BASE_URL_PATTERN: &str =
    "^http://(localhost|127[.]0[.]0[.]1|[^/:@?#]+[.]svc([.]cluster[.]local)?)(:[0-9]+)?(/.*)?$";

/// The provider and its prices.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.kind != 'openai' || has(self.apiKeySecretRef)").message("provider kind openai needs apiKeySecretRef").field_path(".apiKeySecretRef").reason(kube::core::Reason::FieldValueRequired))]
#[x_kube(validation = Rule::new(BASE_URL_RULE).message("baseUrl must be https://, or http:// to an in-cluster name (*.svc, *.svc.cluster.local) or localhost: the workers send the API key there").field_path(".baseUrl").reason(kube::core::Reason::FieldValueInvalid))]
pub struct ProviderSpec {
    /// `local` (offline) or `openai` (OpenAI-compatible endpoint).
    #[serde(default)]
    pub kind: ProviderKind,
    /// Model name sent to the provider.
    #[serde(default = "default_model")]
    pub model: String,
    /// Base URL of the OpenAI-compatible API, without `/chat/completions`.
    #[serde(default = "default_base_url")]
    pub base_url: String,
    /// Price of 1,000 input tokens in US dollars. Unset: the provider's default (`openai`:
    /// gpt-4o-mini's 0.00015; `local`: 0, the offline generator costs nothing).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub price_input_per_1k: Option<f64>,
    /// Price of 1,000 output tokens in US dollars. Unset: the provider's default (`openai`:
    /// gpt-4o-mini's 0.0006; `local`: 0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0.0))]
    pub price_output_per_1k: Option<f64>,
    /// Secret key holding the provider's API key (passed as `OPENAI_API_KEY`). Required for `openai`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_key_secret_ref: Option<SecretKeyRef>,
    /// Reasoning effort sent to reasoning models as `reasoning_effort` (`minimal`, `low`,
    /// `medium`, `high`). Unset: the model's default, and nothing is sent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reasoning_effort: Option<ReasoningEffort>,
    /// Output tokens a reasoning model may spend thinking, on top of the cards' own bound. Part
    /// of `max_completion_tokens` (the bound of all billed output, reasoning included) and of
    /// every job's budget reservation. 0: no allowance (a model that thinks anyway is cut off
    /// and its job fails `OUTPUT_TRUNCATED`, its usage counted).
    #[serde(default, skip_serializing_if = "is_zero")]
    #[schemars(range(max = 200000))]
    pub reasoning_tokens: u32,
}

/// How hard a reasoning model thinks (OpenAI's `reasoning_effort`).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ReasoningEffort {
    Minimal,
    Low,
    Medium,
    High,
}

impl ReasoningEffort {
    pub fn as_str(self) -> &'static str {
        match self {
            ReasoningEffort::Minimal => "minimal",
            ReasoningEffort::Low => "low",
            ReasoningEffort::Medium => "medium",
            ReasoningEffort::High => "high",
        }
    }
}

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl Default for ProviderSpec {
    fn default() -> Self {
        Self {
            kind: ProviderKind::Local,
            model: default_model(),
            base_url: default_base_url(),
            price_input_per_1k: None,
            price_output_per_1k: None,
            api_key_secret_ref: None,
            reasoning_effort: None,
            reasoning_tokens: 0,
        }
    }
}

/// What the operator does with the pipeline's keys in Redis when the resource is deleted.
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum DeletionPolicy {
    /// Keep every key: a pipeline created again with the same name and namespace continues with
    /// its queue, spend and kill-switch (and says so in a `StoreDataFound` Event).
    #[default]
    Retain,
    /// Delete every key of the pipeline once its API and worker pods are gone (a finalizer holds
    /// the resource until then). A Redis that cannot be reached blocks the deletion (condition
    /// `DeletionBlocked`); the annotation `flashcards.dev/force-delete: "true"` deletes the
    /// resource without cleaning up.
    Delete,
}

/// How often the budget resets (UTC).
#[derive(JsonSchema, Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum Period {
    /// Every day at 00:00 UTC.
    Daily,
    /// Every ISO week (Monday 00:00 UTC).
    Weekly,
    /// Every calendar month.
    #[default]
    Monthly,
}

impl From<Period> for flashcard_core::budget::BudgetPeriod {
    fn from(p: Period) -> Self {
        use flashcard_core::budget::BudgetPeriod as B;
        match p {
            Period::Daily => B::Daily,
            Period::Weekly => B::Weekly,
            Period::Monthly => B::Monthly,
        }
    }
}

/// The budget and its kill-switch. While the kill-switch is on, new jobs get
/// `429 BUDGET_LIMIT_EXCEEDED`; running jobs finish.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct BudgetSpec {
    /// Spend limit per period in US dollars. 0 means no limit.
    #[serde(default)]
    #[schemars(range(min = 0.0))]
    pub limit_usd: f64,
    /// Budget period.
    #[serde(default)]
    pub period: Period,
    /// Percent of the limit at which the pipeline warns (Event, condition reason NearlyExhausted).
    #[serde(default = "default_warn_percent")]
    #[schemars(range(min = 1.0, max = 100.0))]
    pub warn_at_percent: f64,
    /// The kill-switch.
    #[serde(default)]
    pub kill_switch: KillSwitchSpec,
}

impl Default for BudgetSpec {
    fn default() -> Self {
        Self {
            limit_usd: 0.0,
            period: Period::Monthly,
            warn_at_percent: default_warn_percent(),
            kill_switch: KillSwitchSpec::default(),
        }
    }
}

/// Automatic and manual kill-switch. The operator never clears a kill-switch a person set
/// (here or through the admin API).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("!self.manual || size(self.reason) > 0").message("a manual kill-switch needs a reason").field_path(".reason").reason(kube::core::Reason::FieldValueRequired))]
pub struct KillSwitchSpec {
    /// Switch on automatically when the period's spend reaches `limitUsd`, and off again at the
    /// next period or when the limit is raised.
    #[serde(default = "default_true")]
    pub automatic: bool,
    /// Force the kill-switch on. Setting it back to false clears only this manual switch.
    #[serde(default)]
    pub manual: bool,
    /// Why the manual kill-switch is on (shown in status and to API clients).
    #[serde(default)]
    pub reason: String,
}

impl Default for KillSwitchSpec {
    fn default() -> Self {
        Self {
            automatic: true,
            manual: false,
            reason: String::new(),
        }
    }
}

/// Alert thresholds (the runbook's numbers) and labels of the PrometheusRule and ServiceMonitor.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new("self.queueDepthHigh < self.queueDepthCritical").message("queueDepthHigh must be below queueDepthCritical").field_path(".queueDepthHigh").reason(kube::core::Reason::FieldValueInvalid))]
pub struct AlertsSpec {
    /// Waiting jobs above which the queue counts as backed up (warning).
    #[serde(default = "default_depth_high")]
    #[schemars(range(min = 1))]
    pub queue_depth_high: u64,
    /// Waiting jobs above which the queue is critical.
    #[serde(default = "default_depth_critical")]
    #[schemars(range(min = 1))]
    pub queue_depth_critical: u64,
    /// Percent of finished jobs that failed, over the window, that counts as high.
    #[serde(default = "default_failure_rate")]
    #[schemars(range(min = 0.0, max = 100.0))]
    pub failure_rate_percent: f64,
    /// Seconds without a worker heartbeat, while jobs are active, that count as stalled.
    #[serde(default = "default_stalled")]
    #[schemars(range(min = 1))]
    pub worker_stalled_seconds: u64,
    /// Labels put on the PrometheusRule and ServiceMonitor, e.g. `release: kube-prometheus-stack`
    /// (kube-prometheus-stack ignores rules without its release label).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

impl Default for AlertsSpec {
    fn default() -> Self {
        Self {
            queue_depth_high: default_depth_high(),
            queue_depth_critical: default_depth_critical(),
            failure_rate_percent: default_failure_rate(),
            worker_stalled_seconds: default_stalled(),
            labels: BTreeMap::new(),
        }
    }
}

fn default_api_replicas() -> u32 {
    2
}
fn default_drain_seconds() -> u32 {
    10
}
fn default_path() -> String {
    "/".into()
}
fn default_concurrency() -> u32 {
    4
}
fn default_max_replicas() -> u32 {
    10
}
fn default_stabilization() -> u32 {
    300
}
fn default_poll() -> u32 {
    5
}
fn default_shutdown_grace() -> u32 {
    120
}
fn default_model() -> String {
    "gpt-4o-mini".into()
}
fn default_base_url() -> String {
    "https://api.openai.com/v1".into()
}
fn default_warn_percent() -> f64 {
    80.0
}
fn default_true() -> bool {
    true
}
fn default_depth_high() -> u64 {
    50
}
fn default_depth_critical() -> u64 {
    100
}
fn default_failure_rate() -> f64 {
    10.0
}
fn default_stalled() -> u64 {
    120
}
