//! The registry's in-memory state: leases per app and instance, the recent-change queue behind delta
//! fetches, renewal counting for self-preservation, and lease expiry — all behind one lock, no I/O.

use bytes::Bytes;
use parking_lot::{Mutex, RwLock};
use serde_json::Value;
use shop_runtime::eureka::{
    Application, Applications, InstanceInfo, InstanceStatus, apps_hashcode, now_millis,
};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::time::{Duration, Instant};

/// Tuning of the store.
#[derive(Debug, Clone)]
pub struct StoreConfig {
    /// Lease duration used when a registration carries none.
    pub default_lease_duration: Duration,
    /// Renewal interval used when a registration carries none.
    pub default_renewal_interval: Duration,
    /// How long changes stay in the delta queue.
    pub delta_retention: Duration,
    /// Maximum number of instances.
    pub max_instances: usize,
    /// Whether expiry pauses while renewals fall below the threshold.
    pub self_preservation: bool,
    /// Fraction of expected renewals below which self-preservation engages.
    pub renewal_percent_threshold: f64,
    /// Renewal interval clients are expected to use (for the threshold).
    pub expected_renewal_interval: Duration,
}

impl Default for StoreConfig {
    fn default() -> Self {
        Self {
            default_lease_duration: Duration::from_secs(90),
            default_renewal_interval: Duration::from_secs(30),
            delta_retention: Duration::from_secs(180),
            max_instances: 20_000,
            self_preservation: false,
            renewal_percent_threshold: 0.85,
            expected_renewal_interval: Duration::from_secs(30),
        }
    }
}

/// Outcome of a registration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterOutcome {
    /// A new instance.
    Added,
    /// An existing instance re-registered.
    Replaced,
}

/// Why a registration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegisterError {
    /// The registry holds `max` instances already.
    #[error("registry is full ({max} instances)")]
    Full {
        /// Configured maximum.
        max: usize,
    },
}

/// Outcome of a renewal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RenewOutcome {
    /// Lease extended.
    Renewed,
    /// Unknown instance, or the client holds newer data: it must re-register.
    NotFound,
}

#[derive(Debug, Clone)]
struct Lease {
    info: InstanceInfo,
    last_renewal: Instant,
    duration: Duration,
}

impl Lease {
    fn duration(&self, _default: Duration) -> Duration {
        self.duration
    }
}

#[derive(Debug, Default)]
struct Inner {
    apps: BTreeMap<String, BTreeMap<String, Lease>>,
    count: usize,
    delta: VecDeque<(Instant, InstanceInfo)>,
    version: u64,
    full_cache: Option<(u64, Bytes)>,
    delta_cache: Option<((u64, usize), Bytes)>,
}

/// Renewals per second over the last minute.
#[derive(Debug, Default)]
struct RenewCounter {
    buckets: VecDeque<(u64, u64)>,
}

impl RenewCounter {
    fn add(&mut self, sec: u64) {
        match self.buckets.back_mut() {
            Some((s, n)) if *s == sec => *n += 1,
            _ => self.buckets.push_back((sec, 1)),
        }
        self.trim(sec);
    }
    fn trim(&mut self, now_sec: u64) {
        while self
            .buckets
            .front()
            .is_some_and(|(s, _)| *s + 60 <= now_sec)
        {
            self.buckets.pop_front();
        }
    }
    fn last_minute(&mut self, now_sec: u64) -> u64 {
        self.trim(now_sec);
        self.buckets.iter().map(|(_, n)| n).sum()
    }
}

/// A row of the dashboard / a snapshot of one lease.
#[derive(Debug, Clone)]
pub struct LeaseView {
    /// The instance.
    pub info: InstanceInfo,
    /// Time since the last renewal.
    pub since_renewal: Duration,
    /// Lease duration applied.
    pub duration: Duration,
}

/// The registry state; share it behind an `Arc`.
#[derive(Debug)]
pub struct Store {
    cfg: StoreConfig,
    inner: RwLock<Inner>,
    renews: Mutex<RenewCounter>,
    started: Instant,
}

impl Store {
    /// An empty registry.
    pub fn new(cfg: StoreConfig) -> Self {
        Self {
            cfg,
            inner: RwLock::new(Inner::default()),
            renews: Mutex::new(RenewCounter::default()),
            started: Instant::now(),
        }
    }

    /// The configuration.
    pub fn config(&self) -> &StoreConfig {
        &self.cfg
    }

    fn now_sec(&self) -> u64 {
        self.started.elapsed().as_secs()
    }

    fn push_delta(inner: &mut Inner, info: &InstanceInfo, action: &str, retention: Duration) {
        let mut changed = info.clone();
        changed.action_type = Some(action.to_owned());
        let now = Instant::now();
        inner.delta.push_back((now, changed));
        while inner
            .delta
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > retention)
        {
            inner.delta.pop_front();
        }
        inner.version += 1;
        inner.full_cache = None;
    }

    /// Registers (or re-registers) an instance.
    pub fn register(&self, mut info: InstanceInfo) -> Result<RegisterOutcome, RegisterError> {
        let now = now_millis();
        let mut inner = self.inner.write();
        let existing = inner
            .apps
            .get(&info.app)
            .and_then(|a| a.get(&info.instance_id))
            .cloned();
        if existing.is_none() && inner.count >= self.cfg.max_instances {
            return Err(RegisterError::Full {
                max: self.cfg.max_instances,
            });
        }
        let duration = match info.lease_info.duration_in_secs {
            0 => self.cfg.default_lease_duration,
            s => Duration::from_secs(s),
        };
        if info.lease_info.duration_in_secs == 0 {
            info.lease_info.duration_in_secs = duration.as_secs_f64().ceil().max(1.0) as u64;
        }
        if info.lease_info.renewal_interval_in_secs == 0 {
            info.lease_info.renewal_interval_in_secs =
                self.cfg.default_renewal_interval.as_secs().max(1);
        }
        match &existing {
            Some(old) => {
                info.lease_info.registration_timestamp = old.info.lease_info.registration_timestamp;
                info.lease_info.service_up_timestamp = old.info.lease_info.service_up_timestamp;
                if old.info.overridden_status != InstanceStatus::Unknown {
                    info.overridden_status = old.info.overridden_status;
                }
            }
            None => {
                info.lease_info.registration_timestamp = now;
                info.lease_info.service_up_timestamp = 0;
            }
        }
        if info.status == InstanceStatus::Up && info.lease_info.service_up_timestamp == 0 {
            info.lease_info.service_up_timestamp = now;
        }
        info.lease_info.last_renewal_timestamp = now;
        info.lease_info.eviction_timestamp = 0;
        info.last_updated_timestamp = now;
        info.action_type = None;
        Self::push_delta(&mut inner, &info, "ADDED", self.cfg.delta_retention);
        let lease = Lease {
            info: info.clone(),
            last_renewal: Instant::now(),
            duration,
        };
        let app = inner.apps.entry(info.app.clone()).or_default();
        let added = app.insert(info.instance_id.clone(), lease).is_none();
        if added {
            inner.count += 1;
            Ok(RegisterOutcome::Added)
        } else {
            Ok(RegisterOutcome::Replaced)
        }
    }

    /// Renews a lease. `last_dirty` newer than what the registry holds also answers NotFound (the
    /// client then re-registers with its newer data, as Eureka does).
    pub fn renew(&self, app: &str, id: &str, last_dirty: Option<i64>) -> RenewOutcome {
        let app = app.to_ascii_uppercase();
        let mut inner = self.inner.write();
        let Some(lease) = inner.apps.get_mut(&app).and_then(|a| a.get_mut(id)) else {
            return RenewOutcome::NotFound;
        };
        if last_dirty.is_some_and(|d| d > lease.info.last_dirty_timestamp) {
            return RenewOutcome::NotFound;
        }
        lease.last_renewal = Instant::now();
        lease.info.lease_info.last_renewal_timestamp = now_millis();
        drop(inner);
        let sec = self.now_sec();
        self.renews.lock().add(sec);
        RenewOutcome::Renewed
    }

    fn remove(&self, inner: &mut Inner, app: &str, id: &str, reason: &str) -> Option<InstanceInfo> {
        let apps = inner.apps.get_mut(app)?;
        let mut lease = apps.remove(id)?;
        if apps.is_empty() {
            inner.apps.remove(app);
        }
        inner.count -= 1;
        let now = now_millis();
        lease.info.lease_info.eviction_timestamp = now;
        lease.info.last_updated_timestamp = now;
        tracing::info!(app, instance = id, reason, "instance removed");
        Self::push_delta(inner, &lease.info, "DELETED", self.cfg.delta_retention);
        Some(lease.info)
    }

    /// Cancels a lease; false when unknown.
    pub fn cancel(&self, app: &str, id: &str) -> bool {
        let app = app.to_ascii_uppercase();
        let mut inner = self.inner.write();
        self.remove(&mut inner, &app, id, "cancelled").is_some()
    }

    fn modify(&self, app: &str, id: &str, f: impl FnOnce(&mut InstanceInfo)) -> bool {
        let app = app.to_ascii_uppercase();
        let mut inner = self.inner.write();
        let Some(lease) = inner.apps.get_mut(&app).and_then(|a| a.get_mut(id)) else {
            return false;
        };
        f(&mut lease.info);
        lease.info.last_updated_timestamp = now_millis();
        let info = lease.info.clone();
        Self::push_delta(&mut inner, &info, "MODIFIED", self.cfg.delta_retention);
        true
    }

    /// Sets an operator status override; false when unknown.
    pub fn set_override(&self, app: &str, id: &str, status: InstanceStatus) -> bool {
        self.modify(app, id, |i| {
            i.overridden_status = status;
            i.status = status;
        })
    }

    /// Removes the override (status becomes `new_status`, or UNKNOWN like Eureka when none is given).
    pub fn delete_override(&self, app: &str, id: &str, new_status: Option<InstanceStatus>) -> bool {
        self.modify(app, id, |i| {
            i.overridden_status = InstanceStatus::Unknown;
            i.status = new_status.unwrap_or(InstanceStatus::Unknown);
        })
    }

    /// Adds/updates metadata entries; false when unknown.
    pub fn set_metadata(&self, app: &str, id: &str, pairs: &[(String, String)]) -> bool {
        self.modify(app, id, |i| {
            for (k, v) in pairs {
                i.metadata.insert(k.clone(), v.clone());
            }
        })
    }

    /// Renews received in the last minute.
    pub fn renews_last_minute(&self) -> u64 {
        let sec = self.now_sec();
        self.renews.lock().last_minute(sec)
    }

    /// Renews per minute below which self-preservation engages.
    pub fn renew_threshold(&self) -> u64 {
        let count = self.inner.read().count as f64;
        let per_min = 60.0 / self.cfg.expected_renewal_interval.as_secs_f64().max(0.001);
        (count * per_min * self.cfg.renewal_percent_threshold).floor() as u64
    }

    /// Whether expired leases may be evicted now.
    pub fn expiry_enabled(&self) -> bool {
        if !self.cfg.self_preservation {
            return true;
        }
        let threshold = self.renew_threshold();
        threshold > 0 && self.renews_last_minute() > threshold
    }

    /// Evicts leases not renewed within their duration; returns them.
    pub fn evict_expired(&self) -> Vec<InstanceInfo> {
        if !self.expiry_enabled() {
            tracing::debug!("self-preservation: lease expiry paused");
            return Vec::new();
        }
        let now = Instant::now();
        let default = self.cfg.default_lease_duration;
        let expired: Vec<(String, String)> = {
            let inner = self.inner.read();
            inner
                .apps
                .iter()
                .flat_map(|(app, leases)| {
                    leases
                        .iter()
                        .filter(|(_, l)| now.duration_since(l.last_renewal) > l.duration(default))
                        .map(|(id, _)| (app.clone(), id.clone()))
                })
                .collect()
        };
        if expired.is_empty() {
            return Vec::new();
        }
        let mut inner = self.inner.write();
        expired
            .iter()
            .filter(|(app, id)| {
                // Re-check under the write lock: it may have renewed meanwhile.
                inner
                    .apps
                    .get(app)
                    .and_then(|a| a.get(id))
                    .is_some_and(|l| now.duration_since(l.last_renewal) > l.duration(default))
            })
            .cloned()
            .collect::<Vec<_>>()
            .into_iter()
            .filter_map(|(app, id)| self.remove(&mut inner, &app, &id, "lease expired"))
            .collect()
    }

    /// Number of registered instances.
    pub fn len(&self) -> usize {
        self.inner.read().count
    }

    /// True when nothing is registered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// One instance.
    pub fn instance(&self, app: &str, id: &str) -> Option<InstanceInfo> {
        let inner = self.inner.read();
        inner
            .apps
            .get(&app.to_ascii_uppercase())
            .and_then(|a| a.get(id))
            .map(|l| l.info.clone())
    }

    /// One instance by id in any app.
    pub fn instance_by_id(&self, id: &str) -> Option<InstanceInfo> {
        let inner = self.inner.read();
        inner
            .apps
            .values()
            .find_map(|a| a.get(id))
            .map(|l| l.info.clone())
    }

    /// One app.
    pub fn application(&self, app: &str) -> Option<Application> {
        let inner = self.inner.read();
        let name = app.to_ascii_uppercase();
        inner.apps.get(&name).map(|leases| Application {
            name,
            instances: leases.values().map(|l| l.info.clone()).collect(),
        })
    }

    fn snapshot(inner: &Inner, filter: impl Fn(&InstanceInfo) -> bool) -> Applications {
        let applications: Vec<Application> = inner
            .apps
            .iter()
            .map(|(name, leases)| Application {
                name: name.clone(),
                instances: leases
                    .values()
                    .map(|l| &l.info)
                    .filter(|i| filter(i))
                    .cloned()
                    .collect(),
            })
            .filter(|a| !a.instances.is_empty())
            .collect();
        let hash = apps_hashcode(applications.iter().flat_map(|a| a.instances.iter()));
        Applications {
            versions_delta: inner.version.to_string(),
            apps_hashcode: hash,
            applications,
        }
    }

    /// The whole registry.
    pub fn full(&self) -> Applications {
        Self::snapshot(&self.inner.read(), |_| true)
    }

    /// The whole registry as JSON bytes, cached until the next change (renewals do not invalidate it).
    pub fn full_json(&self) -> Bytes {
        {
            let inner = self.inner.read();
            if let Some((v, b)) = &inner.full_cache
                && *v == inner.version
            {
                return b.clone();
            }
        }
        let mut inner = self.inner.write();
        let snap = Self::snapshot(&inner, |_| true);
        let bytes = Bytes::from(snap.to_json_bytes());
        inner.full_cache = Some((inner.version, bytes.clone()));
        bytes
    }

    /// Instances whose VIP (or secure VIP) matches.
    pub fn by_vip(&self, vip: &str, secure: bool) -> Applications {
        Self::snapshot(&self.inner.read(), |i| {
            let v = if secure {
                &i.secure_vip_address
            } else {
                &i.vip_address
            };
            v.split(',').any(|x| x.trim().eq_ignore_ascii_case(vip))
        })
    }

    /// Changes within the retention window (latest per instance), with the whole registry's hashcode.
    pub fn delta(&self) -> Applications {
        let mut inner = self.inner.write();
        let now = Instant::now();
        let retention = self.cfg.delta_retention;
        while inner
            .delta
            .front()
            .is_some_and(|(t, _)| now.duration_since(*t) > retention)
        {
            inner.delta.pop_front();
        }
        let mut latest: BTreeMap<String, BTreeMap<String, InstanceInfo>> = BTreeMap::new();
        for (_, info) in &inner.delta {
            latest
                .entry(info.app.clone())
                .or_default()
                .insert(info.instance_id.clone(), info.clone());
        }
        let hash = apps_hashcode(
            inner
                .apps
                .values()
                .flat_map(|a| a.values().map(|l| &l.info)),
        );
        Applications {
            versions_delta: inner.version.to_string(),
            apps_hashcode: hash,
            applications: latest
                .into_iter()
                .map(|(name, m)| Application {
                    name,
                    instances: m.into_values().collect(),
                })
                .collect(),
        }
    }

    /// The delta as JSON bytes, cached until the next change or until old entries leave the window.
    pub fn delta_json(&self) -> Bytes {
        {
            let inner = self.inner.read();
            let fresh = inner
                .delta
                .front()
                .is_none_or(|(t, _)| t.elapsed() <= self.cfg.delta_retention);
            if let Some((key, b)) = &inner.delta_cache
                && fresh
                && *key == (inner.version, inner.delta.len())
            {
                return b.clone();
            }
        }
        let delta = self.delta();
        let bytes = Bytes::from(delta.to_json_bytes());
        let mut inner = self.inner.write();
        let key = (inner.version, inner.delta.len());
        if delta.versions_delta == inner.version.to_string() {
            inner.delta_cache = Some((key, bytes.clone()));
        }
        bytes
    }

    /// Every lease, for the dashboard.
    pub fn leases(&self) -> Vec<LeaseView> {
        let inner = self.inner.read();
        let now = Instant::now();
        inner
            .apps
            .values()
            .flat_map(|a| a.values())
            .map(|l| LeaseView {
                info: l.info.clone(),
                since_renewal: now.duration_since(l.last_renewal),
                duration: l.duration(self.cfg.default_lease_duration),
            })
            .collect()
    }

    /// Counts per app and status (for metrics).
    pub fn status_counts(&self) -> HashMap<(String, &'static str), usize> {
        let inner = self.inner.read();
        let mut out = HashMap::new();
        for (app, leases) in &inner.apps {
            for l in leases.values() {
                *out.entry((app.clone(), l.info.effective_status().as_str()))
                    .or_default() += 1;
            }
        }
        out
    }
}

/// Serializes an `{"application":{...}}` body.
pub fn application_json(app: &Application) -> Value {
    serde_json::json!({ "application": app.to_value() })
}

/// Serializes an `{"instance":{...}}` body.
pub fn instance_json(info: &InstanceInfo) -> Value {
    serde_json::json!({ "instance": info.to_value() })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inst(app: &str, id: &str) -> InstanceInfo {
        InstanceInfo::new(app, id, "127.0.0.1", 8080)
    }

    #[test]
    fn register_renew_cancel_and_delta() {
        let s = Store::new(StoreConfig::default());
        assert_eq!(
            s.register(inst("product", "p1")),
            Ok(RegisterOutcome::Added)
        );
        assert_eq!(
            s.register(inst("product", "p1")),
            Ok(RegisterOutcome::Replaced)
        );
        s.register(inst("order", "o1")).unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s.renew("PRODUCT", "p1", None), RenewOutcome::Renewed);
        assert_eq!(s.renew("product", "nope", None), RenewOutcome::NotFound);
        assert_eq!(
            s.renew("product", "p1", Some(i64::MAX)),
            RenewOutcome::NotFound,
            "client with newer data must re-register"
        );
        assert!(s.cancel("order", "o1"));
        assert!(!s.cancel("order", "o1"));
        let d = s.delta();
        assert_eq!(d.apps_hashcode, "UP_1_");
        let order = d.applications.iter().find(|a| a.name == "ORDER").unwrap();
        assert_eq!(order.instances[0].action_type.as_deref(), Some("DELETED"));
        let full = s.full();
        assert_eq!(full.applications.len(), 1);
    }

    #[test]
    fn override_changes_hashcode_and_survives_reregistration() {
        let s = Store::new(StoreConfig::default());
        s.register(inst("product", "p1")).unwrap();
        assert!(s.set_override("product", "p1", InstanceStatus::OutOfService));
        s.register(inst("product", "p1")).unwrap();
        assert_eq!(s.full().apps_hashcode, "OUT_OF_SERVICE_1_");
        assert!(s.delete_override("product", "p1", Some(InstanceStatus::Up)));
        assert_eq!(s.full().apps_hashcode, "UP_1_");
    }

    #[test]
    fn max_instances_is_enforced_but_reregistration_allowed() {
        let s = Store::new(StoreConfig {
            max_instances: 1,
            ..StoreConfig::default()
        });
        s.register(inst("a", "1")).unwrap();
        assert_eq!(
            s.register(inst("a", "2")),
            Err(RegisterError::Full { max: 1 })
        );
        assert!(s.register(inst("a", "1")).is_ok());
    }

    #[test]
    fn expiry_after_one_lease_duration_and_self_preservation() {
        let mut i = inst("a", "1");
        i.lease_info.duration_in_secs = 0;
        let s = Store::new(StoreConfig {
            default_lease_duration: Duration::from_millis(50),
            ..StoreConfig::default()
        });
        s.register(i.clone()).unwrap();
        assert!(s.evict_expired().is_empty());
        std::thread::sleep(Duration::from_millis(80));
        assert_eq!(s.evict_expired().len(), 1);
        assert!(s.is_empty());

        let s = Store::new(StoreConfig {
            default_lease_duration: Duration::from_millis(50),
            self_preservation: true,
            ..StoreConfig::default()
        });
        s.register(i).unwrap();
        std::thread::sleep(Duration::from_millis(80));
        assert!(
            s.evict_expired().is_empty(),
            "no renewals: self-preservation holds the lease"
        );
        assert_eq!(s.len(), 1);
    }

    #[test]
    fn full_json_cache_follows_changes() {
        let s = Store::new(StoreConfig::default());
        let a = s.full_json();
        s.register(inst("a", "1")).unwrap();
        let b = s.full_json();
        assert_ne!(a, b);
        assert_eq!(b, s.full_json());
        let v: Value = serde_json::from_slice(&b).unwrap();
        assert_eq!(v["applications"]["apps__hashcode"], "UP_1_");
    }
}
