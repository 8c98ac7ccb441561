package dev.shopkeeper.springclients;

import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;

import org.springframework.cloud.client.ServiceInstance;
import org.springframework.cloud.client.discovery.DiscoveryClient;
import org.springframework.cloud.client.loadbalancer.LoadBalanced;
import org.springframework.cloud.client.serviceregistry.Registration;
import org.springframework.context.annotation.Bean;
import org.springframework.context.annotation.Configuration;
import org.springframework.context.annotation.Primary;
import org.springframework.context.annotation.Profile;
import org.springframework.core.ParameterizedTypeReference;
import org.springframework.web.bind.annotation.GetMapping;
import org.springframework.web.bind.annotation.PathVariable;
import org.springframework.web.bind.annotation.RestController;
import org.springframework.web.client.RestClient;

/**
 * `eureka` mode: a plain Spring MVC app with spring-cloud-starter-netflix-eureka-client, as the
 * tutorial's services are. It registers with the registry named by
 * eureka.client.service-url.defaultZone, renews, fetches deltas and cancels on shutdown, all done
 * by the Netflix client itself; this class only adds endpoints that let the test see the result.
 */
@Configuration
@Profile("eureka")
public class EchoApp {

    /** The tutorial's way of calling another service by name: a @LoadBalanced client builder. */
    @Bean
    @LoadBalanced
    RestClient.Builder loadBalancedRestClient() {
        return RestClient.builder();
    }

    /**
     * A plain builder for everyone else. Without it the @LoadBalanced one above is the only
     * RestClient.Builder bean (Boot's own backs off), and the Eureka client takes it for its own
     * transport: it then resolves the registry's host name as a service id and never registers
     * ("No instances available for 127.0.0.1"). A trap of Spring Cloud, not of the registry.
     */
    @Bean
    @Primary
    RestClient.Builder plainRestClientBuilder() {
        return RestClient.builder();
    }

    @RestController
    @Profile("eureka")
    static class Endpoints {
        private final Registration registration;
        private final DiscoveryClient discovery;
        private final RestClient.Builder loadBalanced;

        Endpoints(Registration registration, DiscoveryClient discovery, @LoadBalanced RestClient.Builder loadBalanced) {
            this.registration = registration;
            this.discovery = discovery;
            this.loadBalanced = loadBalanced;
        }

        /** Who answered: the registry's instance id of this app (what the gateway test checks). */
        @GetMapping("/hello")
        Map<String, Object> hello() {
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("app", registration.getServiceId());
            out.put("instanceId", registration.getInstanceId());
            out.put("port", registration.getPort());
            return out;
        }

        /** What this app's Eureka client currently knows of `service` (its local registry copy). */
        @GetMapping("/instances/{service}")
        List<Map<String, Object>> instances(@PathVariable String service) {
            return discovery.getInstances(service).stream().map(EchoApp::describe).toList();
        }

        /** Calls `service`'s /hello by its name, resolved through the registry by Spring Cloud LoadBalancer. */
        @GetMapping("/call/{service}")
        Map<String, Object> call(@PathVariable String service) {
            Map<String, Object> answer = loadBalanced.build().get()
                    .uri("http://" + service + "/hello")
                    .retrieve()
                    .body(new ParameterizedTypeReference<Map<String, Object>>() {});
            Map<String, Object> out = new LinkedHashMap<>();
            out.put("caller", registration.getInstanceId());
            out.put("answer", answer);
            return out;
        }
    }

    static Map<String, Object> describe(ServiceInstance i) {
        Map<String, Object> m = new LinkedHashMap<>();
        m.put("instanceId", i.getInstanceId());
        m.put("serviceId", i.getServiceId());
        m.put("host", i.getHost());
        m.put("port", i.getPort());
        m.put("uri", String.valueOf(i.getUri()));
        return m;
    }
}
