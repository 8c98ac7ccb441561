//! Peer replication between registry replicas: every local change is queued per peer and sent in batches
//! (marked as replicated so the peer does not pass it on), peers come from config or a headless Service's
//! DNS, a starting replica copies the registry from a peer, and a peer being down never blocks callers.

use crate::store::Store;
use parking_lot::RwLock;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use shop_runtime::eureka::{Applications, InstanceInfo, InstanceStatus, REPLICATION_HEADER};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// One replicated change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, utoipa::ToSchema)]
#[serde(tag = "action", rename_all = "camelCase")]
pub enum Event {
    /// A registration (full instance).
    Register {
        /// The instance object (the value of a register body's `instance` member).
        #[schema(value_type = crate::openapi::InstanceRegistration)]
        instance: Value,
    },
    /// A renewal.
    Heartbeat {
        /// App name.
        app: String,
        /// Instance id.
        id: String,
    },
    /// A cancellation.
    Cancel {
        /// App name.
        app: String,
        /// Instance id.
        id: String,
    },
    /// A status override set (`Some`) or removed (`None`).
    StatusUpdate {
        /// App name.
        app: String,
        /// Instance id.
        id: String,
        /// New override (`UP`, `OUT_OF_SERVICE`, ...); absent or null removes the override.
        status: Option<String>,
        /// When removing the override: the instance's status from then on.
        value: Option<String>,
    },
    /// Metadata entries.
    Metadata {
        /// App name.
        app: String,
        /// Instance id.
        id: String,
        /// `[key, value]` pairs.
        #[schema(value_type = Vec<Vec<String>>)]
        pairs: Vec<(String, String)>,
    },
}

impl Event {
    /// A register event for `info`.
    pub fn register(info: &InstanceInfo) -> Self {
        Event::Register {
            instance: info.to_value(),
        }
    }
}

/// Batch body sent to `POST /eureka/peerreplication/batch`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Batch {
    /// Events in order.
    pub events: Vec<Event>,
}

/// Per-event status codes answered by the peer.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct BatchResponse {
    /// HTTP-like status per event (200, 204, 404, 400...).
    pub statuses: Vec<u16>,
}

/// Applies one replicated event to the local store; returns an HTTP-like status.
pub fn apply(store: &Store, ev: &Event) -> u16 {
    match ev {
        Event::Register { instance } => match InstanceInfo::from_value(instance, "instance") {
            Ok(info) => match store.register(info) {
                Ok(_) => 204,
                Err(_) => 503,
            },
            Err(_) => 400,
        },
        Event::Heartbeat { app, id } => match store.renew(app, id, None) {
            crate::store::RenewOutcome::Renewed => 200,
            crate::store::RenewOutcome::NotFound => 404,
        },
        Event::Cancel { app, id } => {
            if store.cancel(app, id) {
                200
            } else {
                404
            }
        }
        Event::StatusUpdate {
            app,
            id,
            status,
            value,
        } => {
            let ok = match status {
                Some(s) => match InstanceStatus::parse(s) {
                    Some(st) => store.set_override(app, id, st),
                    None => return 400,
                },
                None => {
                    store.delete_override(app, id, value.as_deref().and_then(InstanceStatus::parse))
                }
            };
            if ok { 200 } else { 404 }
        }
        Event::Metadata { app, id, pairs } => {
            if store.set_metadata(app, id, pairs) {
                200
            } else {
                404
            }
        }
    }
}

/// Largest batch sent at once.
const BATCH_MAX: usize = 500;
/// Queue length per peer; beyond it events are dropped (renewals repair the state).
const QUEUE: usize = 50_000;

#[derive(Debug)]
struct PeerHandle {
    tx: mpsc::Sender<Event>,
    stop: CancellationToken,
}

/// Fans local changes out to the peers.
#[derive(Debug, Clone)]
pub struct Replicator {
    peers: Arc<RwLock<HashMap<String, PeerHandle>>>,
    http: reqwest::Client,
    store: Arc<Store>,
}

impl Replicator {
    /// A replicator with no peers yet.
    pub fn new(store: Arc<Store>) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(3))
            .connect_timeout(Duration::from_secs(1))
            .build()
            .unwrap_or_else(|_| reqwest::Client::new());
        Self {
            peers: Arc::new(RwLock::new(HashMap::new())),
            http,
            store,
        }
    }

    /// Current peer base URLs.
    pub fn peer_urls(&self) -> Vec<String> {
        let mut v: Vec<String> = self.peers.read().keys().cloned().collect();
        v.sort();
        v
    }

    /// Replaces the peer set (starting and stopping workers as needed).
    pub fn set_peers(&self, urls: &[String]) {
        let mut peers = self.peers.write();
        peers.retain(|url, h| {
            let keep = urls.contains(url);
            if !keep {
                tracing::info!(peer = %url, "peer removed");
                h.stop.cancel();
            }
            keep
        });
        for url in urls {
            if peers.contains_key(url) {
                continue;
            }
            tracing::info!(peer = %url, "peer added");
            let (tx, rx) = mpsc::channel(QUEUE);
            let stop = CancellationToken::new();
            tokio::spawn(worker(
                url.clone(),
                rx,
                stop.clone(),
                self.http.clone(),
                self.store.clone(),
            ));
            peers.insert(url.clone(), PeerHandle { tx, stop });
        }
    }

    /// Queues `ev` for every peer without waiting.
    pub fn replicate(&self, ev: Event) {
        for (url, p) in self.peers.read().iter() {
            if p.tx.try_send(ev.clone()).is_err() {
                tracing::warn!(peer = %url, "replication queue full; event dropped");
            }
        }
    }

    /// Stops every worker.
    pub fn stop(&self) {
        for p in self.peers.read().values() {
            p.stop.cancel();
        }
    }

    /// Copies the registry from the first peer that answers. Returns the number of instances copied.
    pub async fn catch_up(&self) -> Option<usize> {
        for url in self.peer_urls() {
            let resp = self
                .http
                .get(format!("{url}/apps/"))
                .header(REPLICATION_HEADER, "true")
                .send()
                .await;
            let Ok(resp) = resp else { continue };
            if !resp.status().is_success() {
                continue;
            }
            let Ok(v) = resp.json::<Value>().await else {
                continue;
            };
            let Ok(apps) = Applications::from_value(&v) else {
                continue;
            };
            let mut n = 0;
            for app in apps.applications {
                for info in app.instances {
                    if self.store.register(info).is_ok() {
                        n += 1;
                    }
                }
            }
            tracing::info!(peer = %url, instances = n, "caught up from peer");
            return Some(n);
        }
        None
    }
}

async fn worker(
    url: String,
    mut rx: mpsc::Receiver<Event>,
    stop: CancellationToken,
    http: reqwest::Client,
    store: Arc<Store>,
) {
    let endpoint = format!("{url}/peerreplication/batch");
    let mut backoff = Duration::from_millis(200);
    loop {
        let first = tokio::select! {
            _ = stop.cancelled() => return,
            ev = rx.recv() => match ev { Some(e) => e, None => return },
        };
        let mut events = vec![first];
        while events.len() < BATCH_MAX {
            match rx.try_recv() {
                Ok(e) => events.push(e),
                Err(_) => break,
            }
        }
        let resp = http
            .post(&endpoint)
            .header(REPLICATION_HEADER, "true")
            .json(&Batch {
                events: events.clone(),
            })
            .send()
            .await;
        let statuses = match resp {
            Ok(r) if r.status().is_success() => match r.json::<BatchResponse>().await {
                Ok(b) => b.statuses,
                Err(e) => {
                    tracing::warn!(peer = %url, error = %e, "peer answered an unreadable batch response");
                    continue;
                }
            },
            Ok(r) => {
                tracing::warn!(peer = %url, status = r.status().as_u16(), "peer refused a replication batch");
                continue;
            }
            Err(e) => {
                // Peer down: drop this batch (heartbeats will re-register on its return) and back off.
                tracing::warn!(peer = %url, error = %e, dropped = events.len(), "peer unreachable");
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        backoff = Duration::from_millis(200);
        // A heartbeat the peer does not know: send it the full registration, as Eureka does.
        let mut repairs = Vec::new();
        for (ev, status) in events.iter().zip(statuses) {
            if let (Event::Heartbeat { app, id }, 404) = (ev, status)
                && let Some(info) = store.instance(app, id)
            {
                repairs.push(Event::register(&info));
            }
        }
        if !repairs.is_empty() {
            let _ = http
                .post(&endpoint)
                .header(REPLICATION_HEADER, "true")
                .json(&Batch { events: repairs })
                .send()
                .await;
        }
    }
}

/// Where peers come from.
#[derive(Debug, Clone)]
pub enum PeerSource {
    /// Fixed list of base URLs.
    Static(Vec<String>),
    /// `host:port` of a headless Service; every address but our own is a peer.
    Dns {
        /// host:port.
        name: String,
        /// Our own addresses (excluded).
        own: Vec<SocketAddr>,
    },
}

/// Resolves the peer list once.
pub async fn resolve(source: &PeerSource) -> Vec<String> {
    match source {
        PeerSource::Static(v) => v.clone(),
        PeerSource::Dns { name, own } => match tokio::net::lookup_host(name.as_str()).await {
            Ok(addrs) => {
                let mut v: Vec<String> = addrs
                    .filter(|a| !own.contains(a))
                    .map(|a| format!("http://{a}/eureka"))
                    .collect();
                v.sort();
                v.dedup();
                v
            }
            Err(e) => {
                tracing::warn!(name = %name, error = %e, "peer DNS lookup failed");
                Vec::new()
            }
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::StoreConfig;

    #[test]
    fn events_apply_to_store() {
        let s = Store::new(StoreConfig::default());
        let info = InstanceInfo::new("product", "p1", "127.0.0.1", 1);
        assert_eq!(apply(&s, &Event::register(&info)), 204);
        let hb = Event::Heartbeat {
            app: "PRODUCT".into(),
            id: "p1".into(),
        };
        assert_eq!(apply(&s, &hb), 200);
        let st = Event::StatusUpdate {
            app: "PRODUCT".into(),
            id: "p1".into(),
            status: Some("OUT_OF_SERVICE".into()),
            value: None,
        };
        assert_eq!(apply(&s, &st), 200);
        assert_eq!(s.full().apps_hashcode, "OUT_OF_SERVICE_1_");
        assert_eq!(
            apply(
                &s,
                &Event::Cancel {
                    app: "PRODUCT".into(),
                    id: "p1".into()
                }
            ),
            200
        );
        assert_eq!(apply(&s, &hb), 404);
        let json = serde_json::to_string(&Batch { events: vec![hb] }).unwrap();
        let back: Batch = serde_json::from_str(&json).unwrap();
        assert_eq!(back.events.len(), 1);
    }
}
