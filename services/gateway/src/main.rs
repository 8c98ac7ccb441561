//! shop-gateway: the single entry point of a shop: discovery routing, JWT security, rate limits, breakers.
//!
//! `shop-gateway` runs the gateway; `shop-gateway mint-token --sub alice --scope orders.write` prints a
//! development token signed with `SHOP_JWT_SECRET`.

use clap::Parser;
use shop_gateway::app::{Cli, Command, mint_token, run};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    match cli.command {
        Some(Command::MintToken {
            sub,
            scope,
            role,
            ttl_secs,
        }) => {
            println!(
                "{}",
                mint_token(&cli.gateway, &sub, &scope, &role, ttl_secs)?
            );
            Ok(())
        }
        None => run(cli.common, cli.gateway).await,
    }
}
