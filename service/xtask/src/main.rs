//! `cargo xtask generate` writes every generated file of the repository from its one Rust
//! source; `cargo xtask check` fails when a committed copy is stale (CI runs the same check as
//! the test `generated_files_are_current`).
//!
//! | file | source |
//! | --- | --- |
//! | `crds/…yaml`, the chart's CRD template | the `FlashcardPipeline` types (`flashcard-operator`) |
//! | `service/api/openapi.json` | the api's handlers and body types (`flashcard-service`) |
//! | `alerts/flashcard-rules.yaml`, the chart's `PrometheusRule` | `flashcard-monitoring` rules |
//! | `alerts/grafana-dashboard.json` | `flashcard-monitoring` dashboard |

use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use flashcard_monitoring::{
    AlertThresholds, OPERATOR_GROUP, dashboard, helm_prometheus_rule_template, rule_groups,
    rules_file_yaml,
};

/// The chart's `PrometheusRule` template (the operator's own alerts).
const CHART_PROMETHEUS_RULE: &str = "charts/flashcard-operator/templates/prometheusrule.yaml";

/// Every generated file: its path from the repository root and its current content.
fn generated() -> anyhow::Result<Vec<(&'static str, String)>> {
    use flashcard_operator::crdgen;
    let groups = rule_groups(&AlertThresholds::default(), None);
    let operator_groups: Vec<_> = groups
        .iter()
        .filter(|g| g.name == OPERATOR_GROUP)
        .cloned()
        .collect();
    Ok(vec![
        (crdgen::CRD_PATH, crdgen::crd_yaml().context("CRD")?),
        (
            crdgen::HELM_CRD_PATH,
            crdgen::helm_template().context("chart CRD")?,
        ),
        (
            flashcard_service::api::openapi::COMMITTED_PATH,
            flashcard_service::api::openapi::document_json(),
        ),
        ("alerts/flashcard-rules.yaml", rules_file_yaml(&groups)),
        (
            CHART_PROMETHEUS_RULE,
            helm_prometheus_rule_template(&operator_groups),
        ),
        ("alerts/grafana-dashboard.json", dashboard::dashboard_json()),
    ])
}

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The generated files whose committed copy differs, with the first differing line.
fn stale(root: &Path) -> anyhow::Result<Vec<String>> {
    let mut out = Vec::new();
    for (path, expected) in generated()? {
        let actual = std::fs::read_to_string(root.join(path)).unwrap_or_default();
        if actual != expected {
            let line = actual
                .lines()
                .zip(expected.lines())
                .position(|(a, e)| a != e)
                .unwrap_or(actual.lines().count().min(expected.lines().count()));
            out.push(format!("{path} (first difference at line {})", line + 1));
        }
    }
    Ok(out)
}

fn write_all(root: &Path) -> anyhow::Result<()> {
    for (path, content) in generated()? {
        let target = root.join(path);
        if let Some(dir) = target.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        if std::fs::read_to_string(&target).ok().as_deref() != Some(content.as_str()) {
            std::fs::write(&target, content).with_context(|| format!("write {path}"))?;
            println!("wrote {path}");
        }
    }
    Ok(())
}

fn main() -> std::process::ExitCode {
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run() -> anyhow::Result<()> {
    let root = repo_root();
    match std::env::args().nth(1).as_deref() {
        Some("generate") => write_all(&root),
        Some("check") => {
            let stale = stale(&root)?;
            if stale.is_empty() {
                println!("every generated file is current");
                Ok(())
            } else {
                bail!(
                    "out of date: {}\nrun `cargo xtask generate` and commit the result",
                    stale.join(", ")
                )
            }
        }
        _ => bail!("usage: cargo xtask <generate|check>"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_files_are_current() {
        let stale = stale(&repo_root()).unwrap();
        assert!(
            stale.is_empty(),
            "out of date: {}\nrun `cargo xtask generate` and commit the result",
            stale.join(", ")
        );
    }

    #[test]
    fn a_changed_copy_is_reported_and_generate_repairs_it() {
        let root = std::env::temp_dir().join(format!("xtask-{}", std::process::id()));
        write_all(&root).unwrap();
        assert!(stale(&root).unwrap().is_empty());
        let rules = root.join("alerts/flashcard-rules.yaml");
        let mut text = std::fs::read_to_string(&rules).unwrap();
        text.push_str("# edited by hand\n");
        std::fs::write(&rules, text).unwrap();
        assert_eq!(stale(&root).unwrap().len(), 1);
        write_all(&root).unwrap();
        assert!(stale(&root).unwrap().is_empty());
        std::fs::remove_dir_all(&root).unwrap();
    }
}
