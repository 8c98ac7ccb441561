//! Proof that every real server of the local stack answers, through the crates the services use.
