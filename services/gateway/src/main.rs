//! shop-gateway: the single entry point of a shop: discovery routing, JWT security, rate limits, breakers.
//!
//! `shop-gateway` runs the gateway; `shop-gateway mint-token --sub alice --scope orders.write` prints a
//! development token signed with `SHOP_JWT_SECRET` (or `--secret`).

use clap::Parser;
use shop_gateway::app::{Cli, mint_token, run};

// Every proxied request allocates and frees a few small buffers (header maps, hyper's request and
// response heads) on the worker threads; glibc's malloc spent ~5 % of the gateway's CPU on them.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

// The main runtime only runs start-up, discovery refresh, the signal handler and the sweeper;
// requests are served by the per-core worker runtimes (see `server::serve_workers`).
#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match &cli.command {
        Some(cmd) => {
            println!("{}", mint_token(&cli.gateway, cmd)?);
            Ok(())
        }
        None => run(cli.common, cli.gateway).await,
    }
}
