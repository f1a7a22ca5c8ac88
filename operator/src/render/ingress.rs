//! The optional Ingress, with the ingress-nginx annotations SSE streams need.

use k8s_openapi::api::networking::v1::Ingress;
use kube::ResourceExt;
use serde_json::json;

use super::{PORT_NAME, RenderError, metadata, names, typed};
use crate::crd::FlashcardPipeline;

/// Annotations that keep an SSE stream open and unbuffered behind ingress-nginx: no response
/// buffering, an hour of read/send timeout (the default 60 s would cut idle streams), and
/// HTTP/1.1 to the upstream. `spec.api.ingress.annotations` may override each.
pub const SSE_ANNOTATIONS: &[(&str, &str)] = &[
    ("nginx.ingress.kubernetes.io/proxy-buffering", "off"),
    ("nginx.ingress.kubernetes.io/proxy-request-buffering", "off"),
    ("nginx.ingress.kubernetes.io/proxy-read-timeout", "3600"),
    ("nginx.ingress.kubernetes.io/proxy-send-timeout", "3600"),
    ("nginx.ingress.kubernetes.io/proxy-http-version", "1.1"),
];

/// The Ingress `<pipeline>`, if the spec asks for one.
pub fn ingress(p: &FlashcardPipeline) -> Result<Option<Ingress>, RenderError> {
    let Some(spec) = &p.spec.api.ingress else {
        return Ok(None);
    };
    let mut meta = metadata(p, names::pipeline(&p.name_any()), "api")?;
    let mut annotations: std::collections::BTreeMap<String, String> = SSE_ANNOTATIONS
        .iter()
        .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
        .collect();
    annotations.extend(spec.annotations.clone());
    meta["annotations"] = json!(annotations);
    let mut ing = json!({
        "apiVersion": "networking.k8s.io/v1",
        "kind": "Ingress",
        "metadata": meta,
        "spec": {
            "rules": [{
                "host": spec.host,
                "http": {"paths": [{
                    "path": spec.path,
                    "pathType": "Prefix",
                    "backend": {"service": {"name": names::api(&p.name_any()),
                                            "port": {"name": PORT_NAME}}},
                }]},
            }],
        },
    });
    if let Some(class) = &spec.class_name {
        ing["spec"]["ingressClassName"] = json!(class);
    }
    if let Some(tls) = &spec.tls_secret_name {
        ing["spec"]["tls"] = json!([{"hosts": [spec.host], "secretName": tls}]);
    }
    typed("Ingress", ing).map(Some)
}

#[cfg(test)]
mod tests {
    use super::super::test_support::*;
    use super::*;

    #[test]
    fn ingress_is_sse_safe() {
        let ing = ingress(&full()).unwrap().unwrap();
        let a = ing.metadata.annotations.unwrap();
        assert_eq!(a["nginx.ingress.kubernetes.io/proxy-buffering"], "off");
        assert_eq!(a["nginx.ingress.kubernetes.io/proxy-read-timeout"], "3600");
        assert_eq!(a["nginx.ingress.kubernetes.io/proxy-http-version"], "1.1");
        assert_eq!(a["cert-manager.io/cluster-issuer"], "le");
        let spec = ing.spec.unwrap();
        assert_eq!(spec.ingress_class_name.as_deref(), Some("nginx"));
        let tls = &spec.tls.unwrap()[0];
        assert_eq!(tls.secret_name.as_deref(), Some("cards-tls"));
        assert_eq!(
            tls.hosts.as_deref(),
            Some(&["cards.example.org".to_owned()][..])
        );
        let rule = &spec.rules.unwrap()[0];
        assert_eq!(rule.host.as_deref(), Some("cards.example.org"));
        let path = &rule.http.as_ref().unwrap().paths[0];
        assert_eq!(path.backend.service.as_ref().unwrap().name, "biology-api");
    }

    #[test]
    fn user_annotations_override_defaults() {
        let mut p = full();
        let ing_spec = p.spec.api.ingress.as_mut().unwrap();
        ing_spec.annotations.insert(
            "nginx.ingress.kubernetes.io/proxy-read-timeout".into(),
            "86400".into(),
        );
        let a = ingress(&p).unwrap().unwrap().metadata.annotations.unwrap();
        assert_eq!(a["nginx.ingress.kubernetes.io/proxy-read-timeout"], "86400");
    }

    #[test]
    fn no_ingress_unless_asked() {
        assert!(ingress(&minimal()).unwrap().is_none());
    }
}
