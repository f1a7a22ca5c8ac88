//! The pod template shared by api and worker: image, env (ConfigMap + secret references +
//! downward API), probes, port and a restricted security context.

use k8s_openapi::api::core::v1::ResourceRequirements;
use kube::ResourceExt;
use serde_json::{Value, json};

use super::{
    CONFIG_HASH_ANNOTATION, OPERATIONS_PORT, OPERATIONS_PORT_NAME, PORT_NAME, SERVICE_PORT,
    config_hash, names, selector_labels,
};
use crate::crd::{FlashcardPipeline, SecretKeyRef};

/// Which `flashcard-service` mode the pod runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Api,
    Worker,
}

impl Mode {
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Api => "api",
            Mode::Worker => "worker",
        }
    }
}

fn secret_env(name: &str, r: &SecretKeyRef) -> Value {
    json!({"name": name, "valueFrom": {"secretKeyRef": {"name": r.name, "key": r.key}}})
}

/// Where the pods read `REDIS_URL`: the pipeline's own Secret, or the one the operator writes
/// for a pipeline on its Redis.
pub fn redis_url_ref(p: &FlashcardPipeline) -> SecretKeyRef {
    p.spec
        .redis
        .url_secret_ref
        .clone()
        .unwrap_or_else(|| SecretKeyRef {
            name: names::redis_credential(&p.name_any()),
            key: super::credential::URL_KEY.to_owned(),
        })
}

/// The container's `env` (everything else comes from the ConfigMap via `envFrom`).
fn env(p: &FlashcardPipeline, mode: Mode) -> Vec<Value> {
    let mut env = vec![
        json!({"name": "POD_NAME", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}}),
        secret_env("REDIS_URL", &redis_url_ref(p)),
    ];
    if let Some(r) = &p.spec.provider.api_key_secret_ref {
        env.push(secret_env("OPENAI_API_KEY", r));
    }
    if mode == Mode::Api
        && let Some(r) = &p.spec.api.admin_token_secret_ref
    {
        env.push(secret_env("ADMIN_TOKEN", r));
    }
    if mode == Mode::Api {
        env.extend(identity_env(p));
        // The drain window is the pod's `preStop` sleep; after it, SIGTERM ends the streams.
        env.push(json!({"name": "DRAIN_SECONDS", "value": "0"}));
        env.push(
            json!({"name": "DRAIN_SPREAD_MS", "value": (DRAIN_SPREAD_SECONDS * 1000).to_string()}),
        );
    }
    env
}

/// Seconds over which a draining API pod ends its SSE streams (`DRAIN_SPREAD_MS`).
pub const DRAIN_SPREAD_SECONDS: i64 = 2;

/// Where the API keys Secret is mounted in the API container.
pub const API_KEYS_DIR: &str = "/etc/flashcards/api-keys";
/// The file inside [`API_KEYS_DIR`] (`API_KEYS_FILE`).
pub const API_KEYS_FILE: &str = "/etc/flashcards/api-keys/keys";
const API_KEYS_VOLUME: &str = "api-keys";

/// The client identity of the API container (`spec.api.identity`): plain settings; the keys
/// come as a mounted file, never as a value.
fn identity_env(p: &FlashcardPipeline) -> Vec<Value> {
    let identity = &p.spec.api.identity;
    let mut env = vec![
        json!({"name": "CLIENT_IDENTITY", "value": identity.mode.as_flag()}),
        json!({"name": "IDENTITY_HEADER", "value": identity.header}),
        json!({"name": "TRUSTED_PROXIES", "value": identity.trusted_proxies.join(",")}),
    ];
    if identity.api_keys_secret_ref.is_some() {
        env.push(json!({"name": "API_KEYS_FILE", "value": API_KEYS_FILE}));
    }
    env
}

/// The pod template of one mode.
pub fn pod_template(
    p: &FlashcardPipeline,
    mode: Mode,
    image: &str,
    resources: Option<&ResourceRequirements>,
    termination_grace_seconds: Option<i64>,
) -> Value {
    let probe = |path: &str, period: i32| {
        json!({"httpGet": {"path": path, "port": PORT_NAME}, "periodSeconds": period,
               "timeoutSeconds": 3, "failureThreshold": 3})
    };
    let mut container = json!({
        "name": mode.as_str(),
        "image": image,
        "args": [mode.as_str()],
        "ports": [{"name": PORT_NAME, "containerPort": SERVICE_PORT, "protocol": "TCP"},
                  {"name": OPERATIONS_PORT_NAME, "containerPort": OPERATIONS_PORT,
                   "protocol": "TCP"}],
        "envFrom": [{"configMapRef": {"name": names::config(&p.name_any())}}],
        "env": env(p, mode),
        "livenessProbe": probe("/healthz", 10),
        "readinessProbe": probe("/readyz", 5),
        "securityContext": {
            "allowPrivilegeEscalation": false,
            "readOnlyRootFilesystem": true,
            "runAsNonRoot": true,
            "capabilities": {"drop": ["ALL"]},
        },
    });
    if let Some(r) = resources {
        container["resources"] = json!(r);
    }
    if mode == Mode::Api && p.spec.api.drain_seconds > 0 {
        container["lifecycle"] =
            json!({"preStop": {"sleep": {"seconds": p.spec.api.drain_seconds}}});
    }
    // The API keys file: the Secret's one key as a read-only file, mounted by the kubelet (the
    // operator needs no access to the Secret).
    let keys = p
        .spec
        .api
        .identity
        .api_keys_secret_ref
        .as_ref()
        .filter(|_| mode == Mode::Api);
    if keys.is_some() {
        container["volumeMounts"] =
            json!([{"name": API_KEYS_VOLUME, "mountPath": API_KEYS_DIR, "readOnly": true}]);
    }
    let mut spec = json!({
        "containers": [container],
        "securityContext": {"seccompProfile": {"type": "RuntimeDefault"}},
    });
    if let Some(r) = keys {
        spec["volumes"] = json!([{
            "name": API_KEYS_VOLUME,
            "secret": {"secretName": r.name, "items": [{"key": r.key, "path": "keys"}],
                       "defaultMode": 0o444},
        }]);
    }
    if let Some(g) = termination_grace_seconds {
        spec["terminationGracePeriodSeconds"] = json!(g);
    }
    json!({
        "metadata": {
            "labels": selector_labels(p, mode.as_str()),
            "annotations": {CONFIG_HASH_ANNOTATION: config_hash(p)},
        },
        "spec": spec,
    })
}
