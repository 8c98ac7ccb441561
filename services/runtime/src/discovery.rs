//! Registry client: registers this instance with shop-registry (Eureka API), renews its lease, re-registers
//! when the registry forgot it, deregisters at shutdown; and finds other services' instances from a local
//! cache refreshed in the background, with a Kubernetes DNS fallback when the registry cannot be reached.

use crate::eureka::{Applications, InstanceInfo, InstanceStatus, apps_hashcode};
use parking_lot::{Mutex, RwLock};
use reqwest::{StatusCode, Url};
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Why no instance could be picked.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DiscoveryError {
    /// The registry knows no UP instance and there is no DNS fallback for this case.
    #[error("no UP instance of {service}")]
    NoInstance {
        /// App name asked for.
        service: String,
    },
    /// The DNS pattern produced an invalid URL.
    #[error("DNS fallback URL for {service} is invalid: {url}")]
    BadFallback {
        /// App name asked for.
        service: String,
        /// The URL produced.
        url: String,
    },
}

/// One pick: where to send the request, and which instance that is (None for the DNS fallback).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Picked {
    /// Base URL, e.g. `http://10.0.0.7:8081/`.
    pub base_url: Url,
    /// Registry instance id, or None when the URL came from the DNS pattern.
    pub instance_id: Option<String>,
}

/// Settings of the discovery client.
#[derive(Debug, Clone)]
pub struct DiscoveryConfig {
    /// Registry base URLs (`http://host:8761/eureka`), tried in order.
    pub registry_urls: Vec<String>,
    /// DNS fallback pattern with `{service}`.
    pub dns_pattern: Option<String>,
    /// Background refresh interval.
    pub fetch_interval: Duration,
    /// How long an instance marked down is skipped.
    pub mark_down_for: Duration,
    /// Timeout of one registry request.
    pub request_timeout: Duration,
}

impl Default for DiscoveryConfig {
    fn default() -> Self {
        Self {
            registry_urls: Vec::new(),
            dns_pattern: None,
            fetch_interval: Duration::from_secs(5),
            mark_down_for: Duration::from_secs(10),
            request_timeout: Duration::from_secs(2),
        }
    }
}

#[derive(Debug, Default)]
struct Cache {
    /// App (upper case) -> instances.
    apps: HashMap<String, Vec<InstanceInfo>>,
    /// Last fetch succeeded.
    reachable: bool,
    /// At least one fetch succeeded.
    fetched_once: bool,
    /// When the last fetch succeeded.
    last_ok: Option<Instant>,
}

#[derive(Debug)]
struct Inner {
    config: DiscoveryConfig,
    http: reqwest::Client,
    cache: RwLock<Cache>,
    rr: Mutex<HashMap<String, Arc<AtomicUsize>>>,
    down: Mutex<HashMap<String, Instant>>,
    refresh_lock: tokio::sync::Mutex<()>,
}

/// Service lookup through the registry cache; cheap to clone.
#[derive(Debug, Clone)]
pub struct Discovery {
    inner: Arc<Inner>,
}

impl Discovery {
    /// A discovery client (no background task until [`Discovery::spawn_refresh`]).
    pub fn new(config: DiscoveryConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .connect_timeout(config.request_timeout)
            .pool_idle_timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            inner: Arc::new(Inner {
                config,
                http,
                cache: RwLock::new(Cache::default()),
                rr: Mutex::new(HashMap::new()),
                down: Mutex::new(HashMap::new()),
                refresh_lock: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The configured registry URLs.
    pub fn registry_urls(&self) -> &[String] {
        &self.inner.config.registry_urls
    }

    pub(crate) fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// Starts the background refresh loop, stopped by `stop`.
    pub fn spawn_refresh(&self, stop: CancellationToken) {
        if self.inner.config.registry_urls.is_empty() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(me.inner.config.fetch_interval);
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = tick.tick() => { me.refresh().await; }
                }
            }
        });
    }

    async fn fetch(&self, url: &str) -> Option<Applications> {
        let resp = self
            .inner
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json")
            .send()
            .await;
        let resp = match resp {
            Ok(r) if r.status() == StatusCode::OK => r,
            Ok(r) => {
                tracing::debug!(url, status = r.status().as_u16(), "registry fetch refused");
                return None;
            }
            Err(e) => {
                tracing::debug!(url, error = %e, "registry unreachable");
                return None;
            }
        };
        match resp.json::<serde_json::Value>().await {
            Ok(v) => Applications::from_value(&v).ok(),
            Err(e) => {
                tracing::warn!(url, error = %e, "registry answered unreadable JSON");
                None
            }
        }
    }

    /// Applies a delta to the cache; returns whether the result matches the registry's hashcode.
    fn apply_delta(&self, delta: Applications) -> bool {
        let mut cache = self.inner.cache.write();
        for app in delta.applications {
            let key = app.name.to_ascii_uppercase();
            for inst in app.instances {
                let list = cache.apps.entry(key.clone()).or_default();
                list.retain(|i| i.instance_id != inst.instance_id);
                if inst.action_type.as_deref() != Some("DELETED") {
                    let mut inst = inst;
                    inst.action_type = None;
                    list.push(inst);
                }
            }
            if cache.apps.get(&key).is_some_and(Vec::is_empty) {
                cache.apps.remove(&key);
            }
        }
        let local = apps_hashcode(cache.apps.values().flatten());
        if local == delta.apps_hashcode {
            cache.reachable = true;
            cache.last_ok = Some(Instant::now());
            true
        } else {
            tracing::debug!(local, remote = %delta.apps_hashcode, "delta left the cache out of step; full fetch");
            false
        }
    }

    /// Refreshes the cache from the first registry that answers: a delta fetch when the cache is warm
    /// (cheap with thousands of instances), a full fetch at first or when the delta's hashcode disagrees.
    /// Returns whether a registry answered.
    pub async fn refresh(&self) -> bool {
        let _guard = self.inner.refresh_lock.lock().await;
        // Deltas cover the registry's last 3 minutes; after a longer gap only a full fetch is safe.
        let warm = {
            let c = self.inner.cache.read();
            c.fetched_once
                && c.last_ok
                    .is_some_and(|t| t.elapsed() < Duration::from_secs(60))
        };
        for base in &self.inner.config.registry_urls {
            if warm
                && let Some(delta) = self.fetch(&format!("{base}/apps/delta")).await
                && self.apply_delta(delta)
            {
                return true;
            }
            let Some(apps) = self.fetch(&format!("{base}/apps/")).await else {
                continue;
            };
            let mut map: HashMap<String, Vec<InstanceInfo>> = HashMap::new();
            for app in apps.applications {
                map.entry(app.name.to_ascii_uppercase())
                    .or_default()
                    .extend(app.instances);
            }
            let mut cache = self.inner.cache.write();
            cache.apps = map;
            cache.reachable = true;
            cache.fetched_once = true;
            cache.last_ok = Some(Instant::now());
            return true;
        }
        let mut cache = self.inner.cache.write();
        if cache.reachable {
            tracing::warn!("no registry reachable; serving lookups from the cache");
        }
        cache.reachable = false;
        false
    }

    /// Cached instances of `app` (any status).
    pub fn instances(&self, app: &str) -> Vec<InstanceInfo> {
        self.inner
            .cache
            .read()
            .apps
            .get(&app.to_ascii_uppercase())
            .cloned()
            .unwrap_or_default()
    }

    /// Skips `instance_id` in picks for a while (it refused a connection).
    pub fn mark_down(&self, instance_id: &str) {
        let until = Instant::now() + self.inner.config.mark_down_for;
        self.inner.down.lock().insert(instance_id.to_owned(), until);
    }

    /// Whether the cache holds an UP instance of `app` other than `except` that is not marked
    /// down: where traffic can go when `except` fails. Reads the cache only (no fetch).
    pub fn has_live_instance_except(&self, app: &str, except: &str) -> bool {
        let key = app.to_ascii_uppercase();
        let ids: Vec<String> = {
            let cache = self.inner.cache.read();
            cache
                .apps
                .get(&key)
                .map(|v| {
                    v.iter()
                        .filter(|i| {
                            i.effective_status() == InstanceStatus::Up && i.instance_id != except
                        })
                        .map(|i| i.instance_id.clone())
                        .collect()
                })
                .unwrap_or_default()
        };
        ids.iter().any(|id| !self.is_marked_down(id))
    }

    fn is_marked_down(&self, id: &str) -> bool {
        let mut down = self.inner.down.lock();
        match down.get(id) {
            Some(until) if *until > Instant::now() => true,
            Some(_) => {
                down.remove(id);
                false
            }
            None => false,
        }
    }

    fn dns_fallback(&self, app: &str) -> Option<Result<Picked, DiscoveryError>> {
        let pattern = self.inner.config.dns_pattern.as_ref()?;
        let url = pattern.replace("{service}", &app.to_ascii_lowercase());
        let url = if url.ends_with('/') {
            url
        } else {
            format!("{url}/")
        };
        Some(
            Url::parse(&url)
                .map(|base_url| Picked {
                    base_url,
                    instance_id: None,
                })
                .map_err(|_| DiscoveryError::BadFallback {
                    service: app.to_owned(),
                    url,
                }),
        )
    }

    /// Picks an UP instance of `app` round-robin (skipping marked-down ones unless nothing else is left),
    /// fetching the registry first if it was never fetched; falls back to DNS when the registry is
    /// unreachable (or not configured) and nothing usable is cached: no instance, or only instances
    /// that refused connections.
    pub async fn pick_instance(&self, app: &str) -> Result<Picked, DiscoveryError> {
        let key = app.to_ascii_uppercase();
        let configured = !self.inner.config.registry_urls.is_empty();
        if configured && !self.inner.cache.read().fetched_once {
            self.refresh().await;
        }
        let (up, reachable): (Vec<InstanceInfo>, bool) = {
            let cache = self.inner.cache.read();
            let up = cache
                .apps
                .get(&key)
                .map(|v| {
                    v.iter()
                        .filter(|i| i.effective_status() == InstanceStatus::Up)
                        .cloned()
                        .collect()
                })
                .unwrap_or_default();
            (up, cache.reachable)
        };
        if up.is_empty() {
            if (!configured || !reachable)
                && let Some(r) = self.dns_fallback(app)
            {
                return r;
            }
            return Err(DiscoveryError::NoInstance {
                service: app.to_owned(),
            });
        }
        let live: Vec<&InstanceInfo> = up
            .iter()
            .filter(|i| !self.is_marked_down(&i.instance_id))
            .collect();
        // Every cached instance refused a connection and no registry can say where they went
        // (on Kubernetes: the registry pod is gone and the pods were replaced): the DNS name of the
        // Service reaches whatever pods exist now. With a registry answering, a marked-down
        // instance is tried again rather than guessing.
        if live.is_empty()
            && configured
            && !reachable
            && let Some(r) = self.dns_fallback(app)
        {
            return r;
        }
        let candidates: Vec<&InstanceInfo> = if live.is_empty() {
            up.iter().collect()
        } else {
            live
        };
        let counter = self
            .inner
            .rr
            .lock()
            .entry(key)
            .or_insert_with(|| Arc::new(AtomicUsize::new(0)))
            .clone();
        let n = counter.fetch_add(1, Ordering::Relaxed);
        let chosen = candidates[n % candidates.len()];
        let base = format!("{}/", chosen.base_url());
        Url::parse(&base)
            .map(|base_url| Picked {
                base_url,
                instance_id: Some(chosen.instance_id.clone()),
            })
            .map_err(|_| DiscoveryError::NoInstance {
                service: app.to_owned(),
            })
    }

    /// Base URL of an UP instance of `app` (see [`Discovery::pick_instance`]).
    pub async fn pick(&self, app: &str) -> Result<Url, DiscoveryError> {
        self.pick_instance(app).await.map(|p| p.base_url)
    }
}

/// Keeps this instance registered: register, renew every interval, re-register on 404, cancel on stop.
#[derive(Debug, Clone)]
pub(crate) struct Registrar {
    pub(crate) http: reqwest::Client,
    pub(crate) registry_urls: Vec<String>,
    pub(crate) instance: InstanceInfo,
    pub(crate) renewal: Duration,
}

impl Registrar {
    fn app_path(&self, base: &str) -> String {
        format!("{base}/apps/{}", self.instance.app)
    }

    fn instance_path(&self, base: &str) -> String {
        format!(
            "{base}/apps/{}/{}",
            self.instance.app, self.instance.instance_id
        )
    }

    /// Registers with the first registry that accepts (204). Returns whether one did.
    pub(crate) async fn register(&self) -> bool {
        let body = serde_json::json!({"instance": self.instance.to_value()});
        for base in &self.registry_urls {
            match self.http.post(self.app_path(base)).json(&body).send().await {
                Ok(r) if r.status() == StatusCode::NO_CONTENT => {
                    tracing::info!(registry = %base, instance = %self.instance.instance_id, "registered");
                    return true;
                }
                Ok(r) => {
                    tracing::warn!(registry = %base, status = r.status().as_u16(), "registration refused")
                }
                Err(e) => {
                    tracing::debug!(registry = %base, error = %e, "registry unreachable for registration")
                }
            }
        }
        false
    }

    /// Renews; on 404 re-registers. Returns whether the instance is known to a registry afterwards.
    pub(crate) async fn renew(&self) -> bool {
        for base in &self.registry_urls {
            let url = format!(
                "{}?status={}&lastDirtyTimestamp={}",
                self.instance_path(base),
                self.instance.status.as_str(),
                self.instance.last_dirty_timestamp
            );
            match self.http.put(url).send().await {
                Ok(r) if r.status() == StatusCode::OK => return true,
                Ok(r) if r.status() == StatusCode::NOT_FOUND => {
                    tracing::info!(registry = %base, "registry does not know this instance; re-registering");
                    return self.register().await;
                }
                Ok(r) => {
                    tracing::warn!(registry = %base, status = r.status().as_u16(), "renewal refused")
                }
                Err(e) => {
                    tracing::debug!(registry = %base, error = %e, "registry unreachable for renewal")
                }
            }
        }
        false
    }

    /// Cancels the lease on every registry (best effort).
    pub(crate) async fn deregister(&self) {
        for base in &self.registry_urls {
            match self.http.delete(self.instance_path(base)).send().await {
                Ok(r) if r.status().is_success() => {
                    tracing::info!(registry = %base, "deregistered");
                    return;
                }
                Ok(r) => {
                    tracing::debug!(registry = %base, status = r.status().as_u16(), "deregistration refused")
                }
                Err(e) => {
                    tracing::debug!(registry = %base, error = %e, "registry unreachable for deregistration")
                }
            }
        }
    }

    /// Register then renew until `stop`; the caller deregisters.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let mut registered = self.register().await;
        let mut tick = tokio::time::interval(self.renewal);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        // Retry registration quickly until it succeeds, then renew on the lease interval.
        let retry = Duration::from_secs(1).min(self.renewal);
        loop {
            let wait = if registered { None } else { Some(retry) };
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick(), if wait.is_none() => { registered = self.renew().await; }
                _ = tokio::time::sleep(wait.unwrap_or_default()), if wait.is_some() => {
                    registered = self.register().await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_cache(d: &Discovery, instances: Vec<InstanceInfo>, reachable: bool) {
        let mut c = d.inner.cache.write();
        for i in instances {
            c.apps.entry(i.app.clone()).or_default().push(i);
        }
        c.reachable = reachable;
        c.fetched_once = true;
    }

    fn cfg(dns: Option<&str>) -> DiscoveryConfig {
        DiscoveryConfig {
            registry_urls: vec!["http://127.0.0.1:1/eureka".into()],
            dns_pattern: dns.map(str::to_owned),
            ..DiscoveryConfig::default()
        }
    }

    #[tokio::test]
    async fn round_robin_over_up_instances_skipping_marked_down() {
        let d = Discovery::new(cfg(None));
        let a = InstanceInfo::new("product", "a", "10.0.0.1", 8081);
        let b = InstanceInfo::new("product", "b", "10.0.0.2", 8081);
        let mut c = InstanceInfo::new("product", "c", "10.0.0.3", 8081);
        c.status = InstanceStatus::Down;
        with_cache(&d, vec![a, b, c], true);
        let mut seen = Vec::new();
        for _ in 0..4 {
            seen.push(
                d.pick_instance("product")
                    .await
                    .unwrap()
                    .instance_id
                    .unwrap(),
            );
        }
        assert_eq!(seen, ["a", "b", "a", "b"]);
        d.mark_down("a");
        for _ in 0..3 {
            assert_eq!(
                d.pick("PRODUCT").await.unwrap().as_str(),
                "http://10.0.0.2:8081/"
            );
        }
        d.mark_down("b");
        // Everything marked down: still try them rather than fail.
        assert!(d.pick("product").await.is_ok());
    }

    #[test]
    fn delta_upserts_deletes_and_checks_the_hashcode() {
        use crate::eureka::Application;
        let d = Discovery::new(cfg(None));
        with_cache(
            &d,
            vec![InstanceInfo::new("product", "a", "10.0.0.1", 1)],
            true,
        );
        let mut added = InstanceInfo::new("product", "b", "10.0.0.2", 1);
        added.action_type = Some("ADDED".into());
        let mut deleted = InstanceInfo::new("product", "a", "10.0.0.1", 1);
        deleted.action_type = Some("DELETED".into());
        let delta = Applications {
            versions_delta: "2".into(),
            apps_hashcode: "UP_1_".into(),
            applications: vec![Application {
                name: "PRODUCT".into(),
                instances: vec![added, deleted],
            }],
        };
        assert!(d.apply_delta(delta));
        let ids: Vec<String> = d
            .instances("product")
            .into_iter()
            .map(|i| i.instance_id)
            .collect();
        assert_eq!(ids, ["b"]);
        let stale = Applications {
            apps_hashcode: "UP_7_".into(),
            ..Applications::default()
        };
        assert!(
            !d.apply_delta(stale),
            "a hashcode mismatch must force a full fetch"
        );
    }

    #[tokio::test]
    async fn dns_fallback_only_when_registry_unreachable_and_cache_empty() {
        let d = Discovery::new(cfg(Some("http://shop-{service}.ns.svc:8080")));
        with_cache(&d, vec![], false);
        assert_eq!(
            d.pick("inventory").await.unwrap().as_str(),
            "http://shop-inventory.ns.svc:8080/"
        );
        let d = Discovery::new(cfg(Some("http://shop-{service}.ns.svc:8080")));
        with_cache(&d, vec![], true);
        assert_eq!(
            d.pick("inventory").await.unwrap_err(),
            DiscoveryError::NoInstance {
                service: "inventory".into()
            }
        );
    }
}
