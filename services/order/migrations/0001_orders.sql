-- Orders and their lines (the original's t_orders / t_order_line_items, keyed by order number).
CREATE TABLE IF NOT EXISTS orders (
    id              BIGINT       NOT NULL AUTO_INCREMENT,
    order_number    VARCHAR(64)  NOT NULL,
    status          VARCHAR(16)  NOT NULL,
    total           DECIMAL(21, 2) NOT NULL,
    idempotency_key VARCHAR(255) NULL,
    created_at      TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (id),
    UNIQUE KEY orders_order_number (order_number)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS order_line_items (
    order_number VARCHAR(64)    NOT NULL,
    line_no      INT            NOT NULL,
    sku_code     VARCHAR(128)   NOT NULL,
    price        DECIMAL(19, 2) NOT NULL,
    quantity     INT            NOT NULL,
    PRIMARY KEY (order_number, line_no),
    CONSTRAINT order_line_items_order FOREIGN KEY (order_number) REFERENCES orders (order_number)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Idempotency-Key records: IN_FLIGHT while the first request runs, DONE with the stored
-- response once its order committed (set in the order's own transaction).
CREATE TABLE IF NOT EXISTS idempotency_keys (
    idem_key        VARCHAR(255) NOT NULL,
    fingerprint     MEDIUMTEXT   NOT NULL,
    order_number    VARCHAR(64)  NOT NULL,
    state           VARCHAR(16)  NOT NULL,
    response_status SMALLINT     NULL,
    response_body   MEDIUMTEXT   NULL,
    created_at      TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    updated_at      TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    PRIMARY KEY (idem_key)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- Transactional outbox: written with the order, published by the relay, marked sent.
CREATE TABLE IF NOT EXISTS outbox (
    id            BIGINT       NOT NULL AUTO_INCREMENT,
    event_id      CHAR(36)     NOT NULL,
    topic         VARCHAR(249) NOT NULL,
    msg_key       VARCHAR(64)  NOT NULL,
    payload       MEDIUMTEXT   NOT NULL,
    headers       TEXT         NOT NULL,
    created_at    TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    claimed_by    CHAR(36)     NULL,
    claimed_until TIMESTAMP(6) NULL,
    attempts      INT          NOT NULL DEFAULT 0,
    sent_at       TIMESTAMP(6) NULL,
    PRIMARY KEY (id),
    UNIQUE KEY outbox_event_id (event_id),
    KEY outbox_pending (sent_at, id),
    KEY outbox_claim (claimed_by)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
