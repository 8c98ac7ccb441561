//! shop-gateway: the single entry point of a shop: discovery routing, JWT security, rate limits, breakers.
//!
//! `shop-gateway` runs the gateway; `shop-gateway mint-token --sub alice --scope orders.write` prints a
//! development token signed with `SHOP_JWT_SECRET` (or `--secret`).

use clap::Parser;
use shop_gateway::app::{Cli, mint_token, run};

#[tokio::main]
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
