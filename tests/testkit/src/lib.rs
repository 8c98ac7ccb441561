//! Test support shared by the integration tests: where the local stack is, fail-loud checks, fresh databases, process spawning.
