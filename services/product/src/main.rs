//! shop-product: product catalogue on MongoDB; seeds stock into inventory without losing it.

fn main() {}
