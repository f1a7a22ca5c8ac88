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
        spec.redis.url_secret_ref.as_ref(),
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

/// Why a Secret the operator may not read is refused: with `rbac.restrictSecrets` its RBAC
/// names only some Secrets, and the fix is to list this one.
pub fn forbidden(name: &str) -> String {
    format!(
        "Secret {name} may not be read by the operator (RBAC); with rbac.restrictSecrets add it \
         to rbac.secretNames"
    )
}

/// The referenced Secrets that do not consent (missing ones count as refused: the pods would
/// not start anyway; so do ones the operator's RBAC does not let it read), read as metadata
/// only. `Err`: the API server did not answer.
pub async fn refused(
    client: &kube::Client,
    p: &FlashcardPipeline,
) -> Result<Vec<String>, kube::Error> {
    let ns = p.namespace().unwrap_or_default();
    let api: Api<Secret> = Api::namespaced(client.clone(), &ns);
    let mut refused = Vec::new();
    for name in referenced(p) {
        match api.get_metadata_opt(&name).await {
            Ok(Some(meta)) if consents(meta.labels()) => {}
            Ok(Some(_)) => refused.push(refusal(&name)),
            Ok(None) => refused.push(format!("Secret {name} does not exist")),
            Err(kube::Error::Api(s)) if s.code == 403 => refused.push(forbidden(&name)),
            Err(e) => return Err(e),
        }
    }
    Ok(refused)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crd::SecretKeyRef;
    use crate::render::test_support::minimal;

    fn r(name: &str) -> Option<SecretKeyRef> {
        Some(SecretKeyRef {
            name: name.into(),
            key: "k".into(),
        })
    }

    #[test]
    fn every_referenced_secret_is_checked_once() {
        let mut p = minimal();
        assert_eq!(referenced(&p).into_iter().collect::<Vec<_>>(), ["redis"]);
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

    /// A Secret the operator's RBAC does not let it read (`rbac.restrictSecrets` without its
    /// name) is refused with the fix in the message, beside the other refusals; an API server
    /// that fails is an error, never a consent.
    #[tokio::test]
    async fn a_secret_the_operator_may_not_read_is_refused_with_the_fix() {
        use http::{Request, Response, StatusCode};
        use kube::client::Body;
        use tower_test::mock;

        let status = |code: u16, reason: &str| {
            serde_json::json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                               "reason": reason, "code": code, "message": reason})
        };
        let answer = move |path: &str, server_fails: bool| -> (StatusCode, serde_json::Value) {
            let name = path.rsplit('/').next().unwrap_or_default();
            match name {
                _ if server_fails => (
                    StatusCode::INTERNAL_SERVER_ERROR,
                    status(500, "InternalError"),
                ),
                "redis" => (
                    StatusCode::OK,
                    serde_json::json!({"apiVersion": "meta.k8s.io/v1", "kind": "PartialObjectMetadata",
                        "metadata": {"name": "redis", "namespace": "study",
                                     "labels": {CONSENT_LABEL: CONSENT_VALUE}}}),
                ),
                "openai" => (StatusCode::FORBIDDEN, status(403, "Forbidden")),
                _ => (StatusCode::NOT_FOUND, status(404, "NotFound")),
            }
        };
        let mut p = minimal();
        p.spec.provider.api_key_secret_ref = r("openai");
        p.spec.api.identity.api_keys_secret_ref = r("keys");
        for server_fails in [false, true] {
            let (service, mut handle) = mock::pair::<Request<Body>, Response<Body>>();
            tokio::spawn(async move {
                while let Some((req, send)) = handle.next_request().await {
                    let (code, body) = answer(req.uri().path(), server_fails);
                    send.send_response(
                        Response::builder()
                            .status(code)
                            .body(Body::from(serde_json::to_vec(&body).unwrap()))
                            .unwrap(),
                    );
                }
            });
            let client = kube::Client::new(service, "default");
            let result = refused(&client, &p).await;
            if server_fails {
                assert!(result.is_err(), "{result:?}");
            } else {
                assert_eq!(
                    result.unwrap(),
                    ["Secret keys does not exist".to_owned(), forbidden("openai")]
                );
            }
        }
    }
}
