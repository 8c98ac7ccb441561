//! Eureka wire types (instance, application, applications) shared by shop-registry and the registry client,
//! so the JSON shape the Java client parses is defined once: exact field set on output, lenient on input.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};
use serde_json::{Map, Value};
use std::collections::BTreeMap;

/// Data-center marker class the Java client sends and expects.
pub const DEFAULT_DATA_CENTER_CLASS: &str =
    "com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo";

/// Header Eureka peers put on replicated calls so they are not replicated again.
pub const REPLICATION_HEADER: &str = "x-netflix-discovery-replication";

/// Instance status as Eureka spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub enum InstanceStatus {
    /// Serving traffic.
    Up,
    /// Failing health checks.
    Down,
    /// Starting up.
    Starting,
    /// Taken out of rotation by an operator.
    OutOfService,
    /// Not known (also "no override").
    #[default]
    Unknown,
}

impl InstanceStatus {
    /// Eureka's spelling.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Up => "UP",
            Self::Down => "DOWN",
            Self::Starting => "STARTING",
            Self::OutOfService => "OUT_OF_SERVICE",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// Parses Eureka's spelling (case-insensitive); `None` for anything else.
    pub fn parse(s: &str) -> Option<Self> {
        match s.trim().to_ascii_uppercase().as_str() {
            "UP" => Some(Self::Up),
            "DOWN" => Some(Self::Down),
            "STARTING" => Some(Self::Starting),
            "OUT_OF_SERVICE" => Some(Self::OutOfService),
            "UNKNOWN" => Some(Self::Unknown),
            _ => None,
        }
    }
}

impl Serialize for InstanceStatus {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// A port with its enabled flag, written as `{"$":8080,"@enabled":"true"}`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Port {
    /// Port number.
    pub port: u16,
    /// Whether the port is enabled.
    pub enabled: bool,
}

impl Serialize for Port {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("$", &self.port)?;
        m.serialize_entry("@enabled", if self.enabled { "true" } else { "false" })?;
        m.end()
    }
}

/// Lease timing of one instance (milliseconds since the epoch for timestamps).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct LeaseInfo {
    /// Client renewal interval.
    pub renewal_interval_in_secs: u64,
    /// Lease duration after the last renewal.
    pub duration_in_secs: u64,
    /// When the instance registered.
    pub registration_timestamp: i64,
    /// Last renewal.
    pub last_renewal_timestamp: i64,
    /// When evicted/cancelled (0 while alive).
    pub eviction_timestamp: i64,
    /// When it first became UP.
    pub service_up_timestamp: i64,
}

/// One registered instance.
#[derive(Debug, Clone, PartialEq)]
pub struct InstanceInfo {
    /// Unique id within the app.
    pub instance_id: String,
    /// Host name.
    pub host_name: String,
    /// Upper-case app name.
    pub app: String,
    /// IP address.
    pub ip_addr: String,
    /// Status the instance reports.
    pub status: InstanceStatus,
    /// Operator override (`Unknown` = none).
    pub overridden_status: InstanceStatus,
    /// Plain port.
    pub port: Port,
    /// TLS port.
    pub secure_port: Port,
    /// Country id (always 1).
    pub country_id: i64,
    /// `dataCenterInfo.name` (MyOwn, Amazon, Netflix).
    pub data_center_name: String,
    /// Lease timing.
    pub lease_info: LeaseInfo,
    /// Free-form metadata.
    pub metadata: BTreeMap<String, String>,
    /// Home page URL.
    pub home_page_url: String,
    /// Status page URL.
    pub status_page_url: String,
    /// Health check URL.
    pub health_check_url: String,
    /// VIP address.
    pub vip_address: String,
    /// Secure VIP address.
    pub secure_vip_address: String,
    /// Last update (ms).
    pub last_updated_timestamp: i64,
    /// Last dirty (ms).
    pub last_dirty_timestamp: i64,
    /// ADDED / MODIFIED / DELETED (only meaningful in deltas).
    pub action_type: Option<String>,
}

/// A field of a registration that is missing or malformed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct FieldError {
    /// JSON path of the field, e.g. `instance.port.$`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

fn ferr(field: &str, reason: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_owned(),
        reason: reason.into(),
    }
}

fn lenient_str(v: &Value) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

fn lenient_i64(v: &Value) -> Option<i64> {
    match v {
        Value::Number(n) => n.as_i64().or_else(|| n.as_f64().map(|f| f as i64)),
        Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

fn lenient_bool(v: &Value) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim().to_ascii_lowercase().as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

fn required_str(obj: &Map<String, Value>, key: &str, path: &str) -> Result<String, FieldError> {
    match obj.get(key) {
        None | Some(Value::Null) => Err(ferr(&format!("{path}.{key}"), "is required")),
        Some(v) => match lenient_str(v) {
            Some(s) if !s.trim().is_empty() => Ok(s.trim().to_owned()),
            Some(_) => Err(ferr(&format!("{path}.{key}"), "must not be blank")),
            None => Err(ferr(&format!("{path}.{key}"), "must be a string")),
        },
    }
}

fn optional_str(obj: &Map<String, Value>, key: &str) -> String {
    obj.get(key).and_then(lenient_str).unwrap_or_default()
}

fn optional_i64(obj: &Map<String, Value>, key: &str, path: &str) -> Result<i64, FieldError> {
    match obj.get(key) {
        None | Some(Value::Null) => Ok(0),
        Some(v) => lenient_i64(v).ok_or_else(|| ferr(&format!("{path}.{key}"), "must be a number")),
    }
}

fn parse_port(v: Option<&Value>, path: &str, default: Port) -> Result<Port, FieldError> {
    let Some(v) = v else { return Ok(default) };
    match v {
        Value::Null => Ok(default),
        Value::Object(o) => {
            let port = match o.get("$") {
                None | Some(Value::Null) => default.port,
                Some(p) => {
                    let n = lenient_i64(p)
                        .ok_or_else(|| ferr(&format!("{path}.$"), "must be a number"))?;
                    u16::try_from(n).map_err(|_| ferr(&format!("{path}.$"), "must be 0..65535"))?
                }
            };
            let enabled = match o.get("@enabled") {
                None | Some(Value::Null) => default.enabled,
                Some(e) => lenient_bool(e)
                    .ok_or_else(|| ferr(&format!("{path}.@enabled"), "must be true or false"))?,
            };
            Ok(Port { port, enabled })
        }
        other => {
            let n = lenient_i64(other)
                .ok_or_else(|| ferr(path, "must be {\"$\":port,\"@enabled\":bool}"))?;
            let port = u16::try_from(n).map_err(|_| ferr(path, "must be 0..65535"))?;
            Ok(Port {
                port,
                enabled: default.enabled,
            })
        }
    }
}

fn parse_status(
    obj: &Map<String, Value>,
    keys: &[&str],
    path: &str,
) -> Result<InstanceStatus, FieldError> {
    for key in keys {
        if let Some(v) = obj.get(*key) {
            if v.is_null() {
                continue;
            }
            let s = lenient_str(v).unwrap_or_default();
            return InstanceStatus::parse(&s).ok_or_else(|| {
                ferr(
                    &format!("{path}.{key}"),
                    "must be one of UP, DOWN, STARTING, OUT_OF_SERVICE, UNKNOWN",
                )
            });
        }
    }
    Ok(InstanceStatus::Unknown)
}

impl InstanceInfo {
    /// A fresh UP instance with the usual defaults (used by our own client).
    pub fn new(app: &str, instance_id: &str, host: &str, port: u16) -> Self {
        let now = now_millis();
        let base = format!("http://{host}:{port}/");
        Self {
            instance_id: instance_id.to_owned(),
            host_name: host.to_owned(),
            app: app.to_ascii_uppercase(),
            ip_addr: host.to_owned(),
            status: InstanceStatus::Up,
            overridden_status: InstanceStatus::Unknown,
            port: Port {
                port,
                enabled: true,
            },
            secure_port: Port {
                port: 443,
                enabled: false,
            },
            country_id: 1,
            data_center_name: "MyOwn".to_owned(),
            lease_info: LeaseInfo {
                renewal_interval_in_secs: 30,
                duration_in_secs: 90,
                ..LeaseInfo::default()
            },
            metadata: BTreeMap::new(),
            home_page_url: base.clone(),
            status_page_url: format!("{base}health/live"),
            health_check_url: format!("{base}health/ready"),
            vip_address: app.to_ascii_lowercase(),
            secure_vip_address: app.to_ascii_lowercase(),
            last_updated_timestamp: now,
            last_dirty_timestamp: now,
            action_type: None,
        }
    }

    /// Parses the value of an `instance` member leniently; `path` prefixes field names in errors.
    pub fn from_value(v: &Value, path: &str) -> Result<Self, FieldError> {
        let obj = v
            .as_object()
            .ok_or_else(|| ferr(path, "must be an object"))?;
        let instance_id = required_str(obj, "instanceId", path)?;
        let host_name = required_str(obj, "hostName", path)?;
        let app = required_str(obj, "app", path)?.to_ascii_uppercase();
        let ip_addr = required_str(obj, "ipAddr", path)?;
        let dc_path = format!("{path}.dataCenterInfo");
        let data_center_name = match obj.get("dataCenterInfo") {
            Some(Value::Object(dc)) => required_str(dc, "name", &dc_path)?,
            Some(_) => return Err(ferr(&dc_path, "must be an object")),
            None => return Err(ferr(&dc_path, "is required")),
        };
        let status = match parse_status(obj, &["status"], path)? {
            InstanceStatus::Unknown if !obj.contains_key("status") => InstanceStatus::Up,
            s => s,
        };
        let overridden_status = parse_status(obj, &["overriddenStatus", "overriddenstatus"], path)?;
        let port = parse_port(
            obj.get("port"),
            &format!("{path}.port"),
            Port {
                port: 7001,
                enabled: true,
            },
        )?;
        let secure_port = parse_port(
            obj.get("securePort"),
            &format!("{path}.securePort"),
            Port {
                port: 7002,
                enabled: false,
            },
        )?;
        let li_path = format!("{path}.leaseInfo");
        let lease_info = match obj.get("leaseInfo") {
            None | Some(Value::Null) => LeaseInfo::default(),
            Some(Value::Object(li)) => {
                let num = |k: &str| optional_i64(li, k, &li_path);
                let secs = |k: &str| -> Result<u64, FieldError> {
                    let n = num(k)?;
                    u64::try_from(n)
                        .map_err(|_| ferr(&format!("{li_path}.{k}"), "must not be negative"))
                };
                LeaseInfo {
                    renewal_interval_in_secs: secs("renewalIntervalInSecs")?,
                    duration_in_secs: secs("durationInSecs")?,
                    registration_timestamp: num("registrationTimestamp")?,
                    last_renewal_timestamp: num("lastRenewalTimestamp")?,
                    eviction_timestamp: num("evictionTimestamp")?,
                    service_up_timestamp: num("serviceUpTimestamp")?,
                }
            }
            Some(_) => return Err(ferr(&li_path, "must be an object")),
        };
        let md_path = format!("{path}.metadata");
        let metadata = match obj.get("metadata") {
            None | Some(Value::Null) => BTreeMap::new(),
            Some(Value::Object(m)) => m
                .iter()
                .filter(|(k, _)| k.as_str() != "@class")
                .map(|(k, v)| {
                    lenient_str(v)
                        .map(|s| (k.clone(), s))
                        .ok_or_else(|| ferr(&format!("{md_path}.{k}"), "must be a string"))
                })
                .collect::<Result<_, _>>()?,
            Some(_) => return Err(ferr(&md_path, "must be an object")),
        };
        let now = now_millis();
        let ts = |k: &str| -> Result<i64, FieldError> {
            let n = optional_i64(obj, k, path)?;
            Ok(if n == 0 { now } else { n })
        };
        let action_type = obj.get("actionType").and_then(lenient_str);
        Ok(Self {
            instance_id,
            host_name,
            app: app.clone(),
            ip_addr,
            status,
            overridden_status,
            port,
            secure_port,
            country_id: optional_i64(obj, "countryId", path).map(|c| if c == 0 { 1 } else { c })?,
            data_center_name,
            lease_info,
            metadata,
            home_page_url: optional_str(obj, "homePageUrl"),
            status_page_url: optional_str(obj, "statusPageUrl"),
            health_check_url: optional_str(obj, "healthCheckUrl"),
            vip_address: optional_str(obj, "vipAddress"),
            secure_vip_address: optional_str(obj, "secureVipAddress"),
            last_updated_timestamp: ts("lastUpdatedTimestamp")?,
            last_dirty_timestamp: ts("lastDirtyTimestamp")?,
            action_type,
        })
    }

    /// Parses a register body `{"instance":{...}}`.
    pub fn from_register_body(body: &Value) -> Result<Self, FieldError> {
        let inst = body
            .as_object()
            .and_then(|o| o.get("instance"))
            .ok_or_else(|| ferr("instance", "body must be {\"instance\":{...}}"))?;
        Self::from_value(inst, "instance")
    }

    /// Status clients should act on: the override when set, else the instance's own.
    pub fn effective_status(&self) -> InstanceStatus {
        match self.overridden_status {
            InstanceStatus::Unknown => self.status,
            o => o,
        }
    }

    /// `http://ip:port` of the plain port.
    pub fn base_url(&self) -> String {
        let host = if self.ip_addr.is_empty() {
            &self.host_name
        } else {
            &self.ip_addr
        };
        if host.contains(':') && !host.starts_with('[') {
            format!("http://[{host}]:{}", self.port.port)
        } else {
            format!("http://{host}:{}", self.port.port)
        }
    }

    /// Serializes to the exact field set of the real Eureka server.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// `{"@class":..,"name":..}`.
struct DataCenter<'a>(&'a str);

impl Serialize for DataCenter<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("@class", DEFAULT_DATA_CENTER_CLASS)?;
        m.serialize_entry("name", self.0)?;
        m.end()
    }
}

/// Metadata as the real server writes it (`{"@class":"java.util.Collections$EmptyMap"}` when empty).
struct MetadataOut<'a>(&'a BTreeMap<String, String>);

impl Serialize for MetadataOut<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if self.0.is_empty() {
            let mut m = s.serialize_map(Some(1))?;
            m.serialize_entry("@class", "java.util.Collections$EmptyMap")?;
            m.end()
        } else {
            self.0.serialize(s)
        }
    }
}

/// Written directly (no intermediate `Value`) so large registries serialize cheaply.
impl Serialize for InstanceInfo {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let n = if self.action_type.is_some() { 21 } else { 20 };
        let mut m = s.serialize_map(Some(n))?;
        m.serialize_entry("instanceId", &self.instance_id)?;
        m.serialize_entry("hostName", &self.host_name)?;
        m.serialize_entry("app", &self.app)?;
        m.serialize_entry("ipAddr", &self.ip_addr)?;
        m.serialize_entry("status", &self.status)?;
        m.serialize_entry("overriddenStatus", &self.overridden_status)?;
        m.serialize_entry("port", &self.port)?;
        m.serialize_entry("securePort", &self.secure_port)?;
        m.serialize_entry("countryId", &self.country_id)?;
        m.serialize_entry("dataCenterInfo", &DataCenter(&self.data_center_name))?;
        m.serialize_entry("leaseInfo", &self.lease_info)?;
        m.serialize_entry("metadata", &MetadataOut(&self.metadata))?;
        m.serialize_entry("homePageUrl", &self.home_page_url)?;
        m.serialize_entry("statusPageUrl", &self.status_page_url)?;
        m.serialize_entry("healthCheckUrl", &self.health_check_url)?;
        m.serialize_entry("vipAddress", &self.vip_address)?;
        m.serialize_entry("secureVipAddress", &self.secure_vip_address)?;
        m.serialize_entry("isCoordinatingDiscoveryServer", "false")?;
        m.serialize_entry(
            "lastUpdatedTimestamp",
            &self.last_updated_timestamp.to_string(),
        )?;
        m.serialize_entry("lastDirtyTimestamp", &self.last_dirty_timestamp.to_string())?;
        if let Some(a) = &self.action_type {
            m.serialize_entry("actionType", a)?;
        }
        m.end()
    }
}

/// All instances of one app.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Application {
    /// Upper-case name.
    pub name: String,
    /// Instances (always written as an array).
    pub instances: Vec<InstanceInfo>,
}

impl Serialize for Application {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(2))?;
        m.serialize_entry("name", &self.name)?;
        m.serialize_entry("instance", &self.instances)?;
        m.end()
    }
}

impl Application {
    /// `{"name":..,"instance":[..]}`.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }
}

/// A registry snapshot or delta.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Applications {
    /// `versions__delta`.
    pub versions_delta: String,
    /// `apps__hashcode` (see [`apps_hashcode`]).
    pub apps_hashcode: String,
    /// Apps (always written as an array).
    pub applications: Vec<Application>,
}

fn one_or_many(v: Option<&Value>) -> Vec<&Value> {
    match v {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(a)) => a.iter().collect(),
        Some(other) => vec![other],
    }
}

struct ApplicationsInner<'a>(&'a Applications);

impl Serialize for ApplicationsInner<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(3))?;
        m.serialize_entry("versions__delta", &self.0.versions_delta)?;
        m.serialize_entry("apps__hashcode", &self.0.apps_hashcode)?;
        m.serialize_entry("application", &self.0.applications)?;
        m.end()
    }
}

/// Written as `{"applications":{...}}`.
impl Serialize for Applications {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut m = s.serialize_map(Some(1))?;
        m.serialize_entry("applications", &ApplicationsInner(self))?;
        m.end()
    }
}

impl Applications {
    /// `{"applications":{...}}`.
    pub fn to_value(&self) -> Value {
        serde_json::to_value(self).unwrap_or(Value::Null)
    }

    /// `{"applications":{...}}` as JSON bytes, written directly.
    pub fn to_json_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses `{"applications":{...}}` leniently (single objects accepted where arrays are expected;
    /// instances that do not parse are skipped).
    pub fn from_value(v: &Value) -> Result<Self, FieldError> {
        let root = v
            .get("applications")
            .and_then(Value::as_object)
            .ok_or_else(|| ferr("applications", "is required"))?;
        let mut out = Applications::default();
        for (k, val) in root {
            if k.starts_with("version") {
                out.versions_delta = lenient_str(val).unwrap_or_default();
            } else if k.starts_with("apps") {
                out.apps_hashcode = lenient_str(val).unwrap_or_default();
            }
        }
        for app in one_or_many(root.get("application")) {
            let name = app
                .get("name")
                .and_then(lenient_str)
                .unwrap_or_default()
                .to_ascii_uppercase();
            let instances = one_or_many(app.get("instance"))
                .into_iter()
                .filter_map(|i| InstanceInfo::from_value(i, "instance").ok())
                .collect();
            out.applications.push(Application { name, instances });
        }
        Ok(out)
    }
}

/// Eureka's reconcile hash: `STATUS_count_` for each status present, sorted by status name; "" when empty.
pub fn apps_hashcode<'a>(instances: impl IntoIterator<Item = &'a InstanceInfo>) -> String {
    let mut counts: BTreeMap<&'static str, usize> = BTreeMap::new();
    for i in instances {
        *counts.entry(i.effective_status().as_str()).or_default() += 1;
    }
    counts.iter().map(|(s, n)| format!("{s}_{n}_")).collect()
}

/// Milliseconds since the Unix epoch.
pub fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn java_body() -> Value {
        json!({"instance":{
            "instanceId":"host:order-service:8081","hostName":"127.0.0.1","app":"order-service","ipAddr":"127.0.0.1",
            "status":"UP","overriddenstatus":"UNKNOWN",
            "port":{"$":"8081","@enabled":true},"securePort":{"$":443,"@enabled":"false"},"countryId":1,
            "dataCenterInfo":{"@class":"com.netflix.appinfo.InstanceInfo$DefaultDataCenterInfo","name":"MyOwn"},
            "leaseInfo":{"renewalIntervalInSecs":30,"durationInSecs":90,"registrationTimestamp":0,
                "lastRenewalTimestamp":0,"evictionTimestamp":0,"serviceUpTimestamp":0},
            "metadata":{"@class":"java.util.Collections$EmptyMap","management.port":"8081"},
            "homePageUrl":"http://127.0.0.1:8081/","vipAddress":"order-service","secureVipAddress":"order-service",
            "isCoordinatingDiscoveryServer":"false","lastUpdatedTimestamp":"1700000000000","lastDirtyTimestamp":"1700000000000",
            "someFutureField": {"x": 1}
        }})
    }

    #[test]
    fn parses_java_client_body_leniently() {
        let i = InstanceInfo::from_register_body(&java_body()).unwrap();
        assert_eq!(i.app, "ORDER-SERVICE");
        assert_eq!(
            i.port,
            Port {
                port: 8081,
                enabled: true
            }
        );
        assert_eq!(
            i.secure_port,
            Port {
                port: 443,
                enabled: false
            }
        );
        assert_eq!(
            i.metadata.get("management.port").map(String::as_str),
            Some("8081")
        );
        assert!(!i.metadata.contains_key("@class"));
        assert_eq!(i.last_dirty_timestamp, 1_700_000_000_000);
        assert_eq!(i.base_url(), "http://127.0.0.1:8081");
    }

    #[test]
    fn output_has_exact_server_shape() {
        let mut i = InstanceInfo::from_register_body(&java_body()).unwrap();
        i.metadata.clear();
        let v = i.to_value();
        assert_eq!(v["port"], json!({"$":8081,"@enabled":"true"}));
        assert_eq!(
            v["metadata"],
            json!({"@class":"java.util.Collections$EmptyMap"})
        );
        assert_eq!(v["lastDirtyTimestamp"], "1700000000000");
        assert!(v.get("someFutureField").is_none());
        assert!(v.get("actionType").is_none());
        let keys: Vec<_> = v.as_object().unwrap().keys().cloned().collect();
        assert_eq!(keys.len(), 20);
    }

    #[test]
    fn missing_fields_are_named() {
        let mut b = java_body();
        b["instance"].as_object_mut().unwrap().remove("ipAddr");
        assert_eq!(
            InstanceInfo::from_register_body(&b).unwrap_err().field,
            "instance.ipAddr"
        );
        let mut b = java_body();
        b["instance"]["dataCenterInfo"] = json!({"@class": "x"});
        assert_eq!(
            InstanceInfo::from_register_body(&b).unwrap_err().field,
            "instance.dataCenterInfo.name"
        );
        let mut b = java_body();
        b["instance"]["port"] = json!({"$": 70000});
        assert_eq!(
            InstanceInfo::from_register_body(&b).unwrap_err().field,
            "instance.port.$"
        );
        let mut b = java_body();
        b["instance"]["status"] = json!("SLEEPY");
        assert_eq!(
            InstanceInfo::from_register_body(&b).unwrap_err().field,
            "instance.status"
        );
    }

    #[test]
    fn hashcode_counts_statuses_sorted() {
        let mut a = InstanceInfo::new("a", "1", "h", 1);
        let b = InstanceInfo::new("a", "2", "h", 2);
        let c = InstanceInfo::new("b", "3", "h", 3);
        assert_eq!(apps_hashcode([&a, &b, &c]), "UP_3_");
        a.overridden_status = InstanceStatus::OutOfService;
        assert_eq!(apps_hashcode([&a, &b, &c]), "OUT_OF_SERVICE_1_UP_2_");
        assert_eq!(apps_hashcode(std::iter::empty()), "");
    }

    #[test]
    fn applications_round_trip_and_single_object_accepted() {
        let i = InstanceInfo::new("product", "p1", "10.0.0.1", 8081);
        let apps = Applications {
            versions_delta: "1".into(),
            apps_hashcode: "UP_1_".into(),
            applications: vec![Application {
                name: "PRODUCT".into(),
                instances: vec![i.clone()],
            }],
        };
        let v = apps.to_value();
        assert!(v["applications"]["application"].is_array());
        assert!(v["applications"]["application"][0]["instance"].is_array());
        let back = Applications::from_value(&v).unwrap();
        assert_eq!(back.applications[0].instances[0].instance_id, "p1");
        let single = json!({"applications":{"apps__hashcode":"UP_1_","application":{"name":"product","instance": i.to_value()}}});
        let s = Applications::from_value(&single).unwrap();
        assert_eq!(s.applications[0].name, "PRODUCT");
        assert_eq!(s.applications[0].instances.len(), 1);
    }
}
