//! The CRD the operator generates: the Helm template wraps the same definition (`cargo xtask
//! check` keeps the committed copies current).

use flashcard_operator::crdgen::{crd_yaml, helm_template};

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
