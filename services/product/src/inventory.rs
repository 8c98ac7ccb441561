//! The inventory service as a stock target, reached by name through the runtime's `ServiceClient`.
//!
//! Exists so the stock syncer does not know about HTTP: this adapter turns
//! `PUT /api/inventory/{skuCode}` `{"quantity": n}` (idempotent) and the client's discovery,
//! circuit breaker and timeout into a plain success or a retryable failure.

use std::time::Duration;

use shop_runtime::ServiceClient;

use crate::stock::{PushError, StockTarget};

/// Pushes stock to the `inventory` app.
pub struct InventoryTarget {
    client: ServiceClient,
    timeout: Duration,
}

impl InventoryTarget {
    /// Adapter over the runtime client with a per-push timeout.
    pub fn new(client: ServiceClient, timeout: Duration) -> Self {
        Self { client, timeout }
    }
}

impl StockTarget for InventoryTarget {
    async fn set_stock(&self, sku: &str, quantity: i64) -> Result<(), PushError> {
        let resp = self
            .client
            .put("inventory", &format!("/api/inventory/{sku}"))
            .json(&serde_json::json!({ "quantity": quantity }))
            .timeout(self.timeout)
            .send()
            .await
            .map_err(|e| PushError::Unavailable(e.to_string()))?;
        let status = resp.status();
        if status.is_success() {
            Ok(())
        } else if status.is_server_error() {
            Err(PushError::Unavailable(format!(
                "inventory answered {status}"
            )))
        } else {
            let body = resp.text().await.unwrap_or_default();
            Err(PushError::Rejected(format!(
                "inventory answered {status}: {}",
                body.chars().take(300).collect::<String>()
            )))
        }
    }
}
