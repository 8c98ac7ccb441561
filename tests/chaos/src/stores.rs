//! What the Shop's stores themselves hold about one soak run, read around the services: the order
//! rows (MariaDB `order_service`), the stock and reservations (MariaDB `inventory_service`) and the
//! stored notifications (FerretDB `notification-service`).
//!
//! The stores are the Shop's managed ones: their credentials come from the `<shop>-stores` Secret
//! and their addresses from their Services' ClusterIPs, which kube-proxy makes reachable from the
//! host. Everything a run creates carries its prefix (SKUs and Idempotency-Keys), so other traffic
//! of the same Shop is left out.

use std::collections::BTreeMap;

use anyhow::Context;
use futures::TryStreamExt;
use k8s_openapi::api::core::v1::{Secret, Service};
use kube::Api;
use mongodb::bson::{Document, doc};
use sqlx::mysql::MySqlPoolOptions;
use sqlx::{MySqlPool, Row};

/// The database of shop-notification (its `SHOP_MONGO_DB` default, which the operator keeps).
const NOTIFICATION_DB: &str = "notification-service";

/// What the stores hold for one run.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Stored orders of the run: Idempotency-Key → the order numbers stored under it.
    pub orders: BTreeMap<String, Vec<String>>,
    /// Stored notifications of the run's orders: order number → how many.
    pub notifications: BTreeMap<String, u32>,
    /// Available stock of each of the run's SKUs.
    pub stock: BTreeMap<String, i64>,
    /// Units held by RESERVED reservations, per SKU of the run.
    pub reserved: BTreeMap<String, i64>,
    /// Order numbers of the RESERVED reservations on the run's SKUs.
    pub reservations: Vec<String>,
    /// Outbox rows of the whole Shop not yet published to Kafka.
    pub outbox_pending: i64,
}

/// Connections to one Shop's managed MariaDB and FerretDB.
pub struct Stores {
    orders: MySqlPool,
    inventory: MySqlPool,
    notifications: mongodb::Collection<Document>,
}

/// `host` of a Service's ClusterIP.
async fn cluster_ip(client: &kube::Client, ns: &str, name: &str) -> anyhow::Result<String> {
    let svc = Api::<Service>::namespaced(client.clone(), ns)
        .get(name)
        .await
        .with_context(|| format!("reading Service {ns}/{name}"))?;
    svc.spec
        .and_then(|s| s.cluster_ip)
        .filter(|ip| !ip.is_empty() && ip != "None")
        .with_context(|| format!("Service {ns}/{name} has no ClusterIP"))
}

/// Replaces the `host:port` authority's host of a URL with `ip` (the Service's DNS name, which
/// only resolves inside the cluster).
fn with_host(url: &str, host: &str, ip: &str) -> anyhow::Result<String> {
    anyhow::ensure!(url.contains(host), "{host} not in the store URL");
    Ok(url.replacen(host, ip, 1))
}

impl Stores {
    /// Connects to the managed stores of Shop `ns/shop`.
    pub async fn connect(client: &kube::Client, ns: &str, shop: &str) -> anyhow::Result<Self> {
        let secret_name = format!("{shop}-stores");
        let secret = Api::<Secret>::namespaced(client.clone(), ns)
            .get(&secret_name)
            .await
            .with_context(|| {
                format!("reading Secret {ns}/{secret_name} (are the Shop's stores managed?)")
            })?;
        let data = secret.data.unwrap_or_default();
        let value = |key: &str| -> anyhow::Result<String> {
            let v = data
                .get(key)
                .with_context(|| format!("Secret {secret_name} has no {key}"))?;
            Ok(String::from_utf8_lossy(&v.0).trim().to_owned())
        };
        let mysql_host = format!("{shop}-mysql");
        let mysql = with_host(
            &value("mysql-url")?,
            &mysql_host,
            &cluster_ip(client, ns, &mysql_host).await?,
        )?;
        let mongo_host = format!("{shop}-mongodb");
        let mut mongo = with_host(
            &value("mongodb-url")?,
            &mongo_host,
            &cluster_ip(client, ns, &mongo_host).await?,
        )?;
        mongo.push_str(if mongo.contains('?') { "&" } else { "?" });
        mongo.push_str("directConnection=true");
        let pool = |db: &str| {
            MySqlPoolOptions::new()
                .max_connections(2)
                .acquire_timeout(std::time::Duration::from_secs(10))
                .connect_lazy(&format!("{}/{db}", mysql.trim_end_matches('/')))
        };
        let mongo = mongodb::Client::with_uri_str(&mongo)
            .await
            .context("FerretDB client")?;
        Ok(Self {
            orders: pool("order_service").context("order_service")?,
            inventory: pool("inventory_service").context("inventory_service")?,
            notifications: mongo
                .database(NOTIFICATION_DB)
                .collection::<Document>("notification"),
        })
    }

    /// Reads what the stores hold for the run whose SKUs and keys start with `prefix`.
    pub async fn snapshot(&self, prefix: &str) -> anyhow::Result<Snapshot> {
        let like = format!("{prefix}%");
        let mut snap = Snapshot::default();
        let rows = sqlx::query(
            "SELECT order_number, idempotency_key FROM orders WHERE idempotency_key LIKE ?",
        )
        .bind(&like)
        .fetch_all(&self.orders)
        .await
        .context("reading the run's orders")?;
        for r in rows {
            let number: String = r.try_get("order_number")?;
            let key: String = r.try_get("idempotency_key")?;
            snap.orders.entry(key).or_default().push(number);
        }
        snap.outbox_pending = sqlx::query("SELECT COUNT(*) AS n FROM outbox WHERE sent_at IS NULL")
            .fetch_one(&self.orders)
            .await
            .context("counting the outbox")?
            .try_get("n")?;
        for r in sqlx::query("SELECT sku_code, quantity FROM inventory WHERE sku_code LIKE ?")
            .bind(&like)
            .fetch_all(&self.inventory)
            .await
            .context("reading the run's stock")?
        {
            snap.stock
                .insert(r.try_get("sku_code")?, r.try_get("quantity")?);
        }
        for r in sqlx::query(
            "SELECT l.sku_code, l.order_number, l.quantity FROM reservation_lines l \
             JOIN reservations r ON r.order_number = l.order_number \
             WHERE r.status = 'RESERVED' AND l.sku_code LIKE ?",
        )
        .bind(&like)
        .fetch_all(&self.inventory)
        .await
        .context("reading the run's reservations")?
        {
            let sku: String = r.try_get("sku_code")?;
            let quantity: i64 = r.try_get("quantity")?;
            *snap.reserved.entry(sku).or_default() += quantity;
            snap.reservations.push(r.try_get("order_number")?);
        }
        snap.reservations.sort();
        snap.reservations.dedup();
        // FerretDB on SQLite pushes down only `_id` filters, so the whole collection is read once
        // (projected to the order number) and counted here.
        let numbers: std::collections::BTreeSet<&String> = snap.orders.values().flatten().collect();
        let mut cursor = self
            .notifications
            .find(doc! {})
            .projection(doc! {"orderNumber": 1, "_id": 0})
            .await
            .context("reading the notifications")?;
        let mut notified: BTreeMap<String, u32> = BTreeMap::new();
        while let Some(d) = cursor
            .try_next()
            .await
            .context("reading the notifications")?
        {
            if let Ok(n) = d.get_str("orderNumber")
                && numbers.contains(&n.to_owned())
            {
                *notified.entry(n.to_owned()).or_default() += 1;
            }
        }
        snap.notifications = notified;
        Ok(snap)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_service_name_is_replaced_by_its_address() {
        assert_eq!(
            with_host("mysql://shop:pw@demo-mysql:3306", "demo-mysql", "10.96.0.7").unwrap(),
            "mysql://shop:pw@10.96.0.7:3306"
        );
        assert!(with_host("mysql://x@other:3306", "demo-mysql", "10.96.0.7").is_err());
    }
}
