//! The Secret `<pipeline>-redis-credential` of a pipeline on the operator's Redis: the URL with
//! the pipeline's own ACL user ([`crate::acl`]), which the pods read as `REDIS_URL`, and the pod
//! template annotation that rolls the pods when that user's password changes.

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use serde_json::json;

use super::{RenderError, metadata, names, typed};
use crate::acl::Credential;
use crate::crd::FlashcardPipeline;

/// The Secret's key holding the URL.
pub const URL_KEY: &str = "url";
/// Pod annotation with the credential's fingerprint: a rotation rolls the pods.
pub const CREDENTIAL_ANNOTATION: &str = "flashcards.dev/redis-credential";

/// The rendered Secret. `Debug` never shows its data.
#[derive(Clone, PartialEq)]
pub struct CredentialSecret(pub Secret);

impl std::fmt::Debug for CredentialSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("CredentialSecret")
            .field(&self.0.metadata.name)
            .finish()
    }
}

/// `<pipeline>-redis-credential`, owned by the pipeline (deleted with it).
pub fn credential_secret(
    p: &FlashcardPipeline,
    credential: &Credential,
) -> Result<CredentialSecret, RenderError> {
    let mut secret: Secret = typed(
        "Secret",
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": metadata(p, names::redis_credential(&p.name_any()), "redis-credential")?,
            "type": "Opaque",
        }),
    )?;
    secret.data = Some(
        [(
            URL_KEY.to_owned(),
            ByteString(credential.url.as_bytes().to_vec()),
        )]
        .into(),
    );
    Ok(CredentialSecret(secret))
}

/// Adds the credential's fingerprint to the Deployment's pod template.
pub fn roll_on_rotation(d: &mut Deployment, credential: &Credential) {
    if let Some(spec) = d.spec.as_mut() {
        spec.template
            .metadata
            .get_or_insert_with(Default::default)
            .annotations
            .get_or_insert_with(Default::default)
            .insert(
                CREDENTIAL_ANNOTATION.to_owned(),
                credential.fingerprint.clone(),
            );
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::pipeline;
    use super::*;

    fn managed() -> FlashcardPipeline {
        pipeline(json!({"redis": {}}))
    }

    fn credential(fingerprint: &str) -> Credential {
        Credential {
            url: "redis://fc-study.biology:pw@redis:6379".into(),
            fingerprint: fingerprint.into(),
        }
    }

    #[test]
    fn the_pods_of_a_managed_pipeline_read_the_operators_secret() {
        let p = managed();
        let c = credential("00ff");
        let children = super::super::render(&p, 1, false, Some(&c)).unwrap();
        let secret = &children.redis_credential.as_ref().unwrap().0;
        assert_eq!(secret.name_any(), "biology-redis-credential");
        assert_eq!(secret.namespace().as_deref(), Some("study"));
        assert_eq!(secret.owner_references()[0].uid, "uid-1");
        assert_eq!(
            secret.data.as_ref().unwrap()[URL_KEY].0,
            c.url.as_bytes().to_vec()
        );
        assert!(!format!("{children:?}").contains("pw@"), "Debug hides it");
        for d in [&children.api_deployment, &children.worker_deployment] {
            let template = &d.spec.as_ref().unwrap().template;
            let annotations = template.metadata.as_ref().unwrap().annotations.as_ref();
            assert_eq!(annotations.unwrap()[CREDENTIAL_ANNOTATION], "00ff");
            let env =
                serde_json::to_value(&template.spec.as_ref().unwrap().containers[0].env).unwrap();
            let redis = env
                .as_array()
                .unwrap()
                .iter()
                .find(|e| e["name"] == "REDIS_URL")
                .unwrap();
            assert_eq!(
                redis["valueFrom"]["secretKeyRef"],
                json!({"name": "biology-redis-credential", "key": "url"})
            );
        }
        // Another fingerprint (a rotation) is another pod template.
        let rotated = super::super::render(&p, 1, false, Some(&credential("0100"))).unwrap();
        assert_ne!(
            rotated.api_deployment.spec.unwrap().template,
            children.api_deployment.spec.unwrap().template
        );
    }

    #[test]
    fn a_pipeline_with_its_own_url_gets_no_secret() {
        let p = pipeline(json!({"redis": {"urlSecretRef": {"name": "redis", "key": "url"}}}));
        let children = super::super::render(&p, 1, false, None).unwrap();
        assert!(children.redis_credential.is_none());
        let template = children.api_deployment.spec.unwrap().template;
        let annotations = template.metadata.unwrap().annotations.unwrap();
        assert!(!annotations.contains_key(CREDENTIAL_ANNOTATION));
    }
}
