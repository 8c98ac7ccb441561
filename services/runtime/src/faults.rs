//! Fault flags: deliberate, switchable failures (slow or failing inventory, a paused notification
//! consumer, failing Kafka publishes) read from a JSON file that may change while the process runs.
//!
//! Exists so that a Shop's `spec.faults` can show what the shop's resilience mechanisms do (the
//! order service's breaker opening and closing, the outbox holding events back, the consumer
//! catching up exactly once) on the real processes, without a restart and without a test-only
//! build. The operator renders the flags into a ConfigMap mounted read-only into the pods; the
//! kubelet replaces the file through a symlink swap when the ConfigMap changes, so the file is
//! watched by its stamp (mtime, size, inode), as the gateway watches its TLS certificate.
//!
//! The contract (the operator codes against it):
//! * `SHOP_FAULTS_FILE` names the file; unset means no fault machinery at all (the services hold
//!   an `Option<Faults>` that is `None`, so nothing is read, polled or rolled).
//! * `SHOP_FAULTS_POLL_MS` (default 1000) is how often the file's stamp is looked at.
//! * The file is a JSON object, camelCase, every field optional (missing or `null` = off), unknown
//!   fields ignored: `{"inventoryLatencyMs": 250, "inventoryErrorRatio": 0.5,
//!   "notificationConsumerPaused": true, "kafkaPublishFailureRatio": 0.2}`.
//! * A missing file means no faults. An unreadable or invalid file (bad JSON, a ratio outside
//!   0..=1, a latency above 60 000 ms) keeps the last good flags and logs one warning naming the
//!   field, once per change of the file.
//! * Every change of the active flags is logged at info (`fault flags changed: ...`); the gauge
//!   family `shop_fault_active{fault}` shows the current values and the counter
//!   `shop_faults_injected_total{fault}` counts the failures injected.

use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use arc_swap::ArcSwap;
use parking_lot::Mutex;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use serde::Deserialize;
use tokio_util::sync::CancellationToken;

use crate::Metrics;
use crate::filewatch::FileStamp as Stamp;

/// The longest injectable inventory latency, in milliseconds.
pub const MAX_LATENCY_MS: u64 = 60_000;

/// The fault settings of a service that reads fault flags (flatten into its `clap::Parser`).
#[derive(clap::Args, Clone, Debug, Default)]
pub struct FaultArgs {
    /// JSON file of fault flags to inject, e.g. {"inventoryErrorRatio": 0.5} (docs/reliability.md,
    /// "Fault flags"); changes are picked up without a restart. Unset: no fault injection at all.
    #[arg(long, env = "SHOP_FAULTS_FILE")]
    pub faults_file: Option<PathBuf>,

    /// How often, in milliseconds, the fault flags file is looked at for changes.
    #[arg(long, env = "SHOP_FAULTS_POLL_MS", default_value_t = 1000)]
    pub faults_poll_ms: u64,
}

/// One kind of fault: names its flag in the file, in logs and in the metrics' `fault` label.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Fault {
    /// `inventoryLatencyMs`: inventory's API answers this much later.
    InventoryLatency,
    /// `inventoryErrorRatio`: this share of inventory's API calls answer 503.
    InventoryError,
    /// `notificationConsumerPaused`: the notification consumer takes no records.
    NotificationConsumerPaused,
    /// `kafkaPublishFailureRatio`: this share of the order outbox's Kafka publishes fail.
    KafkaPublishFailure,
}

impl Fault {
    /// Every fault, in the file's order.
    pub const ALL: [Fault; 4] = [
        Fault::InventoryLatency,
        Fault::InventoryError,
        Fault::NotificationConsumerPaused,
        Fault::KafkaPublishFailure,
    ];

    /// The field of the fault flags file.
    pub fn field(self) -> &'static str {
        match self {
            Fault::InventoryLatency => "inventoryLatencyMs",
            Fault::InventoryError => "inventoryErrorRatio",
            Fault::NotificationConsumerPaused => "notificationConsumerPaused",
            Fault::KafkaPublishFailure => "kafkaPublishFailureRatio",
        }
    }

    /// The metrics' `fault` label.
    pub fn label(self) -> &'static str {
        match self {
            Fault::InventoryLatency => "inventory_latency_ms",
            Fault::InventoryError => "inventory_error_ratio",
            Fault::NotificationConsumerPaused => "notification_consumer_paused",
            Fault::KafkaPublishFailure => "kafka_publish_failure_ratio",
        }
    }
}

/// The active fault flags; the default is "no faults".
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct FaultFlags {
    /// Milliseconds added before each inventory API answer (0 = none).
    pub inventory_latency_ms: u64,
    /// Share (0..=1) of inventory API calls answered with an injected 503.
    pub inventory_error_ratio: f64,
    /// The notification consumer takes no records while true.
    pub notification_consumer_paused: bool,
    /// Share (0..=1) of the order outbox's Kafka publishes that fail.
    pub kafka_publish_failure_ratio: f64,
}

impl FaultFlags {
    /// True when no fault is on.
    pub fn is_none(&self) -> bool {
        *self == FaultFlags::default()
    }

    /// The value of `fault` as the `shop_fault_active` gauge shows it (ms, ratio, or 0/1).
    pub fn value(&self, fault: Fault) -> f64 {
        match fault {
            #[allow(clippy::cast_precision_loss)] // at most 60 000
            Fault::InventoryLatency => self.inventory_latency_ms as f64,
            Fault::InventoryError => self.inventory_error_ratio,
            Fault::NotificationConsumerPaused => {
                f64::from(u8::from(self.notification_consumer_paused))
            }
            Fault::KafkaPublishFailure => self.kafka_publish_failure_ratio,
        }
    }
}

impl fmt::Display for FaultFlags {
    /// `inventoryErrorRatio=0.5 notificationConsumerPaused=true`, only the faults that are on,
    /// or `none`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut any = false;
        for fault in Fault::ALL {
            let on = match fault {
                Fault::InventoryLatency => self.inventory_latency_ms > 0,
                Fault::InventoryError => self.inventory_error_ratio > 0.0,
                Fault::NotificationConsumerPaused => self.notification_consumer_paused,
                Fault::KafkaPublishFailure => self.kafka_publish_failure_ratio > 0.0,
            };
            if !on {
                continue;
            }
            if any {
                f.write_str(" ")?;
            }
            any = true;
            match fault {
                Fault::InventoryLatency => {
                    write!(f, "{}={}", fault.field(), self.inventory_latency_ms)?
                }
                Fault::NotificationConsumerPaused => write!(f, "{}=true", fault.field())?,
                _ => write!(f, "{}={}", fault.field(), self.value(fault))?,
            }
        }
        if !any {
            f.write_str("none")?;
        }
        Ok(())
    }
}

/// Why a fault flags file was not taken.
#[derive(Debug, thiserror::Error)]
pub enum FaultsError {
    /// The file exists but cannot be read.
    #[error("cannot read the fault flags file {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// The file's content is not valid fault flags.
    #[error("fault flags file {path}: {field}: {reason}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// The field at fault (`(document)` when the JSON itself does not parse).
        field: String,
        /// What is wrong with it.
        reason: String,
    },
}

/// A field of the fault flags document that is not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct InvalidFlag {
    /// The field at fault (`(document)` when the JSON itself does not parse).
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawFlags {
    inventory_latency_ms: Option<u64>,
    inventory_error_ratio: Option<f64>,
    notification_consumer_paused: Option<bool>,
    kafka_publish_failure_ratio: Option<f64>,
}

fn ratio(fault: Fault, v: Option<f64>) -> Result<f64, InvalidFlag> {
    match v {
        None => Ok(0.0),
        Some(r) if (0.0..=1.0).contains(&r) => Ok(r),
        Some(r) => Err(InvalidFlag {
            field: fault.field().to_owned(),
            reason: format!("{r} is not a ratio between 0 and 1"),
        }),
    }
}

/// Parses and validates the content of a fault flags file.
pub fn parse(text: &str) -> Result<FaultFlags, InvalidFlag> {
    let de = &mut serde_json::Deserializer::from_str(text);
    let raw: RawFlags = serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        InvalidFlag {
            // `.` is the document itself, `?` a syntax error before any field was read.
            field: if path == "." || path == "?" {
                "(document)".to_owned()
            } else {
                path
            },
            reason: e.into_inner().to_string(),
        }
    })?;
    let latency = raw.inventory_latency_ms.unwrap_or(0);
    if latency > MAX_LATENCY_MS {
        return Err(InvalidFlag {
            field: Fault::InventoryLatency.field().to_owned(),
            reason: format!("{latency} ms is above the limit of {MAX_LATENCY_MS} ms"),
        });
    }
    Ok(FaultFlags {
        inventory_latency_ms: latency,
        inventory_error_ratio: ratio(Fault::InventoryError, raw.inventory_error_ratio)?,
        notification_consumer_paused: raw.notification_consumer_paused.unwrap_or(false),
        kafka_publish_failure_ratio: ratio(
            Fault::KafkaPublishFailure,
            raw.kafka_publish_failure_ratio,
        )?,
    })
}

/// Reads the flags from `path`: a missing file is no faults.
pub fn read(path: &Path) -> Result<FaultFlags, FaultsError> {
    let text = match std::fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(FaultFlags::default()),
        Err(source) => {
            return Err(FaultsError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    parse(&text).map_err(|e| FaultsError::Invalid {
        path: path.to_owned(),
        field: e.field,
        reason: e.reason,
    })
}

/// The outcome of one look at the file.
#[derive(Debug)]
pub enum Reload {
    /// The file's stamp did not change since the last look.
    Unchanged,
    /// The file changed; the active flags are now `new` (perhaps equal to `old`).
    Changed {
        /// The flags before.
        old: FaultFlags,
        /// The flags now.
        new: FaultFlags,
    },
    /// The file changed but cannot be used; the previous flags stay.
    Failed(FaultsError),
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct FaultLabels {
    fault: &'static str,
}

#[derive(Debug)]
struct Inner {
    path: PathBuf,
    current: ArcSwap<FaultFlags>,
    /// Wakes the tasks that act on a change at once (the notification consumer's pause).
    changes: tokio::sync::watch::Sender<FaultFlags>,
    seen: Mutex<Option<Stamp>>,
    active: Family<FaultLabels, Gauge<f64, AtomicU64>>,
    injected: Family<FaultLabels, Counter>,
}

/// The fault flags of this process: reading them is one atomic load; cheap to clone.
#[derive(Clone, Debug)]
pub struct Faults {
    inner: Arc<Inner>,
}

impl Faults {
    /// The flags in `path` now (a file that cannot be used is logged and counts as no faults).
    pub fn open(path: impl Into<PathBuf>) -> Faults {
        let path = path.into();
        // Stamped before reading: a change while reading is seen again at the next look.
        let seen = Stamp::of(&path);
        let flags = match read(&path) {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "fault flags not usable; starting without faults");
                FaultFlags::default()
            }
        };
        let faults = Faults {
            inner: Arc::new(Inner {
                path,
                current: ArcSwap::from_pointee(flags),
                changes: tokio::sync::watch::Sender::new(flags),
                seen: Mutex::new(seen),
                active: Family::default(),
                injected: Family::default(),
            }),
        };
        faults.publish(&flags);
        if !flags.is_none() {
            tracing::info!(file = %faults.inner.path.display(), "fault flags changed: {flags}");
        }
        faults
    }

    /// From the settings: `None` when `SHOP_FAULTS_FILE` is unset (no fault machinery at all);
    /// otherwise the flags, their metrics registered in `metrics`, and a task polling the file
    /// every `SHOP_FAULTS_POLL_MS` until `stop`.
    pub fn from_args(
        args: &FaultArgs,
        metrics: &Metrics,
        stop: CancellationToken,
    ) -> Option<Faults> {
        let path = args
            .faults_file
            .clone()
            .filter(|p| !p.as_os_str().is_empty())?;
        let faults = Faults::open(path);
        faults.register(metrics);
        let interval = Duration::from_millis(args.faults_poll_ms.max(10));
        tokio::spawn(faults.clone().poll(interval, stop));
        Some(faults)
    }

    /// Registers `shop_fault_active{fault}` and `shop_faults_injected_total{fault}`.
    pub fn register(&self, metrics: &Metrics) {
        let mut registry = metrics.registry();
        registry.register(
            "shop_fault_active",
            "Active fault flags (docs/reliability.md, Fault flags): milliseconds, ratio, or 1 for on",
            self.inner.active.clone(),
        );
        registry.register(
            "shop_faults_injected",
            "Failures injected by the fault flags (delayed or failed calls, failed publishes, pauses)",
            self.inner.injected.clone(),
        );
    }

    /// The file the flags come from.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// A receiver that is told each time the file changes (`changed()`), for a task that must
    /// act on a change at once rather than at its next look at [`Faults::flags`].
    pub fn subscribe(&self) -> tokio::sync::watch::Receiver<FaultFlags> {
        self.inner.changes.subscribe()
    }

    /// The active flags (one atomic load).
    pub fn flags(&self) -> FaultFlags {
        **self.inner.current.load()
    }

    /// Counts one injection of `fault` (`shop_faults_injected_total`).
    pub fn count(&self, fault: Fault) {
        self.inner
            .injected
            .get_or_create(&FaultLabels {
                fault: fault.label(),
            })
            .inc();
    }

    /// Rolls the dice for a ratio fault (`inventoryErrorRatio`, `kafkaPublishFailureRatio`):
    /// true, and counted, with the fault's probability.
    pub fn roll(&self, fault: Fault) -> bool {
        let p = self.flags().value(fault);
        let hit = p >= 1.0 || (p > 0.0 && rand::random::<f64>() < p);
        if hit {
            self.count(fault);
        }
        hit
    }

    fn publish(&self, flags: &FaultFlags) {
        for fault in Fault::ALL {
            self.inner
                .active
                .get_or_create(&FaultLabels {
                    fault: fault.label(),
                })
                .set(flags.value(fault));
        }
    }

    /// Reads the file again when its stamp differs from the last look. A file that cannot be
    /// used is not read again until it changes, so it is reported once, not at every poll.
    pub fn reload_if_changed(&self) -> Reload {
        let now = Stamp::of(&self.inner.path);
        {
            let mut seen = self.inner.seen.lock();
            if *seen == now {
                return Reload::Unchanged;
            }
            *seen = now;
        }
        match read(&self.inner.path) {
            Ok(new) => {
                let old = *self.inner.current.swap(Arc::new(new));
                // Waiters first, then the gauge: whoever sees the gauge changed may rely on the
                // tasks that wait for changes having been woken.
                self.inner.changes.send_replace(new);
                self.publish(&new);
                Reload::Changed { old, new }
            }
            Err(e) => Reload::Failed(e),
        }
    }

    /// Looks at the file every `interval` (on a blocking thread: file system calls) until
    /// `stop`, logging each change of the flags (info) and each unusable file (warning).
    pub async fn poll(self, interval: Duration, stop: CancellationToken) {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is immediate: the file was just read.
        tick.tick().await;
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                () = stop.cancelled() => break,
            }
            let faults = self.clone();
            match tokio::task::spawn_blocking(move || faults.reload_if_changed()).await {
                Ok(Reload::Unchanged) => {}
                Ok(Reload::Changed { old, new }) => {
                    if old != new {
                        tracing::info!(file = %self.inner.path.display(), previous = %old, "fault flags changed: {new}");
                    }
                }
                Ok(Reload::Failed(e)) => {
                    let field = match &e {
                        FaultsError::Invalid { field, .. } => field.as_str(),
                        FaultsError::Read { .. } => "(file)",
                    };
                    tracing::warn!(error = %e, %field, "fault flags file changed but cannot be used; the previous flags stay");
                }
                Err(e) => tracing::warn!(error = %e, "fault flags reload task failed"),
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn every_field_is_optional_and_unknown_fields_are_ignored() {
        assert_eq!(parse("{}").unwrap(), FaultFlags::default());
        assert_eq!(
            parse(r#"{"inventoryLatencyMs": null, "somethingNew": [1]}"#).unwrap(),
            FaultFlags::default()
        );
        let all = parse(
            r#"{"inventoryLatencyMs": 250, "inventoryErrorRatio": 0.5,
                "notificationConsumerPaused": true, "kafkaPublishFailureRatio": 0.2}"#,
        )
        .unwrap();
        assert_eq!(
            all,
            FaultFlags {
                inventory_latency_ms: 250,
                inventory_error_ratio: 0.5,
                notification_consumer_paused: true,
                kafka_publish_failure_ratio: 0.2,
            }
        );
        assert_eq!(
            all.to_string(),
            "inventoryLatencyMs=250 inventoryErrorRatio=0.5 notificationConsumerPaused=true kafkaPublishFailureRatio=0.2"
        );
        assert_eq!(FaultFlags::default().to_string(), "none");
        // Bounds are inclusive.
        let edge = parse(r#"{"inventoryLatencyMs": 60000, "inventoryErrorRatio": 1, "kafkaPublishFailureRatio": 0}"#)
            .unwrap();
        assert_eq!(edge.inventory_latency_ms, 60_000);
        assert!((edge.inventory_error_ratio - 1.0).abs() < f64::EPSILON);
    }

    #[test]
    fn an_invalid_document_names_the_field() {
        let field = |text: &str| parse(text).unwrap_err().field;
        assert_eq!(
            field(r#"{"inventoryErrorRatio": 1.5}"#),
            "inventoryErrorRatio"
        );
        assert_eq!(
            field(r#"{"kafkaPublishFailureRatio": -0.1}"#),
            "kafkaPublishFailureRatio"
        );
        assert_eq!(
            field(r#"{"inventoryLatencyMs": 60001}"#),
            "inventoryLatencyMs"
        );
        assert_eq!(field(r#"{"inventoryLatencyMs": -5}"#), "inventoryLatencyMs");
        assert_eq!(
            field(r#"{"notificationConsumerPaused": "yes"}"#),
            "notificationConsumerPaused"
        );
        assert_eq!(field(r#"{"inventoryErrorRatio": 0.5"#), "(document)");
        assert_eq!(field("not json"), "(document)");
        assert_eq!(field("[]"), "(document)");
        let e = parse(r#"{"inventoryErrorRatio": 1.5}"#).unwrap_err();
        assert!(e.reason.contains("1.5"), "{e}");
    }

    /// Replaces the file as the kubelet does: a new file renamed over the old one.
    fn swap(path: &Path, text: &str) {
        let tmp = path.with_extension("tmp");
        std::fs::write(&tmp, text).unwrap();
        std::fs::rename(&tmp, path).unwrap();
    }

    #[test]
    fn a_changed_file_is_taken_and_a_bad_one_keeps_the_last_good_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faults.json");
        // Missing: no faults.
        let faults = Faults::open(&path);
        assert!(faults.flags().is_none());
        assert!(matches!(faults.reload_if_changed(), Reload::Unchanged));

        let mut changes = faults.subscribe();
        swap(&path, r#"{"inventoryErrorRatio": 1.0}"#);
        assert!(matches!(faults.reload_if_changed(), Reload::Changed { .. }));
        assert!(changes.has_changed().unwrap());
        assert!((changes.borrow_and_update().inventory_error_ratio - 1.0).abs() < f64::EPSILON);
        assert!((faults.flags().inventory_error_ratio - 1.0).abs() < f64::EPSILON);
        assert!(faults.roll(Fault::InventoryError));
        assert!(!faults.roll(Fault::KafkaPublishFailure));
        assert!(matches!(faults.reload_if_changed(), Reload::Unchanged));

        // Bad content: reported once, the last good flags stay.
        swap(&path, r#"{"inventoryErrorRatio": 2}"#);
        match faults.reload_if_changed() {
            Reload::Failed(FaultsError::Invalid { field, .. }) => {
                assert_eq!(field, "inventoryErrorRatio");
            }
            other => panic!("expected an invalid file, got {other:?}"),
        }
        assert!(matches!(faults.reload_if_changed(), Reload::Unchanged));
        assert!((faults.flags().inventory_error_ratio - 1.0).abs() < f64::EPSILON);

        swap(&path, r#"{"notificationConsumerPaused": true}"#);
        assert!(matches!(faults.reload_if_changed(), Reload::Changed { .. }));
        let now = faults.flags();
        assert!(now.notification_consumer_paused);
        assert!(now.inventory_error_ratio.abs() < f64::EPSILON);

        // Removed: no faults again.
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(faults.reload_if_changed(), Reload::Changed { .. }));
        assert!(faults.flags().is_none());
    }

    #[tokio::test]
    async fn the_poller_picks_up_changes_and_the_metrics_show_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("faults.json");
        swap(&path, r#"{"inventoryLatencyMs": 250}"#);
        let metrics = Metrics::new();
        let stop = CancellationToken::new();
        let args = FaultArgs {
            faults_file: Some(path.clone()),
            faults_poll_ms: 20,
        };
        let faults = Faults::from_args(&args, &metrics, stop.clone()).unwrap();
        assert_eq!(faults.flags().inventory_latency_ms, 250);
        assert!(
            metrics
                .render()
                .contains(r#"shop_fault_active{fault="inventory_latency_ms"} 250"#),
            "{}",
            metrics.render()
        );

        swap(&path, r#"{"kafkaPublishFailureRatio": 0.25}"#);
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while faults.flags().kafka_publish_failure_ratio < 0.2 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the change was not picked up"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(faults.flags().inventory_latency_ms, 0);
        faults.count(Fault::InventoryLatency);
        let text = metrics.render();
        assert!(
            text.contains(r#"shop_fault_active{fault="kafka_publish_failure_ratio"} 0.25"#),
            "{text}"
        );
        assert!(
            text.contains(r#"shop_fault_active{fault="inventory_latency_ms"} 0"#),
            "{text}"
        );
        assert!(
            text.contains(r#"shop_faults_injected_total{fault="inventory_latency_ms"} 1"#),
            "{text}"
        );
        stop.cancel();

        assert!(Faults::from_args(&FaultArgs::default(), &metrics, stop).is_none());
    }
}
