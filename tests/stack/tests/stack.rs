//! One real request per server of the local stack, through the crate the services use for it.
//! No mocks: each test fails, naming the server and how to start it, when the server is missing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use shop_testkit as kit;

#[tokio::test]
async fn mariadb_row_roundtrip_with_sqlx() {
    use sqlx::{Connection, Row};
    let url = kit::fresh_mysql_database("stack").await;
    let mut conn = sqlx::MySqlConnection::connect(&url).await.expect("connect");
    sqlx::query(
        "CREATE TABLE t (id BIGINT PRIMARY KEY, sku VARCHAR(64) NOT NULL, price DECIMAL(12,2))",
    )
    .execute(&mut conn)
    .await
    .unwrap();
    sqlx::query("INSERT INTO t VALUES (?, ?, ?)")
        .bind(1_i64)
        .bind("iphone_13")
        .bind(rust_decimal_from_str("1200.50"))
        .execute(&mut conn)
        .await
        .unwrap();
    let row = sqlx::query("SELECT sku, CAST(price AS CHAR) AS price FROM t WHERE id = ?")
        .bind(1_i64)
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(row.get::<String, _>("sku"), "iphone_13");
    assert_eq!(row.get::<String, _>("price"), "1200.50");
}

fn rust_decimal_from_str(s: &str) -> String {
    // Bound as a string: MariaDB parses it exactly into DECIMAL, no float on the way.
    s.to_string()
}

#[tokio::test]
async fn mongodb_document_roundtrip_with_the_mongodb_driver() {
    use mongodb::bson::{Document, doc};
    let client = mongodb::Client::with_uri_str(kit::mongo_url())
        .await
        .expect("client");
    let db = client.database(&kit::fresh_name("stack"));
    let coll = db.collection::<Document>("product");
    let id = coll
        .insert_one(doc! {"name": "iPhone 13", "price": "1200.50", "skuCode": "iphone_13"})
        .await
        .expect("insert_one")
        .inserted_id;
    let found = coll
        .find_one(doc! {"skuCode": "iphone_13"})
        .await
        .expect("find_one")
        .expect("the inserted document is found");
    assert_eq!(found.get("_id"), Some(&id));
    assert_eq!(found.get_str("name").unwrap(), "iPhone 13");
    assert_eq!(coll.count_documents(doc! {}).await.unwrap(), 1);
}

#[tokio::test]
async fn kafka_produce_and_consume_in_a_consumer_group_with_rdkafka() {
    use rdkafka::ClientConfig;
    use rdkafka::Message;
    use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
    use rdkafka::producer::{FutureProducer, FutureRecord};

    let bootstrap = kit::kafka_bootstrap();
    let topic = kit::fresh_name("stack-");
    let group = kit::fresh_name("stack-group-");
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", "20000")
        .create()
        .unwrap();
    producer
        .send(
            FutureRecord::to(&topic)
                .key("order-1")
                .payload(r#"{"orderNumber":"order-1"}"#),
            Duration::from_secs(20),
        )
        .await
        .map_err(|(e, _)| e)
        .expect("Kafka accepted the record");

    let consumer: StreamConsumer = ClientConfig::new()
        .set("bootstrap.servers", &bootstrap)
        .set("group.id", &group)
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    consumer.subscribe(&[&topic]).unwrap();
    let msg = tokio::time::timeout(Duration::from_secs(30), consumer.recv())
        .await
        .expect("a record within 30 s")
        .expect("no consumer error");
    assert_eq!(msg.key(), Some(&b"order-1"[..]));
    assert_eq!(
        msg.payload_view::<str>().unwrap().unwrap(),
        r#"{"orderNumber":"order-1"}"#
    );
    consumer.commit_message(&msg, CommitMode::Sync).unwrap();
    let committed = consumer.committed(Duration::from_secs(10)).unwrap();
    let offset = committed.elements_for_topic(&topic)[0].offset();
    assert_eq!(
        offset,
        rdkafka::Offset::Offset(1),
        "the group's committed offset moved past the record"
    );
}

// opentelemetry-zipkin is deprecated upstream in favour of OTLP, but it is the exporter this
// project's stack prescribes (Zipkin's OTLP ingest is not in the exec jar we run).
#[allow(deprecated)]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn zipkin_receives_a_span_from_opentelemetry_zipkin() {
    use opentelemetry::trace::{Span, Tracer, TracerProvider};
    let base = kit::zipkin_url();
    let service = kit::fresh_name("stack-test-");
    let endpoint = format!("{base}/api/v2/spans");
    let svc = service.clone();
    // The simple processor exports synchronously when the span ends, so the spans are made on a
    // blocking thread of the runtime, whose workers drive the exporter's async HTTP client.
    let trace_id = tokio::task::spawn_blocking(move || {
        let exporter = opentelemetry_zipkin::ZipkinExporter::builder()
            .with_collector_endpoint(endpoint)
            .build()
            .unwrap();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_simple_exporter(exporter)
            .with_resource(
                opentelemetry_sdk::Resource::builder()
                    .with_service_name(svc)
                    .build(),
            )
            .build();
        let tracer = provider.tracer("stack-test");
        let mut span = tracer.start("place-order");
        let id = span.span_context().trace_id().to_string();
        span.end();
        provider.shutdown().unwrap();
        id
    })
    .await
    .unwrap();

    let http = reqwest::Client::new();
    let url = format!("{base}/api/v2/trace/{trace_id}");
    let found = kit::wait_until(Duration::from_secs(15), || {
        let (http, url) = (http.clone(), url.clone());
        async move {
            match http.get(&url).send().await {
                Ok(r) if r.status().is_success() => {
                    let spans: serde_json::Value = r.json().await.unwrap_or_default();
                    spans
                        .as_array()
                        .is_some_and(|a| a.iter().any(|s| s["name"] == "place-order"))
                }
                _ => false,
            }
        }
    })
    .await;
    assert!(
        found,
        "span of trace {trace_id} (service {service}) not found in Zipkin"
    );
}

async fn kube_client() -> kube::Client {
    let path = kit::kubeconfig_path();
    let kubeconfig = kube::config::Kubeconfig::read_from(&path).unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default())
        .await
        .unwrap();
    kube::Client::try_from(config).unwrap()
}

async fn create_namespace(client: &kube::Client, name: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}
    }))
    .unwrap();
    kube::Api::<Namespace>::all(client.clone())
        .create(&Default::default(), &ns)
        .await
        .unwrap();
}

async fn delete_namespace(client: &kube::Client, name: &str) {
    use k8s_openapi::api::core::v1::Namespace;
    let _ = kube::Api::<Namespace>::all(client.clone())
        .delete(name, &Default::default())
        .await;
}

#[tokio::test]
async fn kubernetes_deployment_pod_becomes_ready_through_kwok() {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::core::v1::Pod;
    let client = kube_client().await;
    let ns = kit::fresh_name("stack-");
    create_namespace(&client, &ns).await;

    let deploy: Deployment = serde_json::from_value(serde_json::json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": {"name": "hello"},
        "spec": {
            "replicas": 2,
            "selector": {"matchLabels": {"app": "hello"}},
            "template": {
                "metadata": {"labels": {"app": "hello"}},
                // Only kwok makes a pod Ready without running it; its node is tainted so that
                // nothing else lands there, and this pod asks for it.
                "spec": {
                    "nodeSelector": {"type": "kwok"},
                    "tolerations": [{"key": "kwok.x-k8s.io/node", "operator": "Exists", "effect": "NoSchedule"}],
                    "containers": [{"name": "hello", "image": "registry.k8s.io/pause:3.10"}]
                }
            }
        }
    }))
    .unwrap();
    kube::Api::<Deployment>::namespaced(client.clone(), &ns)
        .create(&Default::default(), &deploy)
        .await
        .unwrap();

    let pods = kube::Api::<Pod>::namespaced(client.clone(), &ns);
    let deployments = kube::Api::<Deployment>::namespaced(client.clone(), &ns);
    let ready = kit::wait_until(Duration::from_secs(60), || {
        let (pods, deployments) = (pods.clone(), deployments.clone());
        async move {
            let list = pods
                .list(&kube::api::ListParams::default().labels("app=hello"))
                .await
                .unwrap();
            let ready_pods = list
                .items
                .iter()
                .filter(|p| {
                    p.spec.as_ref().and_then(|s| s.node_name.as_deref()) == Some("kwok-node-0")
                        && p.status
                            .as_ref()
                            .and_then(|s| s.conditions.as_ref())
                            .is_some_and(|c| {
                                c.iter().any(|c| c.type_ == "Ready" && c.status == "True")
                            })
                })
                .count();
            let available = deployments
                .get("hello")
                .await
                .ok()
                .and_then(|d| d.status)
                .and_then(|s| s.available_replicas)
                .unwrap_or(0);
            ready_pods == 2 && available == 2
        }
    })
    .await;
    delete_namespace(&client, &ns).await;
    assert!(
        ready,
        "the Deployment's 2 pods did not become Ready on kwok-node-0 (scheduler + kwok) within 60 s"
    );
}

#[tokio::test]
async fn helm_installs_a_chart_into_the_control_plane() {
    use k8s_openapi::api::core::v1::ConfigMap;
    let kubeconfig = kit::kubeconfig_path();
    let helm = kit::helm_path();
    let client = kube_client().await;
    let ns = kit::fresh_name("stack-helm-");

    let chart = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(chart.path().join("templates")).unwrap();
    std::fs::write(
        chart.path().join("Chart.yaml"),
        "apiVersion: v2\nname: hello\nversion: 0.1.0\nappVersion: \"1\"\n",
    )
    .unwrap();
    std::fs::write(chart.path().join("values.yaml"), "greeting: hello\n").unwrap();
    std::fs::write(
        chart.path().join("templates/cm.yaml"),
        "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {{ .Release.Name }}-cm\ndata:\n  greeting: {{ .Values.greeting | quote }}\n",
    )
    .unwrap();

    let helm_run = |args: &[&str]| {
        let out = std::process::Command::new(&helm)
            .args(args)
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "helm {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    helm_run(&[
        "install",
        "r1",
        chart.path().to_str().unwrap(),
        "--namespace",
        &ns,
        "--create-namespace",
        "--set",
        "greeting=bonjour",
        "--wait",
        "--timeout",
        "60s",
    ]);
    let cm = kube::Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .get("r1-cm")
        .await;
    helm_run(&["uninstall", "r1", "--namespace", &ns]);
    delete_namespace(&client, &ns).await;
    let cm = cm.expect("the chart's ConfigMap exists after helm install");
    assert_eq!(cm.data.unwrap()["greeting"], "bonjour");
}
