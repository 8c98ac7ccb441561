//! The reconcile error type: one variant per failing step, each with a stable, low-cardinality
//! `metric_label` for the failures metric (never a `Debug` string).

/// Why a reconcile failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// Server-side apply of a child was refused.
    #[error("applying {kind} {name}: {source}")]
    Apply {
        /// Object kind.
        kind: &'static str,
        /// Object name.
        name: String,
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
            Self::Apply { .. } => "apply",
            Self::List { .. } => "list",
            Self::Delete { .. } => "delete",
            Self::Status(_) => "status",
            Self::Unnamed(_) => "build",
        }
    }
}
