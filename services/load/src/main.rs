//! `shop-load`: the shop's load generator, one product command instead of load tools scattered
//! over the production crates' `src/bin` (where they were built and shipped with every service).
//!
//! `shop-load mix` drives a running shop through its gateway with a realistic mix of users'
//! actions at a fixed rate and reports throughput, latency percentiles per route and errors (see
//! [`mix`]). The other subcommands are the benchmarks' single-purpose drivers, moved here
//! unchanged: `gateway` (hack/bench/gateway.sh), `notification` (hack/bench/notification.sh),
//! `order-paced` (hack/bench/orders.sh) and `registry` (hack/bench/registry.sh).

mod gateway;
mod mix;
mod notification;
mod order_paced;
mod registry;

use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

/// The shop's load generator.
#[derive(Parser, Debug)]
#[command(name = "shop-load", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// A realistic mix (browse, search, order, stream) through the gateway at a fixed rate; a
    /// report of throughput, latency percentiles per route and errors by type (text, --json).
    Mix(mix::Args),
    /// Open-loop fixed-rate GETs of one URL over keep-alive connections, one JSON line of
    /// latency percentiles (hack/bench/gateway.sh; loopback only).
    Gateway(gateway::Args),
    /// Publishes N OrderPlaced events to a Kafka topic as fast as the broker takes them
    /// (hack/bench/notification.sh).
    Notification(notification::Args),
    /// Paced orders, then the order->notification delay p50/p99/max (hack/bench/orders.sh;
    /// loopback only).
    OrderPaced(order_paced::Args),
    /// Registrations and renewals of N instances against shop-registry, and how fast a client
    /// sees changes (hack/bench/registry.sh; loopback only).
    Registry(registry::Args),
}

/// The runtime the asynchronous subcommands ran on as their own binaries (`#[tokio::main]`).
fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("starting the tokio runtime")
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(code) => code,
        Err(e) => {
            // One readable message (the causes on one line), not a debug dump with a backtrace.
            eprintln!("shop-load: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(command: Command) -> anyhow::Result<ExitCode> {
    match command {
        // Plain threads and epoll, no runtime: the tool must cost its 2-core machine little.
        Command::Gateway(a) => gateway::run(&a)?,
        Command::Notification(a) => runtime()?.block_on(notification::run(a))?,
        Command::OrderPaced(a) => runtime()?.block_on(order_paced::run(a))?,
        Command::Registry(a) => runtime()?.block_on(registry::run(a))?,
        Command::Mix(a) => {
            if runtime()?.block_on(mix::run(a))? {
                // Stopped by Ctrl-C: the report is printed, the exit status says it is partial.
                return Ok(ExitCode::from(130));
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
