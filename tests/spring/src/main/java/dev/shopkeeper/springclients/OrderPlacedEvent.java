package dev.shopkeeper.springclients;

import java.math.BigDecimal;
import java.time.Instant;
import java.util.List;

/**
 * The OrderPlaced event as a plain Java record. `orderNumber` is the tutorial's one field (its
 * notification-service's OrderPlacedEvent); the others are what shop-order adds (an id to
 * de-duplicate on, the lines and the total), read here with Java types to show they are usable
 * from Java as they are: the total as a BigDecimal from its decimal string, the time as an Instant.
 */
public record OrderPlacedEvent(
        String orderNumber,
        String eventId,
        String eventType,
        Instant occurredAt,
        BigDecimal total,
        List<Line> lines) {

    /** One order line. */
    public record Line(String skuCode, BigDecimal price, int quantity) {}
}
