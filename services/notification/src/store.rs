//! MongoDB storage of notifications (db `notification-service`, collection `notification`).
//!
//! Why MongoDB rather than MySQL: a notification is a self-contained, append-only document (its
//! order lines nested inside) that is never joined or updated across entities, so a document store
//! fits it without a schema or migrations; the stack already runs a MongoDB wire server for the
//! product catalogue, so no extra server is needed; and the one guarantee we need — "each event id
//! is stored once" — is a single insert against a unique index on `eventId`, which needs no
//! transaction (the local FerretDB has none). A duplicate-key answer means "already notified".

use std::time::Duration;

use chrono::{DateTime as ChronoDateTime, Utc};
use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc, oid::ObjectId};
use mongodb::options::IndexOptions;
use mongodb::{Client, Collection, IndexModel};
use serde::Serialize;

use crate::event::{Line, OrderPlaced};

/// Errors of the notification store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// MongoDB refused or is unreachable.
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
}

/// Where a notification came from in Kafka (kept for audits and replays).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Source {
    /// Topic.
    pub topic: String,
    /// Partition.
    pub partition: i32,
    /// Offset.
    pub offset: i64,
}

/// Webhook delivery state of a notification.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Delivery {
    /// No webhook configured.
    None,
    /// Configured, not yet delivered (a crash here is resumed on redelivery).
    Pending,
    /// The webhook answered 2xx.
    Delivered,
    /// Retries exhausted; the record went to the dead-letter topic.
    Failed,
}

impl Delivery {
    fn as_str(self) -> &'static str {
        match self {
            Delivery::None => "NONE",
            Delivery::Pending => "PENDING",
            Delivery::Delivered => "DELIVERED",
            Delivery::Failed => "FAILED",
        }
    }
    fn parse(s: &str) -> Self {
        match s {
            "PENDING" => Delivery::Pending,
            "DELIVERED" => Delivery::Delivered,
            "FAILED" => Delivery::Failed,
            _ => Delivery::None,
        }
    }
}

/// A stored notification as served by the API and pushed on the stream.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Notification {
    /// Document id.
    pub id: String,
    /// Event id (unique).
    pub event_id: String,
    /// Order number.
    pub order_number: String,
    /// Human-readable text (what the original would have e-mailed).
    pub message: String,
    /// When the order was placed (producer's clock), if known.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub occurred_at: Option<ChronoDateTime<Utc>>,
    /// When this service stored it.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: ChronoDateTime<Utc>,
    /// Order lines.
    pub lines: Vec<Line>,
    /// Order total.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub total: Option<String>,
    /// Kafka origin.
    pub source: Source,
    /// Trace id of the order's trace, if the record carried one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
    /// Webhook delivery state.
    pub delivery: Delivery,
}

/// Result of storing one event.
#[derive(Debug)]
pub enum Stored {
    /// First time this event id is seen.
    New(Notification),
    /// Already stored earlier (a redelivery); the stored copy.
    Duplicate(Option<Notification>),
}

/// Handle on the collection (cheap clone).
#[derive(Clone)]
pub struct NotificationStore {
    coll: Collection<Document>,
    client: Client,
}

impl NotificationStore {
    /// A client of `url` (connects lazily); [`NotificationStore::ensure_indexes`] creates the
    /// indexes (unique `eventId`; `orderNumber` for the filter).
    pub async fn connect(url: &str, db: &str) -> Result<Self, StoreError> {
        let client = shop_runtime::mongo::client(url, "shop-notification").await?;
        let coll = client.database(db).collection::<Document>("notification");
        Ok(Self { coll, client })
    }

    /// The client, for [`shop_runtime::mongo::prepare`].
    pub fn client(&self) -> &mongodb::Client {
        &self.client
    }

    /// Creates the notification indexes (idempotent); run before serving, see `main`.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let coll = &self.coll;
        coll.create_index(
            IndexModel::builder()
                .keys(doc! {"eventId": 1})
                .options(
                    IndexOptions::builder()
                        .unique(true)
                        .name("eventId_unique".to_owned())
                        .build(),
                )
                .build(),
        )
        .await?;
        coll.create_index(
            IndexModel::builder()
                .keys(doc! {"orderNumber": 1})
                .options(
                    IndexOptions::builder()
                        .name("orderNumber".to_owned())
                        .build(),
                )
                .build(),
        )
        .await?;
        // Newest-first listing.
        coll.create_index(
            IndexModel::builder()
                .keys(doc! {"createdAt": -1})
                .options(
                    IndexOptions::builder()
                        .name("createdAt_desc".to_owned())
                        .build(),
                )
                .build(),
        )
        .await?;
        Ok(())
    }

    /// Close the connection pool after in-flight operations finish (bounded by `within`), so the
    /// process does not exit with requests still running against the pool.
    pub async fn close(&self, within: Duration) {
        if tokio::time::timeout(within, self.client.clone().shutdown())
            .await
            .is_err()
        {
            tracing::warn!("MongoDB operations still running at exit");
        }
    }

    /// Store a batch in one unordered `insert_many`; each event comes back as new or duplicate,
    /// in input order. Any error other than duplicate keys fails the whole call, and retrying it
    /// is safe: what was inserted comes back as duplicate the second time.
    pub async fn store_many(
        &self,
        evs: &[(&OrderPlaced, Source, Option<String>)],
        delivery: Delivery,
    ) -> Result<Vec<Stored>, StoreError> {
        if evs.is_empty() {
            return Ok(Vec::new());
        }
        let now = Utc::now();
        let notes: Vec<Notification> = evs
            .iter()
            .map(|(ev, source, trace_id)| Notification {
                id: ObjectId::new().to_hex(),
                event_id: ev.event_id.to_string(),
                order_number: ev.order_number.clone(),
                message: message_for(ev),
                occurred_at: ev.occurred_at,
                created_at: now,
                lines: ev.lines.clone(),
                total: ev.total.clone(),
                source: source.clone(),
                trace_id: trace_id.clone(),
                delivery,
            })
            .collect();
        let docs: Vec<Document> = notes.iter().map(to_doc).collect();
        let dup_index: std::collections::HashSet<usize> =
            match self.coll.insert_many(docs).ordered(false).await {
                Ok(_) => std::collections::HashSet::new(),
                Err(e) => {
                    let dups = match e.kind.as_ref() {
                        mongodb::error::ErrorKind::InsertMany(ime)
                            if ime.write_concern_error.is_none() =>
                        {
                            let errs = ime.write_errors.as_deref().unwrap_or_default();
                            if !errs.is_empty() && errs.iter().all(|w| w.code == 11000) {
                                Some(errs.iter().map(|w| w.index).collect())
                            } else {
                                None
                            }
                        }
                        _ => None,
                    };
                    match dups {
                        Some(d) => d,
                        None => return Err(e.into()),
                    }
                }
            };
        let mut out = Vec::with_capacity(notes.len());
        for (i, n) in notes.into_iter().enumerate() {
            if dup_index.contains(&i) {
                let existing = if delivery == Delivery::Pending {
                    self.coll
                        .find_one(doc! {"eventId": &n.event_id})
                        .await?
                        .and_then(|d| from_doc(&d))
                } else {
                    None
                };
                out.push(Stored::Duplicate(existing));
            } else {
                out.push(Stored::New(n));
            }
        }
        Ok(out)
    }

    /// Record the webhook outcome of `n`.
    ///
    /// Addressed by `_id`, not `eventId`: FerretDB v1.24 (the local stack's MongoDB server) uses no
    /// index to find documents. A filter that is exactly `{_id: <value>}` is pushed down to SQLite,
    /// which still scans the table but never decodes a document (about a tenth of the time); any
    /// other filter reads and decodes every document of the collection in FerretDB. On MongoDB
    /// both are index lookups.
    pub async fn set_delivery(
        &self,
        n: &Notification,
        delivery: Delivery,
        attempts: u32,
        last_error: Option<&str>,
    ) -> Result<(), StoreError> {
        let mut set = doc! {"delivery": delivery.as_str(), "deliveryAttempts": i64::from(attempts)};
        if let Some(e) = last_error {
            set.insert("deliveryError", e);
        }
        let filter = match ObjectId::parse_str(&n.id) {
            Ok(id) => doc! {"_id": id},
            Err(_) => doc! {"eventId": &n.event_id},
        };
        self.coll.update_one(filter, doc! {"$set": set}).await?;
        Ok(())
    }

    /// Newest first, optionally for one order.
    pub async fn list(
        &self,
        order_number: Option<&str>,
        page: u64,
        size: u64,
    ) -> Result<(Vec<Notification>, u64), StoreError> {
        let filter = match order_number {
            Some(o) => doc! {"orderNumber": o},
            None => doc! {},
        };
        // A full read of the collection on FerretDB v1.24, like the `find` below: it uses no index
        // to filter or sort, so a listing costs in proportion to the collection there; on MongoDB
        // both use the orderNumber/createdAt indexes.
        let total = self.coll.count_documents(filter.clone()).await?;
        let docs: Vec<Document> = self
            .coll
            .find(filter)
            .sort(doc! {"createdAt": -1, "_id": -1})
            // The wire's skip is an int64: a page past 2^63 documents was an error, answered 503
            // (found by fuzzing); clamped, it is just a page past the end, empty.
            .skip(page.saturating_mul(size).min(i64::MAX as u64))
            .limit(i64::try_from(size).unwrap_or(i64::MAX))
            .await?
            .try_collect()
            .await?;
        Ok((docs.iter().filter_map(from_doc).collect(), total))
    }
}

fn message_for(ev: &OrderPlaced) -> String {
    let items: i64 = ev.lines.iter().map(|l| l.quantity).sum();
    match (&ev.total, items) {
        (Some(total), n) if n > 0 => format!(
            "Order {} placed: {n} item(s), total {total}",
            ev.order_number
        ),
        _ => format!("Order {} placed", ev.order_number),
    }
}

fn to_doc(n: &Notification) -> Document {
    let lines: Vec<Bson> = n
        .lines
        .iter()
        .map(|l| {
            Bson::Document(doc! {"skuCode": &l.sku_code, "price": &l.price, "quantity": l.quantity})
        })
        .collect();
    let mut d = doc! {
        "_id": ObjectId::parse_str(&n.id).unwrap_or_else(|_| ObjectId::new()),
        "eventId": &n.event_id,
        "orderNumber": &n.order_number,
        "message": &n.message,
        "createdAt": DateTime::from_millis(n.created_at.timestamp_millis()),
        "lines": lines,
        "source": {"topic": &n.source.topic, "partition": n.source.partition, "offset": n.source.offset},
        "delivery": n.delivery.as_str(),
    };
    if let Some(t) = n.occurred_at {
        d.insert("occurredAt", DateTime::from_millis(t.timestamp_millis()));
    }
    if let Some(t) = &n.total {
        d.insert("total", t);
    }
    if let Some(t) = &n.trace_id {
        d.insert("traceId", t);
    }
    d
}

fn as_i64(b: Option<&Bson>) -> Option<i64> {
    match b? {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) => Some(*f as i64),
        _ => None,
    }
}

fn to_chrono(t: DateTime) -> Option<ChronoDateTime<Utc>> {
    ChronoDateTime::from_timestamp_millis(t.timestamp_millis())
}

fn from_doc(d: &Document) -> Option<Notification> {
    let lines = d
        .get_array("lines")
        .map(|a| {
            a.iter()
                .filter_map(|l| l.as_document())
                .map(|l| Line {
                    sku_code: l.get_str("skuCode").unwrap_or_default().to_owned(),
                    price: l.get_str("price").unwrap_or_default().to_owned(),
                    quantity: as_i64(l.get("quantity")).unwrap_or(0),
                })
                .collect()
        })
        .unwrap_or_default();
    let src = d.get_document("source").ok();
    Some(Notification {
        id: d.get_object_id("_id").ok()?.to_hex(),
        event_id: d.get_str("eventId").ok()?.to_owned(),
        order_number: d.get_str("orderNumber").ok()?.to_owned(),
        message: d.get_str("message").unwrap_or_default().to_owned(),
        occurred_at: d
            .get_datetime("occurredAt")
            .ok()
            .and_then(|t| to_chrono(*t)),
        created_at: to_chrono(*d.get_datetime("createdAt").ok()?)?,
        lines,
        total: d.get_str("total").ok().map(str::to_owned),
        source: Source {
            topic: src
                .and_then(|s| s.get_str("topic").ok())
                .unwrap_or_default()
                .to_owned(),
            partition: src
                .and_then(|s| as_i64(s.get("partition")))
                .and_then(|p| i32::try_from(p).ok())
                .unwrap_or(0),
            offset: src.and_then(|s| as_i64(s.get("offset"))).unwrap_or(0),
        },
        trace_id: d.get_str("traceId").ok().map(str::to_owned),
        delivery: Delivery::parse(d.get_str("delivery").unwrap_or("NONE")),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_round_trip_keeps_everything() {
        let n = Notification {
            id: ObjectId::new().to_hex(),
            event_id: uuid::Uuid::new_v4().to_string(),
            order_number: "o-1".into(),
            message: "m".into(),
            occurred_at: Some(Utc::now()),
            created_at: Utc::now(),
            lines: vec![Line {
                sku_code: "s".into(),
                price: "1.50".into(),
                quantity: 3,
            }],
            total: Some("4.50".into()),
            source: Source {
                topic: "t".into(),
                partition: 2,
                offset: 99,
            },
            trace_id: Some("abc".into()),
            delivery: Delivery::Pending,
        };
        let back = from_doc(&to_doc(&n)).unwrap();
        assert_eq!(back.event_id, n.event_id);
        assert_eq!(back.lines, n.lines);
        assert_eq!(back.source, n.source);
        assert_eq!(back.delivery, Delivery::Pending);
        assert_eq!(back.total, n.total);
        assert_eq!(back.trace_id, n.trace_id);
    }
}
