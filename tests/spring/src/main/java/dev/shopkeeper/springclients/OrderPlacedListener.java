package dev.shopkeeper.springclients;

import java.util.LinkedHashMap;
import java.util.Map;

import org.apache.kafka.clients.consumer.ConsumerRecord;
import org.springframework.context.annotation.Profile;
import org.springframework.kafka.annotation.KafkaListener;
import org.springframework.stereotype.Component;

import tools.jackson.databind.json.JsonMapper;

/**
 * `kafka` mode: the tutorial's notification-service listener. The value deserializer and its
 * spring.json.type.mapping come from application-kafka.properties (overridable on the command
 * line), so the record arrives already converted to {@link OrderPlacedEvent} by the type header
 * shop-order sets. Each record is printed as one JSON line on stdout for the test to read; Spring's
 * own log lines never start with `{`.
 */
@Component
@Profile("kafka")
public class OrderPlacedListener {
    private final JsonMapper json = JsonMapper.builder().build();

    @KafkaListener(topics = "${shop.topic}")
    public void onOrderPlaced(ConsumerRecord<String, Object> record) {
        Object value = record.value();
        Map<String, Object> line = new LinkedHashMap<>();
        line.put("topic", record.topic());
        line.put("key", record.key());
        // The class the deserializer produced: proves the type mapping was applied.
        line.put("class", value == null ? null : value.getClass().getName());
        line.put("event", value);
        System.out.println(json.writeValueAsString(line));
        System.out.flush();
    }
}
