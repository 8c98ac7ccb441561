//! shop-notification: consumes OrderPlaced events exactly-once-effectively, stores and streams notifications.

fn main() {}
