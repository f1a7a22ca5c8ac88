//! The generated CRD files must match the Rust types. `UPDATE_GENERATED=1 cargo test -p
//! flashcard-operator --test crdgen` rewrites them.

use std::path::PathBuf;

use flashcard_operator::crdgen::{CRD_PATH, HELM_CRD_PATH, crd_yaml, helm_template};

fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("operator/ has a parent")
        .to_path_buf()
}

fn check(rel: &str, expected: &str) {
    let path = workspace_root().join(rel);
    if std::env::var_os("UPDATE_GENERATED").is_some() {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, expected).unwrap();
        return;
    }
    let actual = std::fs::read_to_string(&path).unwrap_or_default();
    if actual != expected {
        let first_diff = actual
            .lines()
            .zip(expected.lines())
            .position(|(a, e)| a != e)
            .unwrap_or(actual.lines().count().min(expected.lines().count()));
        panic!(
            "{rel} is out of date (first difference at line {}).\nRegenerate with: \
             UPDATE_GENERATED=1 cargo test -p flashcard-operator --test crdgen",
            first_diff + 1
        );
    }
}

#[test]
fn crd_file_is_current() {
    check(CRD_PATH, &crd_yaml().unwrap());
}

#[test]
fn helm_crd_template_is_current() {
    check(HELM_CRD_PATH, &helm_template().unwrap());
}

#[test]
fn helm_template_wraps_the_crd() {
    let plain = crd_yaml().unwrap();
    let helm = helm_template().unwrap();
    assert!(helm.contains("{{- if .Values.crds.install }}\n"));
    assert!(helm.trim_end().ends_with("{{- end }}"));
    assert!(helm.contains("  {{- if .Values.crds.keep }}\n  annotations:\n    helm.sh/resource-policy: keep\n  {{- end }}\n"));
    // Without the template lines, the Helm copy is the plain CRD.
    let stripped: String = helm
        .lines()
        .filter(|l| {
            !l.contains("{{") && !l.contains("helm.sh/resource-policy") && *l != "  annotations:"
        })
        .map(|l| format!("{l}\n"))
        .collect();
    assert_eq!(stripped, plain);
}
