//! The OpenAPI conformance check every service's integration tests share: a real response (status,
//! content type, body) must be one its service's own OpenAPI 3.1 document describes for that operation.
//!
//! It exists so that a document cannot drift from what the handlers really do: each service's tests fetch
//! the document the running service serves at `/openapi.json`, drive every documented operation with
//! good and bad input, and pass every response through [`Spec::conform`]. Bodies are validated with the
//! `jsonschema` crate (JSON Schema 2020-12, the dialect of OpenAPI 3.1 schemas) against the documented
//! schema, resolved inside the whole document so `#/components/...` references work.

use std::collections::BTreeSet;
use std::sync::Mutex;

use serde_json::Value;

/// A service's OpenAPI document plus the operations the checks have seen (for coverage assertions).
#[derive(Debug)]
pub struct Spec {
    doc: Value,
    exercised: Mutex<BTreeSet<(String, String, u16)>>,
}

/// A response that passed the check, for the test's own assertions.
#[derive(Debug)]
pub struct Checked {
    /// HTTP status.
    pub status: u16,
    /// The `Content-Type` header, if any.
    pub content_type: Option<String>,
    /// The body parsed as JSON (`Null` when it is empty or not JSON).
    pub json: Value,
    /// The raw body.
    pub body: Vec<u8>,
}

fn escape(segment: &str) -> String {
    segment.replace('~', "~0").replace('/', "~1")
}

/// A JSON pointer as a URI fragment: characters a fragment may not hold (`{`, `}`, ...) percent-encoded.
fn fragment(pointer: &str) -> String {
    let mut out = String::with_capacity(pointer.len());
    for c in pointer.chars() {
        if c.is_ascii_alphanumeric() || "/~-._!$&'()*+,;=:@".contains(c) {
            out.push(c);
        } else {
            let mut buf = [0u8; 4];
            for b in c.encode_utf8(&mut buf).bytes() {
                out.push_str(&format!("%{b:02X}"));
            }
        }
    }
    out
}

/// Whether a media type carries JSON (`application/json`, `application/problem+json`, ...).
fn is_json(media_type: &str) -> bool {
    media_type == "application/json" || media_type.ends_with("+json")
}

impl Spec {
    /// Wraps a document (as served by a service).
    pub fn new(doc: Value) -> Spec {
        Spec {
            doc,
            exercised: Mutex::new(BTreeSet::new()),
        }
    }

    /// Fetches `GET {base_url}/openapi.json` from a running service; panics unless it is an OpenAPI 3.1
    /// document served as `application/json`.
    pub async fn fetch(base_url: &str) -> Spec {
        let url = format!("{base_url}/openapi.json");
        let resp = reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("GET {url}: {e}"));
        assert_eq!(resp.status(), 200, "GET {url}");
        let ct = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        assert!(ct.starts_with("application/json"), "GET {url}: {ct}");
        let doc: Value = resp
            .json()
            .await
            .unwrap_or_else(|e| panic!("GET {url}: not JSON: {e}"));
        assert!(
            doc["openapi"]
                .as_str()
                .is_some_and(|v| v.starts_with("3.1")),
            "GET {url} is not OpenAPI 3.1: {}",
            doc["openapi"]
        );
        Spec::new(doc)
    }

    /// The whole document.
    pub fn document(&self) -> &Value {
        &self.doc
    }

    /// Every documented operation as (upper-case method, path template).
    pub fn operations(&self) -> BTreeSet<(String, String)> {
        let mut ops = BTreeSet::new();
        if let Some(paths) = self.doc["paths"].as_object() {
            for (path, item) in paths {
                for method in ["get", "put", "post", "delete", "patch", "head", "options"] {
                    if item.get(method).is_some() {
                        ops.insert((method.to_ascii_uppercase(), path.clone()));
                    }
                }
            }
        }
        ops
    }

    /// Follows a local `$ref` (`#/components/...`), returning the target and its JSON pointer.
    fn resolve<'a>(
        &'a self,
        value: &'a Value,
        pointer: String,
    ) -> Result<(&'a Value, String), String> {
        match value.get("$ref").and_then(Value::as_str) {
            Some(r) => {
                let p = r
                    .strip_prefix('#')
                    .ok_or_else(|| format!("non-local $ref {r}"))?;
                let target = self
                    .doc
                    .pointer(p)
                    .ok_or_else(|| format!("dangling $ref {r}"))?;
                Ok((target, p.to_owned()))
            }
            None => Ok((value, pointer)),
        }
    }

    /// Checks one response against the operation `method template`: its status must be documented, its
    /// media type must be one documented for that status (no body when none is), and a JSON body must
    /// validate against the documented schema. Returns what is wrong, in words.
    pub fn check(
        &self,
        method: &str,
        template: &str,
        status: u16,
        content_type: Option<&str>,
        body: &[u8],
    ) -> Result<(), String> {
        let m = method.to_ascii_lowercase();
        let op_pointer = format!("/paths/{}/{m}", escape(template));
        let op = self
            .doc
            .pointer(&op_pointer)
            .ok_or_else(|| format!("{method} {template} is not a documented operation"))?;
        let responses = op["responses"]
            .as_object()
            .ok_or_else(|| format!("{method} {template} documents no responses"))?;
        let code = status.to_string();
        let range = format!("{}XX", status / 100);
        let key = [code.as_str(), range.as_str(), "default"]
            .into_iter()
            .find(|k| responses.contains_key(*k))
            .ok_or_else(|| {
                format!(
                    "{method} {template} answered {status}, which is not documented (documented: {})",
                    responses.keys().cloned().collect::<Vec<_>>().join(", ")
                )
            })?;
        let (response, pointer) = self.resolve(
            &responses[key],
            format!("{op_pointer}/responses/{}", escape(key)),
        )?;
        let media = content_type
            .map(|ct| {
                ct.split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase()
            })
            .filter(|ct| !ct.is_empty());
        let content = response.get("content").and_then(Value::as_object);
        let Some(content) = content.filter(|c| !c.is_empty()) else {
            return if body.is_empty() {
                Ok(())
            } else {
                Err(format!(
                    "{method} {template} {status} documents no body but got {} bytes of {media:?}",
                    body.len()
                ))
            };
        };
        let media = media.ok_or_else(|| {
            format!("{method} {template} {status} has a body but no Content-Type")
        })?;
        let entry = content.get(&media).ok_or_else(|| {
            format!(
                "{method} {template} {status} answered {media}, documented: {}",
                content.keys().cloned().collect::<Vec<_>>().join(", ")
            )
        })?;
        if entry.get("schema").is_none() {
            return Ok(());
        }
        if !is_json(&media) {
            // Only JSON bodies are validated; a text or XML body only needs its documented media type.
            return Ok(());
        }
        let instance: Value = serde_json::from_slice(body).map_err(|e| {
            format!(
                "{method} {template} {status} {media} body is not JSON ({e}): {}",
                String::from_utf8_lossy(body)
            )
        })?;
        let schema_pointer = format!("{pointer}/content/{}/schema", escape(&media));
        self.validate(&schema_pointer, &instance)
            .map_err(|e| format!("{method} {template} {status} {e}"))
    }

    /// Validates `instance` against the schema at `schema_pointer`, in place inside the whole document
    /// so its references resolve.
    fn validate(&self, schema_pointer: &str, instance: &Value) -> Result<(), String> {
        let mut root = self.doc.clone();
        let Some(obj) = root.as_object_mut() else {
            return Err("the document is not an object".to_owned());
        };
        obj.insert(
            "$ref".to_owned(),
            Value::String(format!("#{}", fragment(schema_pointer))),
        );
        let validator = jsonschema::options()
            .with_draft(jsonschema::Draft::Draft202012)
            .build(&root)
            .map_err(|e| format!("the schema at {schema_pointer} does not compile: {e}"))?;
        let errors: Vec<String> = validator
            .iter_errors(instance)
            .map(|e| format!("at {}: {e}", e.instance_path()))
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(format!(
                "body leaves its schema ({schema_pointer}):\n  {}\nbody: {instance}",
                errors.join("\n  ")
            ))
        }
    }

    /// Validates a value against the component schema `#/components/schemas/{name}` (for bodies that
    /// do not arrive as a whole response, such as the data of a server-sent event).
    pub fn check_component(&self, name: &str, instance: &Value) -> Result<(), String> {
        let pointer = format!("/components/schemas/{}", escape(name));
        if self.doc.pointer(&pointer).is_none() {
            return Err(format!("no component schema {name}"));
        }
        self.validate(&pointer, instance)
    }

    /// Checks the status and content type of a response whose body never ends (a stream), without
    /// reading the body; records the operation as exercised and gives the response back.
    pub fn conform_head(
        &self,
        method: &str,
        template: &str,
        resp: reqwest::Response,
    ) -> reqwest::Response {
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        // An empty body passes the schema step for non-JSON media types only, so a JSON stream
        // would be refused here rather than waved through.
        if let Err(why) = self.check(method, template, status, content_type.as_deref(), b"") {
            panic!("response does not conform to the OpenAPI document: {why}");
        }
        self.exercised
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((method.to_ascii_uppercase(), template.to_owned(), status));
        resp
    }

    /// Reads `resp` whole, checks it with [`Spec::check`] (panicking with the reason when it does not
    /// conform), records the operation as exercised and returns the response for further assertions.
    pub async fn conform(&self, method: &str, template: &str, resp: reqwest::Response) -> Checked {
        let status = resp.status().as_u16();
        let content_type = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let body = resp
            .bytes()
            .await
            .unwrap_or_else(|e| panic!("{method} {template}: reading the body: {e}"))
            .to_vec();
        if let Err(why) = self.check(method, template, status, content_type.as_deref(), &body) {
            panic!("response does not conform to the OpenAPI document: {why}");
        }
        self.exercised
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert((method.to_ascii_uppercase(), template.to_owned(), status));
        let json = serde_json::from_slice(&body).unwrap_or(Value::Null);
        Checked {
            status,
            content_type,
            json,
            body,
        }
    }

    /// The (method, template, status) triples [`Spec::conform`] has accepted so far.
    pub fn exercised(&self) -> BTreeSet<(String, String, u16)> {
        self.exercised
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Panics unless every documented operation has had at least one response checked, at least one of
    /// them a success (2xx) and, for operations that document any 4xx, at least one error.
    pub fn assert_every_operation_exercised(&self) {
        let seen = self.exercised();
        let mut missing = Vec::new();
        for (method, path) in self.operations() {
            let statuses: Vec<u16> = seen
                .iter()
                .filter(|(m, p, _)| *m == method && *p == path)
                .map(|(_, _, s)| *s)
                .collect();
            let documents_4xx = self
                .doc
                .pointer(&format!(
                    "/paths/{}/{}/responses",
                    escape(&path),
                    method.to_ascii_lowercase()
                ))
                .and_then(Value::as_object)
                .is_some_and(|r| r.keys().any(|k| k.starts_with('4')));
            if !statuses.iter().any(|s| (200..300).contains(s)) {
                missing.push(format!("{method} {path}: no success checked"));
            }
            if documents_4xx && !statuses.iter().any(|s| (400..500).contains(s)) {
                missing.push(format!("{method} {path}: no error checked"));
            }
        }
        assert!(
            missing.is_empty(),
            "operations not exercised:\n  {}",
            missing.join("\n  ")
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn spec() -> Spec {
        Spec::new(json!({
            "openapi": "3.1.0",
            "paths": {"/things/{id}": {"get": {"responses": {
                "200": {"description": "ok", "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Thing"}}}},
                "404": {"$ref": "#/components/responses/NotFound"},
                "204": {"description": "none"}
            }}}},
            "components": {
                "schemas": {
                    "Thing": {"type": "object", "required": ["id"], "properties": {"id": {"type": "integer"}}},
                    "Problem": {"type": "object", "required": ["status"], "properties": {"status": {"type": "integer"}}}
                },
                "responses": {"NotFound": {"description": "nf", "content": {"application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}}}}
            }
        }))
    }

    #[test]
    fn accepts_documented_responses() {
        let s = spec();
        s.check(
            "GET",
            "/things/{id}",
            200,
            Some("application/json"),
            br#"{"id":1}"#,
        )
        .unwrap();
        s.check(
            "GET",
            "/things/{id}",
            404,
            Some("application/problem+json"),
            br#"{"status":404}"#,
        )
        .unwrap();
        s.check("GET", "/things/{id}", 204, None, b"").unwrap();
    }

    #[test]
    fn rejects_wrong_status_type_media_and_shape() {
        let s = spec();
        assert!(
            s.check("GET", "/things/{id}", 500, Some("application/json"), b"{}")
                .is_err()
        );
        assert!(
            s.check(
                "GET",
                "/things/{id}",
                200,
                Some("text/plain"),
                br#"{"id":1}"#
            )
            .is_err()
        );
        let e = s
            .check(
                "GET",
                "/things/{id}",
                200,
                Some("application/json"),
                br#"{"id":"one"}"#,
            )
            .unwrap_err();
        assert!(e.contains("leaves its schema"), "{e}");
        assert!(
            s.check("GET", "/things/{id}", 200, Some("application/json"), b"{}")
                .is_err()
        );
        assert!(
            s.check(
                "GET",
                "/things/{id}",
                404,
                Some("application/json"),
                br#"{"status":404}"#
            )
            .is_err()
        );
        assert!(
            s.check("GET", "/things/{id}", 204, Some("application/json"), b"{}")
                .is_err()
        );
        assert!(
            s.check(
                "POST",
                "/things/{id}",
                200,
                Some("application/json"),
                br#"{"id":1}"#
            )
            .is_err()
        );
    }
}
