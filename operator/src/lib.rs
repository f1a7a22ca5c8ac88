//! The FlashcardPipeline operator: CRD types, rendering of the children, the autoscaling and
//! budget decisions, the reconciler, leader election and the operator's own metrics.

pub mod budget;
pub mod children;
pub mod context;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod events;
pub mod metrics;
pub mod rbac;
pub mod reconcile;
pub mod render;
pub mod scaling;
pub mod state;

#[cfg(test)]
mod fixtures;

/// Reconcile failures. Each maps to the `error` label of the errors metric; all of them lead to
/// a requeue through `error_policy`, never to a crash.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Render(#[from] render::RenderError),
    #[error(transparent)]
    InvalidName(#[from] flashcard_service::keyspace::InvalidPipelineName),
    #[error("the pipeline has no namespace")]
    NoNamespace,
}

impl Error {
    /// The `error` label of `flashcards_operator_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(kube::Error::Api(s)) if s.code == 409 => "conflict",
            Error::Kube(_) => "kube",
            Error::Render(_) => "render",
            Error::InvalidName(_) => "invalid_name",
            Error::NoNamespace => "no_namespace",
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
pub mod connector;
pub mod http;
pub mod leader;
pub mod telemetry;
