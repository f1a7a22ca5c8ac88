//! The rules parse back to what generated them, and every alert has a runbook section and
//! promtool tests both firing and not firing. (`cargo xtask check` keeps the files current.)

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use flashcard_monitoring::{ALERT_NAMES, AlertThresholds, rule_groups, rules_file_yaml};

fn alerts_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .join("alerts")
}

#[test]
fn generated_rules_parse_back_to_the_same_groups() {
    #[derive(serde::Deserialize)]
    struct File {
        groups: Vec<flashcard_monitoring::RuleGroup>,
    }
    let groups = rule_groups(&AlertThresholds::default(), None);
    let parsed: File = serde_saphyr::from_str(&rules_file_yaml(&groups)).unwrap();
    assert_eq!(parsed.groups, groups);
}

/// GitHub's anchor for a markdown heading: lower-case, spaces to dashes, punctuation dropped.
fn github_anchor(heading: &str) -> String {
    heading
        .trim()
        .to_lowercase()
        .chars()
        .filter_map(|c| match c {
            ' ' => Some('-'),
            c if c.is_alphanumeric() || c == '-' || c == '_' => Some(c),
            _ => None,
        })
        .collect()
}

#[test]
fn every_alert_has_a_runbook_section() {
    let runbook = std::fs::read_to_string(alerts_dir().join("RUNBOOK.md")).unwrap();
    let anchors: BTreeSet<String> = runbook
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(github_anchor)
        .collect();
    // The sections of each alert, in the order Meaning / Impact / Diagnosis / Mitigation.
    let sections: Vec<&str> = runbook.split("\n## ").collect();
    for group in rule_groups(&AlertThresholds::default(), None) {
        for rule in group.rules {
            let anchor = rule.runbook_anchor();
            assert!(
                anchors.contains(&anchor),
                "RUNBOOK.md has no `## {}` section (anchor #{anchor})",
                rule.alert
            );
            let section = sections
                .iter()
                .find(|s| s.lines().next().map(github_anchor) == Some(anchor.clone()))
                .unwrap();
            let mut last = 0;
            for heading in [
                "### Meaning",
                "### Impact",
                "### Diagnosis",
                "### Mitigation",
            ] {
                let pos = section
                    .find(heading)
                    .unwrap_or_else(|| panic!("{}: runbook lacks {heading}", rule.alert));
                assert!(pos >= last, "{}: {heading} out of order", rule.alert);
                last = pos;
            }
        }
    }
}

#[derive(serde::Deserialize)]
struct PromtoolTestFile {
    rule_files: Vec<String>,
    tests: Vec<PromtoolTest>,
}

#[derive(serde::Deserialize)]
struct PromtoolTest {
    #[serde(default)]
    alert_rule_test: Vec<AlertRuleTest>,
}

#[derive(serde::Deserialize)]
struct AlertRuleTest {
    alertname: String,
    #[serde(default)]
    exp_alerts: Vec<serde::de::IgnoredAny>,
}

#[test]
fn every_alert_is_tested_firing_and_not_firing() {
    let dir = alerts_dir().join("tests");
    // alert -> (tested firing, tested not firing)
    let mut seen: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    let mut files = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some("yaml") {
            continue;
        }
        files += 1;
        let text = std::fs::read_to_string(&path).unwrap();
        let file: PromtoolTestFile =
            serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert_eq!(
            file.rule_files,
            vec!["../flashcard-rules.yaml".to_string()],
            "{}: tests must load the generated rules",
            path.display()
        );
        for test in file.tests {
            for art in test.alert_rule_test {
                let e = seen.entry(art.alertname).or_default();
                if art.exp_alerts.is_empty() {
                    e.1 = true;
                } else {
                    e.0 = true;
                }
            }
        }
    }
    assert!(files > 0, "no promtool tests in {}", dir.display());
    for name in ALERT_NAMES {
        let (firing, quiet) = seen.get(*name).copied().unwrap_or_default();
        assert!(firing, "{name} has no promtool test where it fires");
        assert!(quiet, "{name} has no promtool test where it stays quiet");
    }
    for name in seen.keys() {
        assert!(
            ALERT_NAMES.contains(&name.as_str()),
            "promtool tests name unknown alert {name}"
        );
    }
}

#[test]
fn alertmanager_inhibition_uses_the_rules_family_label() {
    let am = std::fs::read_to_string(alerts_dir().join("alertmanager.yaml")).unwrap();
    let family = flashcard_monitoring::ALERT_FAMILY_LABEL;
    assert!(
        am.contains(&format!("equal: [{family}, pipeline, namespace]")),
        "the critical-silences-warning inhibition must match on {family}"
    );
    // Every family has exactly one critical alert to silence its warnings.
    let groups = rule_groups(&AlertThresholds::default(), None);
    let mut critical_per_family: BTreeMap<String, usize> = BTreeMap::new();
    for rule in groups.iter().flat_map(|g| &g.rules) {
        if let Some(f) = rule.labels.get(family) {
            let n = critical_per_family.entry(f.clone()).or_default();
            if rule.labels["severity"] == "critical" {
                *n += 1;
            }
        }
    }
    assert!(!critical_per_family.is_empty());
    for (f, n) in critical_per_family {
        assert_eq!(n, 1, "family {f} needs exactly one critical alert");
    }
}
