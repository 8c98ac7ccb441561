-- Stock per SKU. `quantity` is the AVAILABLE quantity: reservations are taken out of it
-- atomically, so it can never be read as more than what is really left.
CREATE TABLE IF NOT EXISTS inventory (
    sku_code   VARCHAR(128) NOT NULL,
    quantity   BIGINT       NOT NULL,
    updated_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6) ON UPDATE CURRENT_TIMESTAMP(6),
    PRIMARY KEY (sku_code),
    CONSTRAINT inventory_quantity_non_negative CHECK (quantity >= 0)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

-- One row per order number: the idempotency anchor of reservations. A release of an
-- unknown order number leaves a RELEASED tombstone so a late reservation cannot leak stock.
CREATE TABLE IF NOT EXISTS reservations (
    order_number VARCHAR(64)  NOT NULL,
    status       VARCHAR(16)  NOT NULL,
    created_at   TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6),
    released_at  TIMESTAMP(6) NULL,
    PRIMARY KEY (order_number)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;

CREATE TABLE IF NOT EXISTS reservation_lines (
    order_number VARCHAR(64)  NOT NULL,
    sku_code     VARCHAR(128) NOT NULL,
    quantity     BIGINT       NOT NULL,
    PRIMARY KEY (order_number, sku_code),
    CONSTRAINT reservation_lines_reservation FOREIGN KEY (order_number) REFERENCES reservations (order_number)
) ENGINE = InnoDB DEFAULT CHARSET = utf8mb4 COLLATE = utf8mb4_bin;
