//! The backing stores a Shop can bring along (`spec.backing.<store>.mode: managed`): MariaDB for
//! inventory and order, FerretDB (MongoDB wire protocol, SQLite on a volume) for product and
//! notification, one KRaft Kafka broker and an in-memory Zipkin. Pure like the build step it
//! serves: credentials come in as an argument (the apply step reads them from the Shop's
//! `<shop>-stores` Secret, or generates them once when it does not exist yet), so rendering never
//! rotates a password and the objects stay snapshot-testable.
//!
//! Data is never deleted silently: a store's PVC comes from the StatefulSet's claim template and
//! carries no owner reference to the Shop, and `keepData` (default true) keeps it when the
//! StatefulSet goes (store no longer managed, Shop deleted). The operator itself never deletes a
//! PVC or the credentials Secret; it needs no permission to.

use std::collections::BTreeMap;
use std::fmt;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{
    StatefulSet, StatefulSetPersistentVolumeClaimRetentionPolicy, StatefulSetSpec,
};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvVar,
    PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext, PodSpec, PodTemplateSpec,
    Probe, ResourceRequirements, SeccompProfile, Secret, SecurityContext, Service, ServicePort,
    ServiceSpec, TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;

use crate::build::{labels, named_labels, named_selector};
use crate::crd::SecretKeyRef;
use crate::validate::ValidatedShop;

/// One of the four backing stores.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Store {
    /// MySQL protocol (managed: MariaDB) for inventory and order.
    Mysql,
    /// MongoDB protocol (managed: FerretDB on SQLite) for product and notification.
    Mongodb,
    /// Kafka (managed: one KRaft broker) for order and notification.
    Kafka,
    /// Zipkin span collector for every component.
    Zipkin,
}

/// The images a managed store runs unless the Shop names another: the public images a user with
/// internet access pulls. One table, so docs, CRD descriptions and tests agree.
pub const DEFAULT_IMAGES: [(Store, &str); 4] = [
    (Store::Mysql, "docker.io/library/mariadb:11.4"),
    (Store::Mongodb, "ghcr.io/ferretdb/ferretdb:1.24.2"),
    (Store::Kafka, "docker.io/apache/kafka:4.1.1"),
    (Store::Zipkin, "docker.io/openzipkin/zipkin:3.6.1"),
];

/// Default size of a managed store's PersistentVolumeClaim.
pub const DEFAULT_STORAGE: &str = "1Gi";
/// MariaDB account the components use (the root password is only for the operator's users).
pub const MYSQL_USER: &str = "shop";
/// Longest StatefulSet name that still gives valid pod labels: the StatefulSet controller labels
/// each pod `controller-revision-hash=<name>-<10-character hash>`, a 63-character label value.
pub const MAX_STATEFULSET_NAME: usize = 52;

/// Keys of the `<shop>-stores` Secret.
pub mod keys {
    /// MariaDB root password.
    pub const MYSQL_ROOT_PASSWORD: &str = "mysql-root-password";
    /// Password of the `shop` user.
    pub const MYSQL_PASSWORD: &str = "mysql-password";
    /// `mysql://shop:<password>@<shop>-mysql:3306` (no database: each component adds its own).
    pub const MYSQL_URL: &str = "mysql-url";
    /// `mongodb://<shop>-mongodb:27017/`.
    pub const MONGODB_URL: &str = "mongodb-url";
    /// Kafka KRaft cluster id (formats the broker's log directory once, so it must never change).
    pub const KAFKA_CLUSTER_ID: &str = "kafka-cluster-id";
}

impl Store {
    /// Every store, in the order of their status conditions.
    pub const ALL: [Store; 4] = [Store::Mysql, Store::Mongodb, Store::Kafka, Store::Zipkin];

    /// Name in `spec.backing`, object names and the component label.
    pub fn name(self) -> &'static str {
        match self {
            Self::Mysql => "mysql",
            Self::Mongodb => "mongodb",
            Self::Kafka => "kafka",
            Self::Zipkin => "zipkin",
        }
    }

    /// Parses a store name.
    pub fn from_name(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|s| s.name() == name)
    }

    /// Status condition type, e.g. `MysqlReady`.
    pub fn condition_type(self) -> &'static str {
        match self {
            Self::Mysql => "MysqlReady",
            Self::Mongodb => "MongodbReady",
            Self::Kafka => "KafkaReady",
            Self::Zipkin => "ZipkinReady",
        }
    }

    /// The image used when the Shop names none.
    pub fn default_image(self) -> &'static str {
        DEFAULT_IMAGES
            .iter()
            .find(|(s, _)| *s == self)
            .map(|(_, i)| *i)
            .unwrap_or_default()
    }

    /// The store's port (container and Service).
    pub fn port(self) -> i32 {
        match self {
            Self::Mysql => 3306,
            Self::Mongodb => 27017,
            Self::Kafka => 9092,
            Self::Zipkin => 9411,
        }
    }

    /// Where the PVC is mounted; `None`: no volume (Zipkin keeps traces in memory).
    pub fn data_path(self) -> Option<&'static str> {
        match self {
            Self::Mysql => Some("/var/lib/mysql"),
            Self::Mongodb => Some("/state"),
            Self::Kafka => Some("/var/lib/kafka/data"),
            Self::Zipkin => None,
        }
    }

    /// The non-root user the image is built for (MariaDB's `mysql` is 999; FerretDB, Kafka's
    /// `appuser` and Zipkin's `zipkin` are 1000). Also the `fsGroup`, so the volume is writable.
    pub fn run_as(self) -> i64 {
        match self {
            Self::Mysql => 999,
            _ => 1000,
        }
    }

    /// Requests and limits when the Shop sets none: enough for a dev Shop.
    pub fn default_resources(self) -> ResourceRequirements {
        let (req_cpu, req_mem, lim_cpu, lim_mem) = match self {
            Self::Mysql => ("100m", "256Mi", "1", "1Gi"),
            Self::Mongodb => ("50m", "64Mi", "1", "512Mi"),
            Self::Kafka => ("100m", "768Mi", "2", "1Gi"),
            Self::Zipkin => ("50m", "320Mi", "1", "512Mi"),
        };
        let q = |cpu: &str, mem: &str| {
            [
                ("cpu".to_string(), Quantity(cpu.to_string())),
                ("memory".to_string(), Quantity(mem.to_string())),
            ]
            .into()
        };
        ResourceRequirements {
            requests: Some(q(req_cpu, req_mem)),
            limits: Some(q(lim_cpu, lim_mem)),
            ..Default::default()
        }
    }

    /// Longest Shop name for which this store's StatefulSet name fits [`MAX_STATEFULSET_NAME`].
    pub fn max_shop_name(self) -> usize {
        MAX_STATEFULSET_NAME - 1 - self.name().len()
    }
}

impl fmt::Display for Store {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A managed store with every default resolved (by the validate step).
#[derive(Clone, Debug, PartialEq)]
pub struct ManagedStore {
    /// Which store.
    pub store: Store,
    /// Image reference.
    pub image: String,
    /// PVC size (ignored for Zipkin).
    pub size: Quantity,
    /// PVC StorageClass; `None`: the cluster default.
    pub storage_class: Option<String>,
    /// Keep the PVC when the StatefulSet goes.
    pub keep_data: bool,
    /// Container resources.
    pub resources: ResourceRequirements,
}

/// Name of a store's StatefulSet, Service and (MariaDB) init ConfigMap: `<shop>-<store>`.
pub fn store_name(shop: &str, store: Store) -> String {
    format!("{shop}-{}", store.name())
}

/// Name of the Secret holding the generated credentials of the managed stores.
pub fn secret_name(shop: &str) -> String {
    format!("{shop}-stores")
}

/// Where the components find a managed store.
pub fn kafka_bootstrap(shop: &str) -> String {
    format!("{}:{}", store_name(shop, Store::Kafka), Store::Kafka.port())
}

/// Zipkin's span endpoint of a managed Zipkin.
pub fn zipkin_endpoint(shop: &str) -> String {
    format!(
        "http://{}:{}/api/v2/spans",
        store_name(shop, Store::Zipkin),
        Store::Zipkin.port()
    )
}

/// A key of the Shop's `<shop>-stores` Secret.
pub fn secret_ref(shop: &str, key: &str) -> SecretKeyRef {
    SecretKeyRef {
        name: secret_name(shop),
        key: key.to_string(),
    }
}

/// Generated credentials of the managed stores. Generated once and then read back from the
/// Secret; `Debug` never shows a value (it may end up in a log line).
#[derive(Clone, Default, PartialEq, Eq)]
pub struct StoreCredentials {
    /// MariaDB root password.
    pub mysql_root_password: String,
    /// Password of the `shop` user.
    pub mysql_password: String,
    /// Kafka KRaft cluster id (22 characters, base64url of 16 bytes).
    pub kafka_cluster_id: String,
}

impl fmt::Debug for StoreCredentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let set = |s: &str| {
            if s.is_empty() {
                "<empty>"
            } else {
                "<redacted>"
            }
        };
        f.debug_struct("StoreCredentials")
            .field("mysql_root_password", &set(&self.mysql_root_password))
            .field("mysql_password", &set(&self.mysql_password))
            .field("kafka_cluster_id", &set(&self.kafka_cluster_id))
            .finish()
    }
}

const BASE64URL: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

fn random_password() -> String {
    use rand::Rng;
    // ThreadRng is a CSPRNG (ChaCha, seeded from the OS); 32 alphanumerics ≈ 190 bits and no
    // character that would need escaping in a URL.
    rand::rng()
        .sample_iter(rand::distr::Alphanumeric)
        .take(32)
        .map(char::from)
        .collect()
}

/// A Kafka cluster id: 16 random bytes, base64url without padding (what `kafka-storage.sh
/// random-uuid` prints).
fn random_cluster_id() -> String {
    let bytes: [u8; 16] = rand::random();
    let mut bits: u32 = 0;
    let mut n = 0;
    let mut out = String::with_capacity(22);
    for b in bytes {
        bits = (bits << 8) | u32::from(b);
        n += 8;
        while n >= 6 {
            n -= 6;
            out.push(char::from(BASE64URL[((bits >> n) & 63) as usize]));
        }
    }
    if n > 0 {
        out.push(char::from(BASE64URL[((bits << (6 - n)) & 63) as usize]));
    }
    out
}

impl StoreCredentials {
    /// Reads what an existing `<shop>-stores` Secret holds (missing keys stay empty).
    pub fn from_secret_data(data: &BTreeMap<String, ByteString>) -> Self {
        let get = |k: &str| {
            data.get(k)
                .and_then(|v| String::from_utf8(v.0.clone()).ok())
                .unwrap_or_default()
        };
        Self {
            mysql_root_password: get(keys::MYSQL_ROOT_PASSWORD),
            mysql_password: get(keys::MYSQL_PASSWORD),
            kafka_cluster_id: get(keys::KAFKA_CLUSTER_ID),
        }
    }

    /// Generates every value that is still empty; values that exist are kept as they are.
    pub fn fill_missing(mut self) -> Self {
        if self.mysql_root_password.is_empty() {
            self.mysql_root_password = random_password();
        }
        if self.mysql_password.is_empty() {
            self.mysql_password = random_password();
        }
        if self.kafka_cluster_id.is_empty() {
            self.kafka_cluster_id = random_cluster_id();
        }
        self
    }

    /// Whether every value is set.
    pub fn is_complete(&self) -> bool {
        !self.mysql_root_password.is_empty()
            && !self.mysql_password.is_empty()
            && !self.kafka_cluster_id.is_empty()
    }
}

/// The `<shop>-stores` Secret. A newtype so that `Debug` of the rendered objects (and of
/// anything holding them) never prints a credential.
#[derive(Clone, PartialEq)]
pub struct StoreSecret(pub Secret);

impl fmt::Debug for StoreSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let keys: Vec<&String> = self.0.data.iter().flat_map(|d| d.keys()).collect();
        f.debug_struct("StoreSecret")
            .field("name", &self.0.metadata.name)
            .field("keys", &keys)
            .finish()
    }
}

/// Everything one managed store consists of, in apply order.
#[derive(Clone, Debug, PartialEq)]
pub struct StoreResources {
    /// Which store.
    pub store: Store,
    /// MariaDB only: the init script creating the components' databases.
    pub config_map: Option<ConfigMap>,
    /// Where the components connect: `<shop>-<store>`.
    pub service: Service,
    /// The store itself, one replica.
    pub statefulset: StatefulSet,
}

/// Whether managed stores need the credentials Secret (Zipkin alone does not).
pub fn needs_secret(managed: &[ManagedStore]) -> bool {
    managed.iter().any(|m| m.store != Store::Zipkin)
}

fn meta(shop: &ValidatedShop, store: Store, name: String) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: Some(shop.namespace.clone()),
        labels: Some(named_labels(shop, store.name())),
        owner_references: Some(vec![shop.owner.clone()]),
        ..Default::default()
    }
}

/// Renders the credentials Secret. Every credential is always written (also those of stores that
/// are not managed right now): a store switched to external and back finds the password its
/// kept volume was initialised with. The Secret is owned by the Shop only when no managed store
/// keeps its data; otherwise it outlives the Shop together with the volumes it unlocks.
pub fn secret(
    shop: &ValidatedShop,
    managed: &[ManagedStore],
    creds: &StoreCredentials,
) -> StoreSecret {
    let mut data: BTreeMap<String, ByteString> = BTreeMap::new();
    let mut put = |k: &str, v: String| {
        data.insert(k.to_string(), ByteString(v.into_bytes()));
    };
    put(keys::MYSQL_ROOT_PASSWORD, creds.mysql_root_password.clone());
    put(keys::MYSQL_PASSWORD, creds.mysql_password.clone());
    put(keys::KAFKA_CLUSTER_ID, creds.kafka_cluster_id.clone());
    put(
        keys::MYSQL_URL,
        format!(
            "mysql://{MYSQL_USER}:{}@{}:{}",
            creds.mysql_password,
            store_name(&shop.name, Store::Mysql),
            Store::Mysql.port()
        ),
    );
    put(
        keys::MONGODB_URL,
        format!(
            "mongodb://{}:{}/",
            store_name(&shop.name, Store::Mongodb),
            Store::Mongodb.port()
        ),
    );
    let keeps_data = managed
        .iter()
        .any(|m| m.keep_data && m.store != Store::Zipkin);
    let metadata = ObjectMeta {
        name: Some(secret_name(&shop.name)),
        namespace: Some(shop.namespace.clone()),
        labels: Some(named_labels(shop, "stores")),
        owner_references: (!keeps_data).then(|| vec![shop.owner.clone()]),
        ..Default::default()
    };
    StoreSecret(Secret {
        metadata,
        type_: Some("Opaque".to_string()),
        data: Some(data),
        ..Default::default()
    })
}

fn env(name: &str, value: impl Into<String>) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: Some(value.into()),
        value_from: None,
    }
}

fn secret_env(shop: &str, name: &str, key: &str) -> EnvVar {
    EnvVar {
        name: name.to_string(),
        value: None,
        value_from: Some(k8s_openapi::api::core::v1::EnvVarSource {
            secret_key_ref: Some(k8s_openapi::api::core::v1::SecretKeySelector {
                name: secret_name(shop),
                key: key.to_string(),
                optional: Some(false),
            }),
            ..Default::default()
        }),
    }
}

/// The MariaDB init script: one database per MySQL-backed component, the `shop` user (created by
/// the image from `MARIADB_USER`/`MARIADB_PASSWORD`) allowed on both. Runs once, on an empty
/// volume; no secret in it.
pub const MYSQL_INIT_SQL: &str = "CREATE DATABASE IF NOT EXISTS `inventory_service`;\n\
CREATE DATABASE IF NOT EXISTS `order_service`;\n\
GRANT ALL PRIVILEGES ON `inventory_service`.* TO 'shop'@'%';\n\
GRANT ALL PRIVILEGES ON `order_service`.* TO 'shop'@'%';\n";

fn store_env(shop: &ValidatedShop, store: Store) -> Vec<EnvVar> {
    let name = &shop.name;
    match store {
        Store::Mysql => vec![
            secret_env(name, "MARIADB_ROOT_PASSWORD", keys::MYSQL_ROOT_PASSWORD),
            env("MARIADB_USER", MYSQL_USER),
            secret_env(name, "MARIADB_PASSWORD", keys::MYSQL_PASSWORD),
            // System tables follow an image upgrade (11.4.x → 11.4.y) without a manual step.
            env("MARIADB_AUTO_UPGRADE", "1"),
        ],
        Store::Mongodb => vec![
            env("FERRETDB_HANDLER", "sqlite"),
            env("FERRETDB_SQLITE_URL", "file:/state/"),
            env(
                "FERRETDB_LISTEN_ADDR",
                format!(":{}", Store::Mongodb.port()),
            ),
            env("FERRETDB_TELEMETRY", "disable"),
        ],
        Store::Kafka => vec![
            secret_env(name, "CLUSTER_ID", keys::KAFKA_CLUSTER_ID),
            env("KAFKA_NODE_ID", "1"),
            env("KAFKA_PROCESS_ROLES", "broker,controller"),
            env(
                "KAFKA_LISTENERS",
                format!("PLAINTEXT://:{},CONTROLLER://:9093", Store::Kafka.port()),
            ),
            env(
                "KAFKA_ADVERTISED_LISTENERS",
                format!("PLAINTEXT://{}", kafka_bootstrap(name)),
            ),
            env("KAFKA_CONTROLLER_LISTENER_NAMES", "CONTROLLER"),
            env(
                "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP",
                "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            ),
            env("KAFKA_CONTROLLER_QUORUM_VOTERS", "1@localhost:9093"),
            // A subdirectory: the volume's root may hold lost+found, which Kafka would take
            // for a partition.
            env("KAFKA_LOG_DIRS", "/var/lib/kafka/data/logs"),
            env("KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR", "1"),
            env("KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR", "1"),
            env("KAFKA_TRANSACTION_STATE_LOG_MIN_ISR", "1"),
            // Kafka 4.1's share groups default to three replicas, which one broker never has.
            env(
                "KAFKA_SHARE_COORDINATOR_STATE_TOPIC_REPLICATION_FACTOR",
                "1",
            ),
            env("KAFKA_SHARE_COORDINATOR_STATE_TOPIC_MIN_ISR", "1"),
            env("KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS", "0"),
            env("KAFKA_HEAP_OPTS", "-Xms256m -Xmx512m"),
        ],
        Store::Zipkin => vec![
            env("STORAGE_TYPE", "mem"),
            env("JAVA_OPTS", "-Xms128m -Xmx256m"),
        ],
    }
}

fn tcp_probe(port: i32, period: i32, failure: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction {
            port: IntOrString::Int(port),
            host: None,
        }),
        period_seconds: Some(period),
        timeout_seconds: Some(2),
        failure_threshold: Some(failure),
        success_threshold: Some(1),
        ..Default::default()
    }
}

fn statefulset(shop: &ValidatedShop, m: &ManagedStore) -> StatefulSet {
    let store = m.store;
    let name = store_name(&shop.name, store);
    let uid = store.run_as();
    let mut mounts = Vec::new();
    let mut volumes = Vec::new();
    if let Some(path) = store.data_path() {
        mounts.push(VolumeMount {
            name: "data".to_string(),
            mount_path: path.to_string(),
            ..Default::default()
        });
    }
    if store == Store::Mysql {
        mounts.push(VolumeMount {
            name: "init".to_string(),
            mount_path: "/docker-entrypoint-initdb.d".to_string(),
            read_only: Some(true),
            ..Default::default()
        });
        volumes.push(Volume {
            name: "init".to_string(),
            config_map: Some(ConfigMapVolumeSource {
                name: name.clone(),
                ..Default::default()
            }),
            ..Default::default()
        });
    }
    let seccomp = || SeccompProfile {
        type_: "RuntimeDefault".to_string(),
        localhost_profile: None,
    };
    let container = Container {
        name: store.name().to_string(),
        image: Some(m.image.clone()),
        image_pull_policy: Some("IfNotPresent".to_string()),
        ports: Some(vec![ContainerPort {
            name: Some(store.name().to_string()),
            container_port: store.port(),
            protocol: Some("TCP".to_string()),
            ..Default::default()
        }]),
        env: Some(store_env(shop, store)),
        resources: Some(m.resources.clone()),
        // tcpSocket probes need nothing inside the image. Startup allows a first start (MariaDB
        // initialising its volume, Kafka formatting its log) up to 5 minutes.
        startup_probe: Some(tcp_probe(store.port(), 5, 60)),
        liveness_probe: Some(tcp_probe(store.port(), 10, 6)),
        readiness_probe: Some(tcp_probe(store.port(), 5, 3)),
        // The restricted Pod Security Standard. The root filesystem stays writable: the images
        // write their runtime configuration and sockets there.
        security_context: Some(SecurityContext {
            allow_privilege_escalation: Some(false),
            run_as_non_root: Some(true),
            run_as_user: Some(uid),
            run_as_group: Some(uid),
            privileged: Some(false),
            capabilities: Some(Capabilities {
                drop: Some(vec!["ALL".to_string()]),
                add: None,
            }),
            seccomp_profile: Some(seccomp()),
            ..Default::default()
        }),
        volume_mounts: (!mounts.is_empty()).then_some(mounts),
        termination_message_policy: Some("FallbackToLogsOnError".to_string()),
        ..Default::default()
    };
    let claim = store.data_path().map(|_| {
        vec![PersistentVolumeClaim {
            metadata: ObjectMeta {
                name: Some("data".to_string()),
                labels: Some(named_selector(&shop.name, store.name())),
                ..Default::default()
            },
            spec: Some(PersistentVolumeClaimSpec {
                access_modes: Some(vec!["ReadWriteOnce".to_string()]),
                storage_class_name: m.storage_class.clone(),
                resources: Some(VolumeResourceRequirements {
                    requests: Some([("storage".to_string(), m.size.clone())].into()),
                    limits: None,
                }),
                ..Default::default()
            }),
            status: None,
        }]
    });
    // Retain: the PVC outlives the StatefulSet (and the Shop). Delete: the StatefulSet owns its
    // PVC and the garbage collector removes it with the StatefulSet.
    let policy = if m.keep_data { "Retain" } else { "Delete" };
    let mut pod_labels = named_labels(shop, store.name());
    pod_labels.remove(labels::MANAGED_BY);
    StatefulSet {
        metadata: meta(shop, store, name.clone()),
        spec: Some(StatefulSetSpec {
            replicas: Some(1),
            service_name: Some(name),
            selector: LabelSelector {
                match_labels: Some(named_selector(&shop.name, store.name())),
                match_expressions: None,
            },
            persistent_volume_claim_retention_policy: claim.as_ref().map(|_| {
                StatefulSetPersistentVolumeClaimRetentionPolicy {
                    when_deleted: Some(policy.to_string()),
                    when_scaled: Some(policy.to_string()),
                }
            }),
            volume_claim_templates: claim,
            revision_history_limit: Some(3),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(pod_labels),
                    ..Default::default()
                }),
                spec: Some(PodSpec {
                    automount_service_account_token: Some(false),
                    // Service links would put `<SHOP>_KAFKA_PORT=tcp://...` into Kafka's
                    // environment, which its image reads as configuration.
                    enable_service_links: Some(false),
                    termination_grace_period_seconds: Some(60),
                    security_context: Some(PodSecurityContext {
                        run_as_non_root: Some(true),
                        run_as_user: Some(uid),
                        run_as_group: Some(uid),
                        fs_group: Some(uid),
                        seccomp_profile: Some(seccomp()),
                        ..Default::default()
                    }),
                    node_selector: (!shop.node_selector.is_empty())
                        .then(|| shop.node_selector.clone()),
                    tolerations: (!shop.tolerations.is_empty()).then(|| shop.tolerations.clone()),
                    containers: vec![container],
                    volumes: (!volumes.is_empty()).then_some(volumes),
                    ..Default::default()
                }),
            },
            ..Default::default()
        }),
        status: None,
    }
}

/// Renders one managed store: init ConfigMap (MariaDB), Service, StatefulSet.
pub fn render(shop: &ValidatedShop, m: &ManagedStore) -> StoreResources {
    let store = m.store;
    let name = store_name(&shop.name, store);
    let config_map = (store == Store::Mysql).then(|| ConfigMap {
        metadata: meta(shop, store, name.clone()),
        data: Some([("shop.sql".to_string(), MYSQL_INIT_SQL.to_string())].into()),
        ..Default::default()
    });
    let service = Service {
        metadata: meta(shop, store, name.clone()),
        spec: Some(ServiceSpec {
            type_: Some("ClusterIP".to_string()),
            selector: Some(named_selector(&shop.name, store.name())),
            ports: Some(vec![ServicePort {
                name: Some(store.name().to_string()),
                port: store.port(),
                target_port: Some(IntOrString::String(store.name().to_string())),
                protocol: Some("TCP".to_string()),
                ..Default::default()
            }]),
            ..Default::default()
        }),
        status: None,
    };
    StoreResources {
        store,
        config_map,
        service,
        statefulset: statefulset(shop, m),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_credentials_are_distinct_strong_and_kept_once_set() {
        let a = StoreCredentials::default().fill_missing();
        let b = StoreCredentials::default().fill_missing();
        assert!(a.is_complete());
        assert_ne!(a.mysql_password, b.mysql_password);
        assert_ne!(a.mysql_root_password, a.mysql_password);
        assert_eq!(a.mysql_password.len(), 32);
        assert!(a.mysql_password.chars().all(|c| c.is_ascii_alphanumeric()));
        assert_eq!(a.kafka_cluster_id.len(), 22);
        assert!(a.kafka_cluster_id.bytes().all(|c| BASE64URL.contains(&c)));
        // A reconcile with an existing Secret keeps every value; only a missing one is made.
        let partial = StoreCredentials {
            mysql_root_password: "root".into(),
            mysql_password: String::new(),
            kafka_cluster_id: "id".into(),
        };
        let filled = partial.fill_missing();
        assert_eq!(filled.mysql_root_password, "root");
        assert_eq!(filled.kafka_cluster_id, "id");
        assert_eq!(filled.mysql_password.len(), 32);
    }

    #[test]
    fn credentials_round_trip_through_secret_data_and_debug_shows_no_value() {
        let c = StoreCredentials {
            mysql_root_password: "r00tpw".into(),
            mysql_password: "apppw".into(),
            kafka_cluster_id: "MkU3OEVBNTcwNTJENDM2Qk".into(),
        };
        let data: BTreeMap<String, ByteString> = [
            (keys::MYSQL_ROOT_PASSWORD, "r00tpw"),
            (keys::MYSQL_PASSWORD, "apppw"),
            (keys::KAFKA_CLUSTER_ID, "MkU3OEVBNTcwNTJENDM2Qk"),
            (keys::MYSQL_URL, "mysql://shop:apppw@x:3306"),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
        .collect();
        assert_eq!(StoreCredentials::from_secret_data(&data), c);
        let shown = format!("{c:?}");
        assert!(
            !shown.contains("r00tpw") && !shown.contains("apppw"),
            "{shown}"
        );
        let secret = StoreSecret(Secret {
            data: Some(data),
            ..Default::default()
        });
        let shown = format!("{secret:?}");
        assert!(
            !shown.contains("apppw") && shown.contains("mysql-password"),
            "{shown}"
        );
    }

    #[test]
    fn default_images_are_the_public_ones_and_names_fit_statefulset_limits() {
        assert_eq!(
            Store::Mysql.default_image(),
            "docker.io/library/mariadb:11.4"
        );
        assert_eq!(
            Store::Mongodb.default_image(),
            "ghcr.io/ferretdb/ferretdb:1.24.2"
        );
        assert_eq!(Store::Kafka.default_image(), "docker.io/apache/kafka:4.1.1");
        assert_eq!(
            Store::Zipkin.default_image(),
            "docker.io/openzipkin/zipkin:3.6.1"
        );
        for s in Store::ALL {
            assert_eq!(Store::from_name(s.name()), Some(s));
            let longest = store_name(&"a".repeat(s.max_shop_name()), s);
            assert_eq!(longest.len(), MAX_STATEFULSET_NAME);
        }
    }
}
