//! `shop-chaos`: the chaos soak against a running Shop (`make chaos` runs it against `make up`'s).
//! Exits 0 when nothing was lost or doubled, 1 when the stores disagree with the client, 2 when
//! the run could not be carried out.

use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use shop_chaos::{Config, plan};
use shop_testkit::cluster;

/// Places orders through a Shop's gateway while its pods and stores are killed and paused, then
/// checks every order against the stores themselves.
#[derive(Parser, Debug)]
#[command(name = "shop-chaos", version)]
struct Args {
    /// Orders to place at least (the load also lasts until the fault schedule is done).
    #[arg(long, env = "CHAOS_ORDERS", default_value_t = 10_000)]
    orders: usize,
    /// Orders started per second.
    #[arg(long, env = "CHAOS_RATE", default_value_t = 40)]
    rate: u32,
    /// Orders waiting for an answer at once, at most.
    #[arg(long, env = "CHAOS_CONCURRENCY", default_value_t = 64)]
    concurrency: usize,
    /// The fault schedule: `full`, `short`, or steps like `kill:order,pause:inventory:8`
    /// (targets: registry, gateway, product, inventory, order, notification, mysql, mongodb,
    /// kafka, zipkin).
    #[arg(long, env = "CHAOS_FAULTS", default_value = "full")]
    faults: String,
    /// Seconds of quiet after a target is whole again, before the next fault.
    #[arg(long, env = "CHAOS_GAP_SECS", default_value_t = 15)]
    gap_secs: u64,
    /// Seconds the client retries one order before giving up.
    #[arg(long, default_value_t = 120)]
    patience_secs: u64,
    /// Seconds to wait after the load for notifications and the release of orphaned reservations
    /// (the order service's reconciler grace is 120 s).
    #[arg(long, default_value_t = 240)]
    settle_secs: u64,
    /// The Shop (its stores managed): namespace/name.
    #[arg(long, default_value = "shop/demo")]
    shop: String,
    /// Its gateway as this machine reaches it.
    #[arg(long, default_value = cluster::DEMO_GATEWAY)]
    gateway: String,
    /// Also write the report (Markdown) to this file.
    #[arg(long)]
    report: Option<std::path::PathBuf>,
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::from(1),
        Err(e) => {
            eprintln!("shop-chaos: {e:#}");
            std::process::ExitCode::from(2)
        }
    }
}

async fn run() -> anyhow::Result<bool> {
    let args = Args::parse();
    let (namespace, shop) = args
        .shop
        .split_once('/')
        .context("--shop must be namespace/name")?;
    let faults = plan::parse(&args.faults).map_err(|e| anyhow::anyhow!("--faults: {e}"))?;
    let kube = cluster::client().await;
    cluster::require_real_node(&kube).await;
    let cfg = Config {
        namespace: namespace.to_owned(),
        shop: shop.to_owned(),
        gateway: args.gateway.clone(),
        token: cluster::dev_token(),
        orders: args.orders,
        rate: args.rate,
        concurrency: args.concurrency,
        patience: Duration::from_secs(args.patience_secs),
        plan: faults,
        gap: Duration::from_secs(args.gap_secs),
        settle: Duration::from_secs(args.settle_secs),
        command: std::env::args().collect::<Vec<_>>().join(" "),
    };
    let report = shop_chaos::run(&kube, &cfg).await?;
    let md = report.markdown();
    println!("{md}");
    if let Some(path) = &args.report {
        let doc = std::fs::read_to_string(path).unwrap_or_default();
        std::fs::write(path, with_section(&doc, &md))
            .with_context(|| format!("writing {}", path.display()))?;
        eprintln!("[chaos] report written to {}", path.display());
    }
    Ok(report.passed())
}

/// Markers of the soak's section of docs/reliability.md (the rest of the file is kept).
const BEGIN: &str = "<!-- chaos:begin (written by `make chaos`; do not edit by hand) -->";
const END: &str = "<!-- chaos:end -->";

/// `doc` with its chaos section replaced by `run` (appended when the markers are missing).
fn with_section(doc: &str, run: &str) -> String {
    let section = format!("{BEGIN}\n{run}\n{END}");
    match (doc.find(BEGIN), doc.find(END)) {
        (Some(b), Some(e)) if b < e => {
            format!("{}{section}{}", &doc[..b], &doc[e + END.len()..])
        }
        _ => format!("{}\n\n{section}\n", doc.trim_end()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_section_is_replaced_and_the_rest_kept() {
        let doc = format!("# R\n\nintro\n\n{BEGIN}\nold\n{END}\n\n## Fuzzing\nkept\n");
        let new = with_section(&doc, "new run");
        assert!(new.starts_with("# R\n\nintro\n\n") && new.ends_with("## Fuzzing\nkept\n"));
        assert!(new.contains("new run") && !new.contains("old"));
        let appended = with_section("# R\n", "run");
        assert!(
            appended.starts_with("# R\n\n") && appended.contains(&format!("{BEGIN}\nrun\n{END}"))
        );
    }
}
