//! A plain HTML status page at `/`: apps, instances, status, last renewal, renewals in the last minute
//! against the self-preservation threshold, and peers — what an operator looks at first.

use crate::api::AppState;
use axum::extract::State;
use axum::response::Html;
use std::fmt::Write;

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Renders the dashboard.
pub async fn page(State(st): State<AppState>) -> Html<String> {
    let store = &st.store;
    let mut leases = store.leases();
    leases.sort_by(|a, b| {
        (&a.info.app, &a.info.instance_id).cmp(&(&b.info.app, &b.info.instance_id))
    });
    let cfg = store.config();
    let mut h = String::with_capacity(4096 + leases.len() * 256);
    let _ = write!(
        h,
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>shop-registry</title>\
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:left}}\
.UP{{color:#070}}.DOWN,.OUT_OF_SERVICE{{color:#a00}}</style></head><body><h1>shop-registry</h1>\
<h2>General</h2><table><tr><th>Instances</th><td>{}</td></tr>\
<tr><th>Renews in the last minute</th><td>{}</td></tr><tr><th>Renew threshold (per minute, {:.0} %)</th><td>{}</td></tr>\
<tr><th>Self-preservation</th><td>{}</td></tr><tr><th>Lease expiry</th><td>{}</td></tr></table>",
        leases.len(),
        store.renews_last_minute(),
        cfg.renewal_percent_threshold * 100.0,
        store.renew_threshold(),
        if cfg.self_preservation {
            "enabled"
        } else {
            "disabled"
        },
        if store.expiry_enabled() {
            "active"
        } else {
            "paused (self-preservation)"
        },
    );
    h.push_str("<h2>Peers</h2><ul>");
    let peers = st.replicator.peer_urls();
    if peers.is_empty() {
        h.push_str("<li>none (single replica)</li>");
    }
    for p in peers {
        let _ = write!(h, "<li>{}</li>", esc(&p));
    }
    h.push_str("</ul><h2>Instances</h2><table><tr><th>App</th><th>Instance</th><th>Address</th><th>Status</th>\
<th>Last renewal</th><th>Lease</th></tr>");
    for l in &leases {
        let status = l.info.effective_status().as_str();
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td class=\"{status}\">{status}</td><td>{:.1} s ago</td><td>{} s</td></tr>",
            esc(&l.info.app),
            esc(&l.info.instance_id),
            esc(&l.info.base_url()),
            l.since_renewal.as_secs_f64(),
            l.duration.as_secs(),
        );
    }
    h.push_str("</table></body></html>");
    Html(h)
}
