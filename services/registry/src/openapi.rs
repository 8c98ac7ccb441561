//! Schemas of the Eureka wire shapes for the registry's OpenAPI document ([`crate::api::ApiDoc`]).
//!
//! The bodies themselves are written by `shop_runtime::eureka` (hand-written `Serialize` impls that
//! reproduce the Netflix server's exact field set, shared with the registry client), so they cannot
//! derive `ToSchema` where they are defined. These types exist only to describe those shapes; they are
//! never constructed. The conformance test (`tests/openapi_conformance.rs`) validates every real
//! response against them, so they cannot drift from what the registry writes.
#![allow(dead_code)]

use std::collections::BTreeMap;
use utoipa::ToSchema;

/// Instance status as Eureka spells it.
#[derive(ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum InstanceStatus {
    /// Serving traffic.
    Up,
    /// Failing health checks.
    Down,
    /// Starting up.
    Starting,
    /// Taken out of rotation by an operator.
    OutOfService,
    /// Not known; as `overriddenStatus`: no override.
    Unknown,
}

/// A boolean written as a string, as the Netflix server does (`"true"` / `"false"`).
#[derive(ToSchema)]
pub enum BoolString {
    /// True.
    #[serde(rename = "true")]
    True,
    /// False.
    #[serde(rename = "false")]
    False,
}

/// What happened to an instance, in a delta.
#[derive(ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum ActionType {
    /// Registered (or registered again).
    Added,
    /// Status override or metadata changed.
    Modified,
    /// Cancelled or expired.
    Deleted,
}

/// A port with its enabled flag: `{"$":8080,"@enabled":"true"}`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Port {
    /// Port number.
    #[serde(rename = "$")]
    #[schema(maximum = 65535)]
    port: u16,
    /// Whether the port is enabled.
    #[serde(rename = "@enabled")]
    enabled: BoolString,
}

/// Data-center information; only the default data-center class is written.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DataCenterInfo {
    /// Always `com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo`.
    #[serde(rename = "@class")]
    class: String,
    /// `MyOwn`, `Amazon` or `Netflix`, as registered.
    name: String,
}

/// Lease timing of one instance; timestamps are milliseconds since the epoch (0 = not yet / never).
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LeaseInfo {
    /// Renewal interval the client announced (or the registry's default), in seconds.
    renewal_interval_in_secs: u64,
    /// Lease duration after the last renewal, in seconds.
    duration_in_secs: u64,
    /// When the instance first registered.
    registration_timestamp: i64,
    /// Last renewal.
    last_renewal_timestamp: i64,
    /// When the instance was cancelled or expired (0 while alive).
    eviction_timestamp: i64,
    /// When it first became UP.
    service_up_timestamp: i64,
}

/// One registered instance, with exactly the field set of the Netflix Eureka server.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Instance {
    /// Id, unique within the application.
    instance_id: String,
    /// Host name.
    host_name: String,
    /// Application name, upper case.
    app: String,
    /// IP address.
    ip_addr: String,
    /// Status the instance reports.
    status: InstanceStatus,
    /// Operator override (`UNKNOWN` = none); clients act on it when set.
    overridden_status: InstanceStatus,
    /// Plain port.
    port: Port,
    /// TLS port.
    secure_port: Port,
    /// Country id (1).
    country_id: i64,
    /// Data center.
    data_center_info: DataCenterInfo,
    /// Lease timing.
    lease_info: LeaseInfo,
    /// Free-form string metadata; `{"@class":"java.util.Collections$EmptyMap"}` when there is none.
    metadata: BTreeMap<String, String>,
    /// Home page URL.
    home_page_url: String,
    /// Status page URL.
    status_page_url: String,
    /// Health check URL.
    health_check_url: String,
    /// VIP addresses (comma separated).
    vip_address: String,
    /// Secure VIP addresses (comma separated).
    secure_vip_address: String,
    /// Always `"false"`.
    is_coordinating_discovery_server: BoolString,
    /// Last change in the registry, milliseconds since the epoch, as a string.
    #[schema(pattern = "^-?[0-9]+$")]
    last_updated_timestamp: String,
    /// Last change the client made, milliseconds since the epoch, as a string.
    #[schema(pattern = "^-?[0-9]+$")]
    last_dirty_timestamp: String,
    /// Only in deltas: what happened to the instance (absent elsewhere, never null).
    #[schema(nullable = false)]
    action_type: Option<ActionType>,
}

/// All instances of one application.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Application {
    /// Application name, upper case.
    name: String,
    /// Its instances (always an array).
    instance: Vec<Instance>,
}

/// The inner object of [`Applications`].
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationsInner {
    /// Registry version of a delta; empty or a number.
    #[serde(rename = "versions__delta")]
    versions_delta: String,
    /// Eureka's reconcile hash of the WHOLE registry: `STATUS_count_` per status present, sorted by
    /// status (`UP_2_`, `DOWN_1_UP_3_`); empty when the registry is empty.
    #[serde(rename = "apps__hashcode")]
    #[schema(pattern = "^([A-Z_]+_[0-9]+_)*$")]
    apps_hashcode: String,
    /// Applications (always an array).
    application: Vec<Application>,
}

/// A registry snapshot, delta or VIP selection: `{"applications":{...}}`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Applications {
    /// The applications.
    applications: ApplicationsInner,
}

/// One application: `{"application":{...}}`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApplicationBody {
    /// The application.
    application: Application,
}

/// One instance: `{"instance":{...}}`.
#[derive(ToSchema)]
#[serde(deny_unknown_fields)]
pub struct InstanceBody {
    /// The instance.
    instance: Instance,
}

/// Data-center information of a registration; only `name` is read.
#[derive(ToSchema)]
pub struct DataCenterIn {
    /// Data-center class (ignored).
    #[serde(rename = "@class")]
    class: Option<String>,
    /// `MyOwn`, `Amazon` or `Netflix`; must not be blank.
    #[schema(min_length = 1)]
    name: String,
}

/// An instance as a client registers it (the Java client's shape). Reading is lenient: numbers may be
/// strings and strings numbers, a port may be a bare number, unknown members are ignored, a missing
/// `status` means `UP`. Registry-owned fields (lease timestamps, `actionType`) are replaced.
#[derive(ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InstanceRegistration {
    /// Id, unique within the application; must not be blank.
    #[schema(min_length = 1)]
    instance_id: String,
    /// Host name; must not be blank.
    #[schema(min_length = 1)]
    host_name: String,
    /// Application name (case-insensitive); must match the path's app.
    #[schema(min_length = 1)]
    app: String,
    /// IP address; must not be blank.
    #[schema(min_length = 1)]
    ip_addr: String,
    /// Data center.
    data_center_info: DataCenterIn,
    /// Reported status (default `UP`).
    status: Option<InstanceStatus>,
    /// Status override (also read as `overriddenstatus`, the Java client's spelling).
    overridden_status: Option<InstanceStatus>,
    /// `{"$":port,"@enabled":"true"}` or a bare number (default 7001, enabled).
    #[schema(value_type = Option<Object>)]
    port: Option<serde_json::Value>,
    /// Like `port` (default 7002, disabled).
    #[schema(value_type = Option<Object>)]
    secure_port: Option<serde_json::Value>,
    /// Lease timing; `durationInSecs` 0 or missing means the registry's default lease.
    #[schema(value_type = Option<Object>)]
    lease_info: Option<serde_json::Value>,
    /// String metadata (`@class` is dropped).
    metadata: Option<BTreeMap<String, String>>,
    /// Home page URL.
    home_page_url: Option<String>,
    /// Status page URL.
    status_page_url: Option<String>,
    /// Health check URL.
    health_check_url: Option<String>,
    /// VIP addresses (comma separated), matched by `GET /eureka/vips/{vip}`.
    vip_address: Option<String>,
    /// Secure VIP addresses (comma separated), matched by `GET /eureka/svips/{svip}`.
    secure_vip_address: Option<String>,
    /// Milliseconds since the epoch of the client's last change (number or string).
    #[schema(value_type = Option<String>)]
    last_dirty_timestamp: Option<serde_json::Value>,
}

/// The register body: `{"instance":{...}}`.
#[derive(ToSchema)]
pub struct RegisterBody {
    /// The instance.
    instance: InstanceRegistration,
}
