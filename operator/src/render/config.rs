//! The ConfigMap: the service configuration derived from the spec, as the environment variables
//! of `flashcard-service` (names from `flashcard_service::config`). No secret goes in here.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::ConfigMap;
use kube::ResourceExt;
use serde_json::json;

use super::{RenderError, SERVICE_PORT, metadata, names, typed};
use crate::crd::FlashcardPipeline;

/// The environment of both api and worker containers (besides the secret references and
/// `POD_NAME`, which the Deployments add).
pub fn config_values(p: &FlashcardPipeline) -> BTreeMap<String, String> {
    let s = &p.spec;
    // The budget is not here: the operator writes it into the store, so a change takes effect
    // in every pod at once, without a rollout.
    let pairs = [
        ("PIPELINE", p.name_any()),
        ("PIPELINE_NAMESPACE", p.namespace().unwrap_or_default()),
        ("LISTEN_ADDR", format!("0.0.0.0:{SERVICE_PORT}")),
        ("LOG_FORMAT", "json".into()),
        ("PROVIDER", s.provider.kind.as_str().into()),
        ("OPENAI_MODEL", s.provider.model.clone()),
        ("OPENAI_BASE_URL", s.provider.base_url.clone()),
        (
            "ALERT_QUEUE_DEPTH_HIGH",
            s.alerts.queue_depth_high.to_string(),
        ),
        (
            "ALERT_QUEUE_DEPTH_CRITICAL",
            s.alerts.queue_depth_critical.to_string(),
        ),
        (
            "ALERT_FAILURE_RATE_PERCENT",
            s.alerts.failure_rate_percent.to_string(),
        ),
        (
            "ALERT_WORKER_STALLED_SECONDS",
            s.alerts.worker_stalled_seconds.to_string(),
        ),
        ("CORS_ORIGINS", s.api.cors_origins.join(",")),
        ("RATE_LIMIT_JOBS", s.api.rate_limit_jobs.to_string()),
        (
            "RATE_LIMIT_WINDOW_SECONDS",
            s.api.rate_limit_window_seconds.to_string(),
        ),
        ("WORKER_CONCURRENCY", s.worker.concurrency.to_string()),
        (
            "OPERATIONS_LISTEN_ADDR",
            format!("0.0.0.0:{}", super::OPERATIONS_PORT),
        ),
        (
            "SHUTDOWN_GRACE_SECONDS",
            s.worker.shutdown_grace_seconds.to_string(),
        ),
    ];
    // Prices only when the spec sets them: unset, each provider applies its own default (the
    // offline generator costs nothing).
    let prices = [
        ("PRICE_INPUT_PER_1K", s.provider.price_input_per_1k),
        ("PRICE_OUTPUT_PER_1K", s.provider.price_output_per_1k),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v.to_string())));
    let reasoning = [
        (
            "REASONING_EFFORT",
            s.provider.reasoning_effort.map(|e| e.as_str().to_owned()),
        ),
        (
            "REASONING_TOKENS",
            (s.provider.reasoning_tokens > 0).then(|| s.provider.reasoning_tokens.to_string()),
        ),
    ]
    .into_iter()
    .filter_map(|(k, v)| v.map(|v| (k, v)));
    pairs
        .into_iter()
        .chain(prices)
        .chain(reasoning)
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
}

/// The ConfigMap `<pipeline>-config`, used with `envFrom` by both Deployments.
pub fn config_map(p: &FlashcardPipeline) -> Result<ConfigMap, RenderError> {
    typed(
        "ConfigMap",
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": metadata(p, names::config(&p.name_any()), "config")?,
            "data": config_values(p),
        }),
    )
}

/// A stable hash (FNV-1a, hex) of the configuration; a change rolls the pods.
pub fn config_hash(p: &FlashcardPipeline) -> String {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in config_values(p) {
        for b in k.bytes().chain([0]).chain(v.bytes()).chain([0]) {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{h:016x}")
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn config_map_holds_the_service_settings() {
        let cm = config_map(&full()).unwrap();
        let d = cm.data.unwrap();
        assert_eq!(cm.metadata.name.as_deref(), Some("biology-config"));
        assert_eq!(d["PIPELINE"], "biology");
        assert_eq!(d["PROVIDER"], "openai");
        assert_eq!(d["OPENAI_MODEL"], "gpt-4o");
        assert_eq!(d["OPENAI_BASE_URL"], "https://llm.local/v1");
        assert_eq!(d["PRICE_INPUT_PER_1K"], "0.0025");
        assert_eq!(d["PRICE_OUTPUT_PER_1K"], "0.01");
        assert!(
            !d.keys().any(|k| k.starts_with("BUDGET_")),
            "the budget lives in the store"
        );
        assert_eq!(d["PIPELINE_NAMESPACE"], "study");
        assert_eq!(d["ALERT_QUEUE_DEPTH_HIGH"], "60");
        assert_eq!(d["ALERT_QUEUE_DEPTH_CRITICAL"], "120");
        assert_eq!(d["ALERT_FAILURE_RATE_PERCENT"], "10");
        assert_eq!(d["ALERT_WORKER_STALLED_SECONDS"], "120");
        assert_eq!(d["WORKER_CONCURRENCY"], "8");
        assert_eq!(d["SHUTDOWN_GRACE_SECONDS"], "300");
        assert_eq!(d["LISTEN_ADDR"], "0.0.0.0:3001");
    }

    /// Every key is an environment variable of the service binary: map each to its flag through
    /// the service's own clap definition (no process environment involved) and parse.
    #[test]
    fn service_binary_accepts_the_config() {
        use clap::{CommandFactory, Parser};
        let vars = config_values(&full());
        let cmd = flashcard_service::config::Cli::command();
        let worker = cmd.find_subcommand("worker").expect("worker mode");
        let mut args = vec!["flashcard-service".to_owned(), "worker".to_owned()];
        for (k, v) in &vars {
            let arg = worker
                .get_arguments()
                .find(|a| a.get_env().is_some_and(|e| e == k.as_str()))
                .unwrap_or_else(|| panic!("the service has no setting for env {k}"));
            args.push(format!("--{}", arg.get_long().expect("long flag")));
            args.push(v.clone());
        }
        let cli = flashcard_service::config::Cli::try_parse_from(&args)
            .unwrap_or_else(|e| panic!("service rejects the config: {e}"));
        let s = cli.mode.settings();
        assert_eq!(s.pipeline, "biology");
        assert_eq!(s.worker.concurrency, 8);
        assert_eq!(s.pipeline_namespace, "study");
        assert_eq!(s.alerts.queue_depth_high, 60);
    }

    #[test]
    fn reasoning_settings_are_rendered_only_when_set() {
        let mut p = full();
        let d = config_values(&p);
        assert!(!d.contains_key("REASONING_EFFORT") && !d.contains_key("REASONING_TOKENS"));
        p.spec.provider.reasoning_effort = Some(crate::crd::ReasoningEffort::Low);
        p.spec.provider.reasoning_tokens = 2048;
        let d = config_values(&p);
        assert_eq!(d["REASONING_EFFORT"], "low");
        assert_eq!(d["REASONING_TOKENS"], "2048");
        use clap::Parser;
        let mut args = vec!["flashcard-service".to_owned(), "worker".to_owned()];
        args.extend(["--reasoning-effort".into(), d["REASONING_EFFORT"].clone()]);
        args.extend(["--reasoning-tokens".into(), d["REASONING_TOKENS"].clone()]);
        let cli = flashcard_service::config::Cli::try_parse_from(&args).unwrap();
        let provider = &cli.mode.settings().provider;
        assert_eq!(provider.reasoning_effort.as_deref(), Some("low"));
        assert_eq!(provider.reasoning_tokens, 2048);
    }

    #[test]
    fn prices_are_left_to_the_provider_unless_set() {
        let mut p = full();
        p.spec.provider.price_input_per_1k = None;
        p.spec.provider.price_output_per_1k = None;
        let d = config_values(&p);
        assert!(!d.contains_key("PRICE_INPUT_PER_1K") && !d.contains_key("PRICE_OUTPUT_PER_1K"));
    }

    #[test]
    fn hash_follows_the_config() {
        let a = full();
        let mut b = full();
        assert_eq!(config_hash(&a), config_hash(&b));
        b.spec.budget.limit_usd = 600.0;
        assert_eq!(
            config_hash(&a),
            config_hash(&b),
            "a budget change needs no rollout"
        );
        b.spec.worker.concurrency += 1;
        assert_ne!(config_hash(&a), config_hash(&b));
    }
}
