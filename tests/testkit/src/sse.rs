//! A reader of a server-sent-events stream (the notification service's `/api/notifications/stream`,
//! directly or through the gateway): opened before the action under test, it collects what arrives
//! so a test can wait for the event it caused and show everything streamed when that never comes.

use std::time::Duration;

use futures::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;

/// An open SSE stream, read in the background until dropped.
pub struct SseReader {
    rx: mpsc::UnboundedReceiver<String>,
    reader: JoinHandle<()>,
    /// Everything received so far (for failure messages).
    pub streamed: String,
}

impl SseReader {
    /// GETs `url` and starts reading; panics unless the server answers 200.
    pub async fn open(http: &reqwest::Client, url: &str) -> Self {
        let resp = http
            .get(url)
            .timeout(Duration::from_secs(300))
            .send()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(resp.status(), reqwest::StatusCode::OK, "GET {url}");
        let (tx, rx) = mpsc::unbounded_channel::<String>();
        let reader = tokio::spawn(async move {
            let mut body = resp.bytes_stream();
            while let Some(Ok(chunk)) = body.next().await {
                if tx
                    .send(String::from_utf8_lossy(&chunk).into_owned())
                    .is_err()
                {
                    break;
                }
            }
        });
        Self {
            rx,
            reader,
            streamed: String::new(),
        }
    }

    /// The first `data:` payload containing `needle` within `timeout`, parsed as JSON.
    pub async fn wait_for_data(
        &mut self,
        needle: &str,
        timeout: Duration,
    ) -> Option<serde_json::Value> {
        let found = |streamed: &str| {
            streamed
                .lines()
                .filter_map(|l| l.strip_prefix("data:"))
                .find(|d| d.contains(needle))
                .and_then(|d| serde_json::from_str(d.trim()).ok())
        };
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(v) = found(&self.streamed) {
                return Some(v);
            }
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(chunk)) => self.streamed.push_str(&chunk),
                Ok(None) | Err(_) => return None,
            }
        }
    }
}

impl Drop for SseReader {
    fn drop(&mut self) {
        self.reader.abort();
    }
}

/// Which service emitted a Zipkin span: its `localEndpoint.serviceName`, or the tracer scope when
/// an exporter leaves the service name out; lower case.
pub fn span_service(span: &serde_json::Value) -> String {
    span["localEndpoint"]["serviceName"]
        .as_str()
        .or_else(|| span["tags"]["otel.library.name"].as_str())
        .or_else(|| span["tags"]["otel.scope.name"].as_str())
        .unwrap_or("")
        .to_ascii_lowercase()
}
