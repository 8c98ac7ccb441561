//! Proof that every real server of the local stack answers, through the crates the services use.
//!
//! The tests live in `tests/stack.rs`; this library is empty on purpose. They exist so that a broken
//! stack (a tool that did not build, a server that does not start, a driver that cannot speak to the
//! server we chose) shows up as one clear failing test instead of as odd failures in service tests.
