//! The FlashcardPipeline operator: CRD types, rendering of the children, the autoscaling and
//! budget decisions, the reconciler, leader election and the operator's own metrics.

pub mod acl;
pub mod backoff;
pub mod budget;
pub mod children;
pub mod context;
pub mod controller;
pub mod crd;
pub mod crdgen;
pub mod events;
pub mod follow;
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
    InvalidName(#[from] flashcard_core::keyspace::InvalidPipelineName),
    #[error("the pipeline has no namespace")]
    NoNamespace,
    /// A `deletionPolicy: Delete` pipeline's store could not be cleaned up; the finalizer stays.
    #[error("deletion blocked: {0}")]
    DeletionBlocked(String),
    /// A deletion waits for the pipeline's pods to stop before cleaning up (not a failure).
    #[error("deletion in progress: {0}")]
    CleanupPending(String),
    /// Some children could not be applied (the others were; condition `Applied` names them).
    #[error("children not applied: {message}")]
    ChildrenFailed {
        /// The metric label of the first failure.
        label: &'static str,
        message: String,
    },
    /// The finalizer helper could not work with the object (no name, bad index).
    #[error("finalizer: {0}")]
    Finalizer(String),
}

impl From<kube::runtime::finalizer::Error<Error>> for Error {
    fn from(e: kube::runtime::finalizer::Error<Error>) -> Self {
        use kube::runtime::finalizer::Error as F;
        match e {
            F::ApplyFailed(e) | F::CleanupFailed(e) => e,
            F::AddFinalizer(e) | F::RemoveFinalizer(e) => Error::Kube(e),
            other => Error::Finalizer(other.to_string()),
        }
    }
}

impl Error {
    /// The metric label of an API error.
    pub fn kube_label(e: &kube::Error) -> &'static str {
        match e {
            kube::Error::Api(s) if s.code == 409 => "conflict",
            _ => "kube",
        }
    }

    /// The `error` label of `flashcards_operator_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Error::Kube(e) => Self::kube_label(e),
            Error::Render(_) => "render",
            Error::InvalidName(_) => "invalid_name",
            Error::NoNamespace => "no_namespace",
            Error::DeletionBlocked(_) => "deletion_blocked",
            Error::CleanupPending(_) => "cleanup_pending",
            Error::Finalizer(_) => "finalizer",
            Error::ChildrenFailed { label, .. } => label,
        }
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;
pub mod connector;
pub mod consent;
pub mod http;
pub mod leader;
pub mod telemetry;
