//! Secrets by consent: a pipeline's pods get a Secret (the Redis URL, the provider's API key, the
//! admin token, the client API keys) only when the Secret carries the label
//! [`CONSENT_LABEL`]`=true`, set by whoever owns the Secret. Without it, whoever may create a
//! FlashcardPipeline but not read Secrets could name any Secret of the namespace and have the
//! workers send it to a `baseUrl` of their choice. A pipeline that names an unlabelled Secret
//! gets the condition `SecretsAllowed=False` and no Deployment is applied for it (see
//! `reconcile::sync`); the operator reads only the label (metadata), except for the Redis URL it
//! connects with.

use std::collections::BTreeSet;

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::Api;

use crate::crd::FlashcardPipeline;

/// The label a Secret needs before a pipeline may use it.
pub const CONSENT_LABEL: &str = "flashcards.dev/pipeline-secret";
/// Its value.
pub const CONSENT_VALUE: &str = "true";

/// The names of the Secrets the pipeline's pods would get, each once, in order.
pub fn referenced(p: &FlashcardPipeline) -> BTreeSet<String> {
    let spec = &p.spec;
    [
        Some(&spec.redis.url_secret_ref),
        spec.provider.api_key_secret_ref.as_ref(),
        spec.api.admin_token_secret_ref.as_ref(),
        spec.api.identity.api_keys_secret_ref.as_ref(),
    ]
    .into_iter()
    .flatten()
    .map(|r| r.name.clone())
    .collect()
}

/// Whether a Secret with these labels consents.
pub fn consents(labels: &std::collections::BTreeMap<String, String>) -> bool {
    labels.get(CONSENT_LABEL).map(String::as_str) == Some(CONSENT_VALUE)
}

/// Why a Secret is refused (the condition's message names it and the label to set).
pub fn refusal(name: &str) -> String {
    format!("Secret {name} is not labelled {CONSENT_LABEL}={CONSENT_VALUE}")
}

/// The referenced Secrets that do not consent (missing ones count as refused: the pods would
/// not start anyway), read as metadata only. `Err`: the API server did not answer.
pub async fn refused(
    client: &kube::Client,
    p: &FlashcardPipeline,
) -> Result<Vec<String>, kube::Error> {
    let ns = p.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut refused = Vec::new();
    for name in referenced(p) {
        match api.get_metadata_opt(&name).await? {
            Some(meta) if consents(meta.labels()) => {}
            Some(_) => refused.push(refusal(&name)),
            None => refused.push(format!("Secret {name} does not exist")),
        }
    }
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SecretKeyRef;
    use crate::render::test_support::minimal;

    #[test]
    fn every_referenced_secret_is_checked_once() {
        let mut p = minimal();
        assert_eq!(referenced(&p).into_iter().collect::<Vec<_>>(), ["redis"]);
        let r = |name: &str| {
            Some(SecretKeyRef {
                name: name.into(),
                key: "k".into(),
            })
        };
        p.spec.provider.api_key_secret_ref = r("openai");
        p.spec.api.admin_token_secret_ref = r("redis");
        p.spec.api.identity.api_keys_secret_ref = r("keys");
        assert_eq!(
            referenced(&p).into_iter().collect::<Vec<_>>(),
            ["keys", "openai", "redis"]
        );
    }

    #[test]
    fn only_the_label_with_its_value_consents() {
        let mut labels = std::collections::BTreeMap::new();
        assert!(!consents(&labels));
        labels.insert(CONSENT_LABEL.to_owned(), "yes".to_owned());
        assert!(!consents(&labels));
        labels.insert(CONSENT_LABEL.to_owned(), CONSENT_VALUE.to_owned());
        assert!(consents(&labels));
    }
}
