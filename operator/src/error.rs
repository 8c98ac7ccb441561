//! The reconcile error type: one variant per failing step, each with a stable, low-cardinality
//! `metric_label` for the failures metric (never a `Debug` string). Messages end up in the Shop's
//! status conditions, so they name what the user wrote wherever the failure can be traced to it.

use crate::component::Component;

/// The part of an API error a user can act on: the API server's own message (which names the
/// object and field) rather than the whole response's debug dump.
pub fn api_message(e: &kube::Error) -> String {
    match e {
        kube::Error::Api(status) if !status.message.is_empty() => status.message.clone(),
        other => other.to_string(),
    }
}

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Server-side apply of a child was refused.
    #[error("applying {kind} {name}: {}", api_message(.source))]
    Apply {
        /// Object kind.
        kind: &'static str,
        /// Object name.
        name: String,
        /// API error.
        #[source]
        source: kube::Error,
    },
    /// The API server refused a component's Service because of the node port the Shop asks for:
    /// outside the cluster's `--service-node-port-range`, or taken by another Service.
    #[error("spec.components.{component}.nodePort {port} was refused by the API server: {}", api_message(.source))]
    NodePort {
        /// Component whose Service was refused.
        component: Component,
        /// The node port asked for.
        port: i32,
        /// API error.
        #[source]
        source: kube::Error,
    },
    /// Listing children for orphan cleanup or status failed.
    #[error("listing {kind}: {source}")]
    List {
        /// Object kind.
        kind: &'static str,
        /// API error.
        #[source]
        source: kube::Error,
    },
    /// Reading one object by name failed (the operator's Secrets).
    #[error("reading {kind} {name}: {}", api_message(.source))]
    Get {
        /// Object kind.
        kind: &'static str,
        /// Object name.
        name: String,
        /// API error.
        #[source]
        source: kube::Error,
    },
    /// Deleting an orphaned child failed.
    #[error("deleting {kind} {name}: {source}")]
    Delete {
        /// Object kind.
        kind: &'static str,
        /// Object name.
        name: String,
        /// API error.
        #[source]
        source: kube::Error,
    },
    /// API discovery (which of the optional APIs the cluster serves) failed.
    #[error("discovering {group_version}: {source}")]
    Discovery {
        /// `group/version` asked for.
        group_version: String,
        /// API error.
        #[source]
        source: kube::Error,
    },
    /// Writing the status subresource failed.
    #[error("writing status: {0}")]
    Status(#[source] kube::Error),
    /// A child object without a name (a bug in the build step).
    #[error("rendered {0} has no name")]
    Unnamed(&'static str),
}

impl Error {
    /// Stable label for `shop_operator_reconcile_failures_total{reason=...}`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Apply { .. } | Self::NodePort { .. } => "apply",
            Self::List { .. } => "list",
            Self::Get { .. } => "get",
            Self::Delete { .. } => "delete",
            Self::Status(_) => "status",
            Self::Discovery { .. } => "discovery",
            Self::Unnamed(_) => "build",
        }
    }
}

/// Which step of a Shop's reconcile failed, and why: the variant names the step (it is in the
/// message, so a `Degraded: ReconcileFailed` condition says where the operator stopped), the
/// inner [`Error`] names the object and the API server's reason.
#[derive(Debug, thiserror::Error)]
pub enum ReconcileError {
    /// Reading (or creating) the managed stores' credentials Secret.
    #[error("credentials step: {0}")]
    Credentials(#[source] Error),
    /// Discovering which optional APIs (Ingress, Gateway API, ServiceMonitor) the cluster serves.
    #[error("discovery step: {0}")]
    Discovery(#[source] Error),
    /// Reading the children as they are (the unchanged check, a paused or invalid Shop).
    #[error("observe step: {0}")]
    Observe(#[source] Error),
    /// Server-side applying the rendered children. Its status is `Degraded: ApplyFailed` with the
    /// inner message only (see [`ReconcileError::cause`]).
    #[error("apply step: {0}")]
    Apply(#[source] Error),
    /// Deleting the children the spec no longer renders.
    #[error("prune step: {0}")]
    Prune(#[source] Error),
    /// Reading the Secrets the Shop points at (external stores, the gateway's TLS).
    #[error("secrets step: {0}")]
    Secrets(#[source] Error),
    /// Writing the Shop's status.
    #[error("status step: {0}")]
    Status(#[source] Error),
}

impl ReconcileError {
    /// The failure of the step itself, without the step's name.
    pub fn cause(&self) -> &Error {
        match self {
            Self::Credentials(e)
            | Self::Discovery(e)
            | Self::Observe(e)
            | Self::Apply(e)
            | Self::Prune(e)
            | Self::Secrets(e)
            | Self::Status(e) => e,
        }
    }

    /// The step's name, as in the message.
    pub fn step(&self) -> &'static str {
        match self {
            Self::Credentials(_) => "credentials",
            Self::Discovery(_) => "discovery",
            Self::Observe(_) => "observe",
            Self::Apply(_) => "apply",
            Self::Prune(_) => "prune",
            Self::Secrets(_) => "secrets",
            Self::Status(_) => "status",
        }
    }

    /// Stable label for the failures metric: the inner error's (what failed, not where), so the
    /// metric keeps its meaning.
    pub fn metric_label(&self) -> &'static str {
        self.cause().metric_label()
    }
}
