-- Lets the hourly-retention purge find completed keys without scanning the table.
CREATE INDEX idempotency_keys_expiry ON idempotency_keys (state, updated_at);
