//! Runs the real Prometheus and Alertmanager tools over `alerts/`:
//! `promtool check rules`, `promtool test rules`, `amtool check-config` and `amtool config routes
//! test`. The tools are required: a missing tool fails the test (install them with
//! `.ci/install-alert-tools.sh`), it never skips.

use std::path::{Path, PathBuf};
use std::process::Command;

use flashcard_monitoring::{
    AlertThresholds, RuleOptions, rule_groups, rule_groups_with, rules_file_yaml,
};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// Runs `tool args` in `dir`; panics with its output unless it succeeds. Returns stdout.
fn run(dir: &Path, tool: &str, args: &[&str]) -> String {
    let out = Command::new(tool)
        .args(args)
        .current_dir(dir)
        .output()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{tool}` ({e}): install the alerting tools with \
                 .ci/install-alert-tools.sh (Debian packages prometheus, prometheus-alertmanager)"
            )
        });
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "`{tool} {}` failed ({}):\n{stdout}\n{stderr}",
        args.join(" "),
        out.status
    );
    stdout
}

#[test]
fn promtool_checks_the_generated_rules() {
    let root = repo_root();
    let out = run(
        &root,
        "promtool",
        &["check", "rules", "alerts/flashcard-rules.yaml"],
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn promtool_checks_scoped_and_custom_rule_sets() {
    // The operator's per-pipeline rules (scoped, with a namespace and odd thresholds) must be
    // valid too, not only the default file.
    let dir = tempdir("promtool-scoped");
    let th = AlertThresholds {
        queue_depth_high: 5,
        queue_depth_critical: 7,
        failure_rate_percent: 2.5,
        failure_window: std::time::Duration::from_secs(90),
        worker_stalled_seconds: 45,
        budget_warn_percent: 66.6,
        sse_connections_percent: 75.0,
    };
    let opts = RuleOptions {
        pipeline: Some("bio-\"x\"".into()),
        namespace: Some("study".into()),
        ..RuleOptions::default()
    };
    std::fs::write(
        dir.join("scoped.yaml"),
        rules_file_yaml(&rule_groups_with(&th, &opts)),
    )
    .unwrap();
    std::fs::write(
        dir.join("plain.yaml"),
        rules_file_yaml(&rule_groups(&th, Some("chem"))),
    )
    .unwrap();
    let out = run(
        &dir,
        "promtool",
        &["check", "rules", "scoped.yaml", "plain.yaml"],
    );
    assert!(out.contains("SUCCESS: 11 rules found"), "{out}");
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn promtool_unit_tests_pass() {
    let root = repo_root();
    let tests_dir = root.join("alerts").join("tests");
    let mut files: Vec<String> = std::fs::read_dir(&tests_dir)
        .unwrap()
        .filter_map(|e| {
            let p = e.ok()?.path();
            let name = p.file_name()?.to_str()?.to_string();
            (p.extension()? == "yaml").then(|| format!("alerts/tests/{name}"))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty());
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let out = run(&root, "promtool", &args);
    assert_eq!(
        out.matches("SUCCESS").count(),
        files.len(),
        "every test file must succeed:\n{out}"
    );
}

#[test]
fn amtool_checks_the_alertmanager_config() {
    let root = repo_root();
    let out = run(
        &root,
        "amtool",
        &["check-config", "alerts/alertmanager.yaml"],
    );
    assert!(out.contains("SUCCESS"), "{out}");
}

#[test]
fn alertmanager_routes_by_severity_and_pipeline() {
    let root = repo_root();
    let cases: &[(&[&str], &str)] = &[
        (
            &["severity=critical", "pipeline=bio"],
            "flashcards-oncall,flashcards-slack-critical",
        ),
        (
            &["severity=warning", "pipeline=bio"],
            "flashcards-slack-warnings",
        ),
        (
            &["severity=warning", "pipeline=payments-demo"],
            "payments-demo-slack",
        ),
        (&["severity=info", "pipeline=bio"], "null"),
    ];
    for (labels, receivers) in cases {
        let verify = format!("--verify.receivers={receivers}");
        let mut args = vec![
            "config",
            "routes",
            "test",
            "--config.file=alerts/alertmanager.yaml",
            verify.as_str(),
        ];
        args.extend_from_slice(labels);
        run(&root, "amtool", &args);
    }
}

fn tempdir(prefix: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
