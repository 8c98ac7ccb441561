package dev.shopkeeper.springclients;

import java.util.Arrays;

import org.springframework.boot.SpringApplication;
import org.springframework.boot.autoconfigure.SpringBootApplication;

/**
 * Test tool, never product code: one executable jar holding the real Spring clients that
 * tests/e2e/tests/spring_clients.rs runs against shopkeeper's Rust services.
 *
 * <pre>
 * java -jar spring-clients.jar eureka [--spring.application.name=spring-echo --server.port=N
 *      --eureka.client.service-url.defaultZone=http://127.0.0.1:PORT/eureka/ ...]
 * java -jar spring-clients.jar kafka  [--spring.kafka.bootstrap-servers=... --shop.topic=... ...]
 * </pre>
 *
 * The first argument picks the mode; it becomes the active Spring profile, so
 * application-eureka.properties or application-kafka.properties applies and only that mode's
 * beans ({@link EchoApp} or {@link OrderPlacedListener}) exist. Every other argument is an
 * ordinary Spring Boot property.
 */
@SpringBootApplication
public class SpringClients {

    public static void main(String[] args) {
        String mode = args.length > 0 ? args[0] : "";
        if (!mode.equals("eureka") && !mode.equals("kafka")) {
            System.err.println("usage: java -jar spring-clients.jar eureka|kafka [--property=value ...]");
            System.exit(2);
        }
        SpringApplication app = new SpringApplication(SpringClients.class);
        app.setAdditionalProfiles(mode);
        app.run(Arrays.copyOfRange(args, 1, args.length));
    }
}
