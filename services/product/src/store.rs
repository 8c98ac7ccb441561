//! MongoDB persistence of products (db `product-service`, collection `product`, as in the original).
//!
//! Exists to keep every MongoDB detail in one place. The important rule lives here: a product and
//! its pending-stock marker are written in ONE document write, so a crash or an inventory outage
//! between "product saved" and "stock seeded" can never lose the stock — the marker stays until
//! inventory confirms, and only then is it cleared by a write conditioned on the marker's token.
//! Prices are stored as decimal strings (what Spring Data MongoDB does for `BigDecimal`), never as
//! floats.

use std::str::FromStr;
use std::time::Duration;

use futures::TryStreamExt;
use mongodb::bson::{Bson, DateTime, Document, doc, oid::ObjectId};
use mongodb::options::{IndexOptions, ReturnDocument};
use mongodb::{Client, Collection, IndexModel};
use rust_decimal::Decimal;

use crate::model::{ProductInput, ProductView, StockSync};

/// Errors from the product store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// Another product already has this SKU code.
    #[error("skuCode {0:?} is already used by another product")]
    DuplicateSku(String),
    /// The database refused or could not be reached.
    #[error("mongodb: {0}")]
    Mongo(#[from] mongodb::error::Error),
    /// A stored document does not have the expected shape.
    #[error("stored product {id} is corrupt: {reason}")]
    Corrupt {
        /// Document id.
        id: String,
        /// What was wrong.
        reason: String,
    },
}

/// A pending stock quantity still to be confirmed by inventory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingStock {
    /// Product id.
    pub id: ObjectId,
    /// SKU the stock belongs to.
    pub sku_code: String,
    /// Quantity to set.
    pub quantity: i64,
    /// Unique token of this marker; clearing is conditioned on it so a newer marker survives.
    pub token: String,
}

/// Result of listing products.
#[derive(Debug)]
pub struct Page {
    /// Products on this page.
    pub items: Vec<ProductView>,
    /// Total number of matching products.
    pub total: u64,
}

/// One row of `product_changes`: product `product` was written (see [`crate::search`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    /// Id of the row.
    pub change: ObjectId,
    /// The product written.
    pub product: ObjectId,
}

/// Handle on the product collection (cheap clone).
#[derive(Clone)]
pub struct ProductStore {
    coll: Collection<Document>,
    changes: Collection<Document>,
    client: Client,
}

impl ProductStore {
    /// A client of `url` (connects lazily); [`ProductStore::ensure_indexes`] creates the unique
    /// index on `skuCode`.
    pub async fn connect(url: &str, db: &str) -> Result<Self, StoreError> {
        let client = shop_runtime::mongo::client(url, "shop-product").await?;
        let coll = client.database(db).collection::<Document>("product");
        let changes = client
            .database(db)
            .collection::<Document>("product_changes");
        Ok(Self {
            coll,
            changes,
            client,
        })
    }

    /// The client, for [`shop_runtime::mongo::prepare`].
    pub fn client(&self) -> &mongodb::Client {
        &self.client
    }

    /// Creates the unique SKU index (idempotent); run before serving, see `main`.
    pub async fn ensure_indexes(&self) -> Result<(), StoreError> {
        let unique = IndexModel::builder()
            .keys(doc! {"skuCode": 1})
            .options(
                IndexOptions::builder()
                    .unique(true)
                    .name("skuCode_unique".to_owned())
                    .build(),
            )
            .build();
        self.coll.create_index(unique).await?;
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

    /// Insert a new product; when it carries a quantity the pending-stock marker is part of the
    /// same insert.
    pub async fn insert(
        &self,
        input: &ProductInput,
        sku_code: &str,
    ) -> Result<(ProductView, Option<PendingStock>), StoreError> {
        let id = ObjectId::new();
        let now = DateTime::now();
        let mut d = doc! {
            "_id": id,
            "name": &input.name,
            "description": &input.description,
            "price": input.price.to_string(),
            "skuCode": sku_code,
            "createdAt": now,
            "updatedAt": now,
        };
        let pending = input.quantity.map(|q| PendingStock {
            id,
            sku_code: sku_code.to_owned(),
            quantity: q,
            token: uuid::Uuid::new_v4().to_string(),
        });
        if let Some(p) = &pending {
            d.insert("quantity", p.quantity);
            d.insert("pendingStock", marker_doc(p));
        }
        match self.coll.insert_one(&d).await {
            Ok(_) => {}
            Err(e) if is_duplicate_key(&e) => {
                return Err(StoreError::DuplicateSku(sku_code.to_owned()));
            }
            Err(e) => return Err(e.into()),
        }
        self.record_change(id).await;
        Ok((to_view(&d)?, pending))
    }

    /// Replace name/description/price (and set a new stock marker when a quantity is given).
    /// Returns `None` when the product does not exist.
    pub async fn replace(
        &self,
        id: ObjectId,
        input: &ProductInput,
    ) -> Result<Option<(ProductView, Option<PendingStock>)>, StoreError> {
        let mut set = doc! {
            "name": &input.name,
            "description": &input.description,
            "price": input.price.to_string(),
            "updatedAt": DateTime::now(),
        };
        let token = input.quantity.map(|_| uuid::Uuid::new_v4().to_string());
        if let (Some(q), Some(t)) = (input.quantity, &token) {
            set.insert("quantity", q);
            set.insert(
                "pendingStock",
                doc! {"quantity": q, "token": t, "since": DateTime::now(), "attempts": 0},
            );
        }
        let updated = self
            .coll
            .find_one_and_update(doc! {"_id": id}, doc! {"$set": set})
            .return_document(ReturnDocument::After)
            .await?;
        let Some(d) = updated else {
            return Ok(None);
        };
        self.record_change(id).await;
        let view = to_view(&d)?;
        let pending = match (input.quantity, token) {
            (Some(quantity), Some(token)) => Some(PendingStock {
                id,
                sku_code: view.sku_code.clone(),
                quantity,
                token,
            }),
            _ => None,
        };
        Ok(Some((view, pending)))
    }

    /// Fetch one product.
    pub async fn get(&self, id: ObjectId) -> Result<Option<ProductView>, StoreError> {
        match self.coll.find_one(doc! {"_id": id}).await? {
            Some(d) => Ok(Some(to_view(&d)?)),
            None => Ok(None),
        }
    }

    /// Delete one product; `false` when it did not exist.
    pub async fn delete(&self, id: ObjectId) -> Result<bool, StoreError> {
        let r = self.coll.delete_one(doc! {"_id": id}).await?;
        if r.deleted_count > 0 {
            self.record_change(id).await;
        }
        Ok(r.deleted_count > 0)
    }

    /// Note in `product_changes` that `product` was written, so the other replicas' search indexes
    /// re-read it ([`crate::search`]). A row that cannot be written is logged, not returned: the
    /// product write itself succeeded, and the replicas' periodic rebuild picks the change up.
    pub async fn record_change(&self, product: ObjectId) {
        let row = doc! {"_id": ObjectId::new(), "product": product, "at": DateTime::now()};
        if let Err(e) = self.changes.insert_one(row).await {
            tracing::warn!(error = %e, %product, "recording a product change for the search index failed");
        }
    }

    /// Every row of `product_changes` (a small collection: rows expire, see
    /// [`ProductStore::expire_changes`]).
    pub async fn recent_changes(&self) -> Result<Vec<Change>, StoreError> {
        let docs: Vec<Document> = self.changes.find(doc! {}).await?.try_collect().await?;
        Ok(docs
            .iter()
            .filter_map(|d| {
                Some(Change {
                    change: d.get_object_id("_id").ok()?,
                    product: d.get_object_id("product").ok()?,
                })
            })
            .collect())
    }

    /// Delete the rows of `product_changes` older than `retention`.
    pub async fn expire_changes(&self, retention: Duration) -> Result<(), StoreError> {
        let cutoff = DateTime::from_millis(
            DateTime::now()
                .timestamp_millis()
                .saturating_sub(i64::try_from(retention.as_millis()).unwrap_or(i64::MAX)),
        );
        self.changes
            .delete_many(doc! {"at": {"$lt": cutoff}})
            .await?;
        Ok(())
    }

    /// Every product (the searchable fields and what a view needs), for a full index build.
    pub async fn all_products(&self) -> Result<Vec<ProductView>, StoreError> {
        let mut cursor = self
            .coll
            .find(doc! {})
            .projection(doc! {"name": 1, "description": 1, "price": 1, "skuCode": 1})
            .batch_size(10_000)
            .await?;
        let mut out = Vec::new();
        while let Some(d) = cursor.try_next().await? {
            match to_view(&d) {
                Ok(v) => out.push(v),
                Err(e) => tracing::warn!(error = %e, "product left out of the search index"),
            }
        }
        Ok(out)
    }

    /// List products in creation order, optionally filtered by exact name.
    pub async fn list(&self, name: Option<&str>, page: u64, size: u64) -> Result<Page, StoreError> {
        let filter = match name {
            Some(n) => doc! {"name": n},
            None => doc! {},
        };
        let total = self.coll.count_documents(filter.clone()).await?;
        let docs: Vec<Document> = self
            .coll
            .find(filter)
            .sort(doc! {"_id": 1})
            // The wire's skip is an int64: a page past 2^63 documents was an error, answered 503
            // (found by fuzzing); clamped, it is just a page past the end, empty.
            .skip(page.saturating_mul(size).min(i64::MAX as u64))
            .limit(i64::try_from(size).unwrap_or(i64::MAX))
            .await?
            .try_collect()
            .await?;
        let items = docs.iter().map(to_view).collect::<Result<Vec<_>, _>>()?;
        Ok(Page { items, total })
    }

    /// Current marker of one product (re-read under the per-SKU sync lock so a stale quantity is
    /// never pushed after a newer one).
    pub async fn pending_of(&self, id: ObjectId) -> Result<Option<PendingStock>, StoreError> {
        let d = self
            .coll
            .find_one(doc! {"_id": id})
            .projection(doc! {"skuCode": 1, "pendingStock": 1})
            .await?;
        Ok(d.and_then(|d| marker_from(&d)))
    }

    /// Products that still have a pending stock marker, oldest first.
    pub async fn pending(&self, limit: i64) -> Result<Vec<PendingStock>, StoreError> {
        let docs: Vec<Document> = self
            .coll
            .find(doc! {"pendingStock": {"$exists": true}})
            .projection(doc! {"skuCode": 1, "pendingStock": 1})
            .sort(doc! {"_id": 1})
            .limit(limit)
            .await?
            .try_collect()
            .await?;
        Ok(docs.iter().filter_map(marker_from).collect())
    }

    /// Clear the marker if (and only if) it is still the one identified by `token`. Atomic on
    /// MongoDB; on FerretDB the condition is checked on a copy read before the write, so callers
    /// hold `StockSyncer::write_lock` (as every updater of a product does).
    pub async fn clear_pending(&self, id: ObjectId, token: &str) -> Result<bool, StoreError> {
        let r = self
            .coll
            .update_one(
                doc! {"_id": id, "pendingStock.token": token},
                doc! {"$unset": {"pendingStock": ""}, "$set": {"stockSyncedAt": DateTime::now()}},
            )
            .await?;
        Ok(r.modified_count > 0)
    }

    /// Record a failed attempt on the marker (visible to operators in the document).
    pub async fn note_failure(
        &self,
        id: ObjectId,
        token: &str,
        error: &str,
    ) -> Result<(), StoreError> {
        self.coll
            .update_one(
                doc! {"_id": id, "pendingStock.token": token},
                doc! {"$inc": {"pendingStock.attempts": 1}, "$set": {"pendingStock.lastError": error}},
            )
            .await?;
        Ok(())
    }
}

fn marker_doc(p: &PendingStock) -> Document {
    doc! {"quantity": p.quantity, "token": &p.token, "since": DateTime::now(), "attempts": 0}
}

fn marker_from(d: &Document) -> Option<PendingStock> {
    let id = d.get_object_id("_id").ok()?;
    let sku = d.get_str("skuCode").ok()?;
    let m = d.get_document("pendingStock").ok()?;
    let quantity = as_i64(m.get("quantity")?)?;
    let token = m.get_str("token").ok()?;
    Some(PendingStock {
        id,
        sku_code: sku.to_owned(),
        quantity,
        token: token.to_owned(),
    })
}

fn as_i64(b: &Bson) -> Option<i64> {
    match b {
        Bson::Int32(i) => Some(i64::from(*i)),
        Bson::Int64(i) => Some(*i),
        Bson::Double(f) if f.fract() == 0.0 => Some(*f as i64),
        _ => None,
    }
}

/// Parse a stored product. Prices written by the original (Spring stores `BigDecimal` as a string;
/// a hand-written document might carry Decimal128 or a double) are all read back.
fn to_view(d: &Document) -> Result<ProductView, StoreError> {
    let id = d
        .get_object_id("_id")
        .map(|o| o.to_hex())
        .or_else(|_| d.get_str("_id").map(str::to_owned))
        .map_err(|_| StoreError::Corrupt {
            id: "?".into(),
            reason: "missing _id".into(),
        })?;
    let corrupt = |reason: &str| StoreError::Corrupt {
        id: id.clone(),
        reason: reason.to_owned(),
    };
    let name = d.get_str("name").map_err(|_| corrupt("missing name"))?;
    let description = d.get_str("description").unwrap_or_default();
    let price = match d.get("price") {
        Some(Bson::String(s)) => Decimal::from_str(s).map_err(|_| corrupt("bad price"))?,
        Some(Bson::Decimal128(x)) => {
            Decimal::from_str(&x.to_string()).map_err(|_| corrupt("bad price"))?
        }
        Some(Bson::Double(f)) => {
            Decimal::from_str(&f.to_string()).map_err(|_| corrupt("bad price"))?
        }
        Some(Bson::Int32(i)) => Decimal::from(*i),
        Some(Bson::Int64(i)) => Decimal::from(*i),
        _ => return Err(corrupt("missing price")),
    };
    let mut price = price;
    if price.scale() < 2 {
        price.rescale(2);
    }
    let sku_code = d.get_str("skuCode").unwrap_or_default().to_owned();
    let quantity = d.get("quantity").and_then(as_i64);
    let stock_sync = if d.contains_key("pendingStock") {
        StockSync::Pending
    } else {
        StockSync::Synced
    };
    Ok(ProductView {
        id,
        name: name.to_owned(),
        description: description.to_owned(),
        price: price.to_string(),
        sku_code,
        quantity,
        stock_sync,
    })
}

fn is_duplicate_key(e: &mongodb::error::Error) -> bool {
    use mongodb::error::{ErrorKind, WriteFailure};
    match e.kind.as_ref() {
        ErrorKind::Write(WriteFailure::WriteError(we)) => we.code == 11000,
        ErrorKind::Command(ce) => ce.code == 11000,
        ErrorKind::InsertMany(ime) => ime
            .write_errors
            .as_ref()
            .is_some_and(|w| w.iter().any(|x| x.code == 11000)),
        _ => e.to_string().contains("E11000") || e.to_string().contains("duplicate key"),
    }
}

/// Parse a path id; `None` when it is not an ObjectId.
pub fn parse_id(s: &str) -> Option<ObjectId> {
    ObjectId::parse_str(s).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn view_reads_original_documents() {
        let d = doc! {"_id": ObjectId::new(), "name": "iphone", "description": "x", "price": "1200", "_class": "Product"};
        let v = to_view(&d).unwrap();
        assert_eq!(v.price, "1200.00");
        assert_eq!(v.stock_sync, StockSync::Synced);
        let d = doc! {"_id": ObjectId::new(), "name": "a", "price": 1.5, "pendingStock": {"quantity": 3, "token": "t"}, "skuCode": "s"};
        let v = to_view(&d).unwrap();
        assert_eq!(v.price, "1.50");
        assert_eq!(v.stock_sync, StockSync::Pending);
        let m = marker_from(&d).unwrap();
        assert_eq!(
            (m.quantity, m.token.as_str(), m.sku_code.as_str()),
            (3, "t", "s")
        );
    }
}
