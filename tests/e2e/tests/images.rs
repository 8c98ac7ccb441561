//! The images have two recipes: `hack/images.sh` builds them without Docker (for the real node's
//! containerd), `docker/*.Dockerfile` builds them with Docker (for users). Both must describe one
//! image, or a pod that works locally breaks for a user (or the other way round).
//!
//! This test runs `hack/images.sh build`, reads every OCI archive it wrote (index → manifest →
//! config, and the layer's files) and compares it with what the matching Dockerfile declares plus
//! what that Dockerfile's base image brings: the binary's path, USER, WORKDIR, ENTRYPOINT, CMD and
//! ENV; and, for the shared libraries `ldd` lists for the real binary, that the script's image holds
//! exactly those and that the Dockerfile's base or its `EXTRA_LIBS` provide each of them. The pause
//! image is compared with Kubernetes' own `build/pause/Dockerfile` the same way.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;
use shop_testkit::{binary_path, repo_root};

/// What a Dockerfile's runtime base image brings, for the facts this test compares.
struct Base {
    from: &'static str,
    user: Option<&'static str>,
    workdir: Option<&'static str>,
    env: &'static [&'static str],
    /// Sonames of the shared libraries in the base.
    libs: &'static [&'static str],
}

/// The base images the Dockerfiles may use. gcr.io/distroless/cc-debian12:nonroot is built by
/// GoogleContainerTools/distroless (base/base.bzl, base/config.bzl, cc/config.bzl): the Debian 12
/// packages libc6, libssl3, libgcc-s1, libgomp1 and libstdc++6 (no zlib), user 65532, workdir
/// /home/nonroot, PATH and SSL_CERT_FILE set. A Dockerfile on any other base fails until it is
/// described here.
const BASES: &[Base] = &[
    Base {
        from: "gcr.io/distroless/cc-debian12:nonroot",
        user: Some("65532"),
        workdir: Some("/home/nonroot"),
        env: &[
            "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
            "SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
        ],
        libs: &[
            "ld-linux-x86-64.so.2",
            "ld-linux-aarch64.so.1",
            "libc.so.6",
            "libm.so.6",
            "libdl.so.2",
            "libpthread.so.0",
            "librt.so.1",
            "libresolv.so.2",
            "libutil.so.1",
            "libanl.so.1",
            "libgcc_s.so.1",
            "libgomp.so.1",
            "libstdc++.so.6",
            "libssl.so.3",
            "libcrypto.so.3",
        ],
    },
    // Kubernetes' pause image: `BASE.linux := scratch` in build/pause/Makefile.
    Base {
        from: "${BASE}",
        user: None,
        workdir: None,
        env: &[],
        libs: &[],
    },
];

/// The runtime stage of a Dockerfile: the instructions that shape the image's config and files.
#[derive(Debug, Default)]
struct Dockerfile {
    from: String,
    /// ARG defaults of every stage.
    args: BTreeMap<String, String>,
    user: Option<String>,
    workdir: Option<String>,
    entrypoint: Option<Vec<String>>,
    cmd: Option<Vec<String>>,
    env: Vec<String>,
    /// Destinations of the runtime stage's COPY/ADD instructions.
    copies: Vec<String>,
}

fn parse_dockerfile(text: &str) -> Dockerfile {
    let mut logical = Vec::new();
    let mut current = String::new();
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with('#') || trimmed.is_empty() {
            continue;
        }
        match trimmed.strip_suffix('\\') {
            Some(part) => {
                current.push_str(part);
                current.push(' ');
            }
            None => {
                current.push_str(trimmed);
                logical.push(std::mem::take(&mut current));
            }
        }
    }
    let mut df = Dockerfile::default();
    for line in logical {
        let (word, rest) = line.split_once(char::is_whitespace).unwrap_or((&line, ""));
        let rest = rest.trim();
        match word.to_ascii_uppercase().as_str() {
            "FROM" => {
                // A new stage starts: only the last one is the image.
                let args = std::mem::take(&mut df.args);
                df = Dockerfile {
                    from: rest
                        .split_whitespace()
                        .next()
                        .unwrap_or_default()
                        .to_string(),
                    args,
                    ..Dockerfile::default()
                };
            }
            "ARG" => {
                if let Some((k, v)) = rest.split_once('=') {
                    df.args
                        .insert(k.to_string(), v.trim_matches('"').to_string());
                }
            }
            "USER" => df.user = Some(rest.to_string()),
            "WORKDIR" => df.workdir = Some(rest.to_string()),
            "ENTRYPOINT" => {
                df.entrypoint = Some(exec_form(rest));
                // Docker: setting ENTRYPOINT clears the CMD inherited from the base.
                df.cmd = None;
            }
            "CMD" => df.cmd = Some(exec_form(rest)),
            "ENV" => {
                if rest
                    .split_whitespace()
                    .next()
                    .is_some_and(|t| t.contains('='))
                {
                    df.env.extend(rest.split_whitespace().map(str::to_string));
                } else if let Some((k, v)) = rest.split_once(char::is_whitespace) {
                    df.env.push(format!("{k}={}", v.trim()));
                }
            }
            "COPY" | "ADD" => {
                let dest = rest.split_whitespace().last().unwrap_or_default();
                df.copies.push(dest.to_string());
            }
            _ => {}
        }
    }
    df
}

fn exec_form(rest: &str) -> Vec<String> {
    serde_json::from_str(rest)
        .unwrap_or_else(|_| panic!("`{rest}`: use the exec form [\"...\"] (no shell in the image)"))
}

/// One file of an image layer.
#[derive(Debug)]
struct Entry {
    kind: tar::EntryType,
    mode: u32,
    uid: u64,
    data: Vec<u8>,
}

/// An OCI image read from an `oci-archive`.
struct Image {
    ref_name: String,
    config: Value,
    files: BTreeMap<String, Entry>,
}

fn read_archive(path: &Path) -> Image {
    let mut blobs: BTreeMap<String, Vec<u8>> = BTreeMap::new();
    let file =
        std::fs::File::open(path).unwrap_or_else(|e| panic!("cannot open {}: {e}", path.display()));
    let mut archive = tar::Archive::new(file);
    for entry in archive.entries().unwrap() {
        let mut entry = entry.unwrap();
        let name = entry
            .path()
            .unwrap()
            .to_string_lossy()
            .trim_start_matches("./")
            .to_string();
        let mut data = Vec::new();
        entry.read_to_end(&mut data).unwrap();
        blobs.insert(name, data);
    }
    let json = |name: &str| -> Value {
        let bytes = blobs
            .get(name)
            .unwrap_or_else(|| panic!("{} has no {name}", path.display()));
        serde_json::from_slice(bytes).unwrap()
    };
    let blob = |digest: &Value| format!("blobs/{}", digest.as_str().unwrap().replace(':', "/"));

    let index = json("index.json");
    let manifests = index["manifests"].as_array().unwrap();
    assert_eq!(
        manifests.len(),
        1,
        "{}: one image per archive",
        path.display()
    );
    let ref_name = manifests[0]["annotations"]["org.opencontainers.image.ref.name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let manifest = json(&blob(&manifests[0]["digest"]));
    let config = json(&blob(&manifest["config"]["digest"]));

    let mut files = BTreeMap::new();
    for layer in manifest["layers"].as_array().unwrap() {
        let media = layer["mediaType"].as_str().unwrap();
        assert!(media.ends_with("tar+gzip"), "unexpected layer type {media}");
        let bytes = &blobs[&blob(&layer["digest"])];
        let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(bytes.as_slice()));
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = format!(
                "/{}",
                entry
                    .path()
                    .unwrap()
                    .to_string_lossy()
                    .trim_start_matches("./")
                    .trim_end_matches('/')
            );
            let header = entry.header();
            let kind = header.entry_type();
            let mode = header.mode().unwrap();
            let uid = header.uid().unwrap();
            let mut data = Vec::new();
            entry.read_to_end(&mut data).unwrap();
            files.insert(
                name,
                Entry {
                    kind,
                    mode,
                    uid,
                    data,
                },
            );
        }
    }
    Image {
        ref_name,
        config,
        files,
    }
}

/// The shared libraries of an ELF file as `ldd` resolves them: absolute paths, loader included.
fn ldd(binary: &Path) -> Vec<String> {
    let out = Command::new("ldd").arg(binary).output().unwrap();
    let text =
        String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    if text.contains("not a dynamic executable") {
        return Vec::new();
    }
    assert!(
        out.status.success(),
        "ldd {} failed:\n{text}",
        binary.display()
    );
    assert!(
        !text.contains("not found"),
        "{} needs a missing library:\n{text}",
        binary.display()
    );
    text.lines()
        .filter_map(|l| {
            let l = l.trim();
            match l.split_once(" => ") {
                Some((_, rest)) => rest
                    .split_whitespace()
                    .next()
                    .filter(|p| p.starts_with('/')),
                None => l.split_whitespace().next().filter(|p| p.starts_with('/')),
            }
            .map(str::to_string)
        })
        .collect()
}

fn soname(path: &str) -> String {
    path.rsplit('/').next().unwrap_or(path).to_string()
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()
        .map(|a| a.iter().map(|s| s.as_str().unwrap().to_string()).collect())
        .filter(|a: &Vec<String>| !a.is_empty())
}

/// Compares one image with its Dockerfile; returns every difference found and the libraries the
/// binary needs beyond the Dockerfile's base.
fn compare(
    name: &str,
    expected_ref: &str,
    image: &Image,
    df: &Dockerfile,
    binary: &Path,
) -> (Vec<String>, BTreeSet<String>) {
    let mut diffs = Vec::new();
    let check = |what: &str, script: String, docker: String| {
        (script != docker).then(|| {
            format!("{name}: {what}: hack/images.sh has {script}, the Dockerfile {docker}")
        })
    };
    let base = BASES
        .iter()
        .find(|b| b.from == df.from)
        .unwrap_or_else(|| panic!("{name}: base `{}` is not described in BASES", df.from));
    let config = &image.config["config"];

    diffs.extend(check(
        "archive name",
        image.ref_name.clone(),
        expected_ref.to_string(),
    ));
    let user = df.user.as_deref().or(base.user);
    diffs.extend(check(
        "USER",
        format!("{:?}", config["User"].as_str()),
        format!("{user:?}"),
    ));
    let workdir = df.workdir.as_deref().or(base.workdir);
    diffs.extend(check(
        "WORKDIR",
        format!("{:?}", config["WorkingDir"].as_str()),
        format!("{workdir:?}"),
    ));
    diffs.extend(check(
        "ENTRYPOINT",
        format!("{:?}", strings(&config["Entrypoint"])),
        format!("{:?}", df.entrypoint),
    ));
    diffs.extend(check(
        "CMD",
        format!("{:?}", strings(&config["Cmd"])),
        format!("{:?}", df.cmd),
    ));
    let mut env: BTreeMap<String, String> = BTreeMap::new();
    for kv in base
        .env
        .iter()
        .map(|s| s.to_string())
        .chain(df.env.iter().cloned())
    {
        let (k, v) = kv.split_once('=').unwrap();
        env.insert(k.to_string(), v.to_string());
    }
    let docker_env: BTreeSet<String> = env.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let script_env: BTreeSet<String> = strings(&config["Env"])
        .unwrap_or_default()
        .into_iter()
        .collect();
    diffs.extend(check(
        "ENV",
        format!("{script_env:?}"),
        format!("{docker_env:?}"),
    ));

    // The binary: the Dockerfile copies it to the ENTRYPOINT path; the image has it there.
    let bin_path = df
        .entrypoint
        .as_ref()
        .and_then(|e| e.first())
        .cloned()
        .unwrap_or_default();
    if !df.copies.contains(&bin_path) {
        diffs.push(format!(
            "{name}: the Dockerfile copies nothing to the ENTRYPOINT {bin_path}"
        ));
    }
    match image.files.get(&bin_path) {
        Some(e) if e.kind.is_file() && e.mode & 0o111 != 0 && e.data.starts_with(b"\x7fELF") => {}
        other => diffs.push(format!(
            "{name}: no executable ELF at {bin_path} in the image: {other:?}"
        )),
    }

    // Shared libraries: exactly the ones ldd lists in the script's image; the Dockerfile's base or
    // its EXTRA_LIBS provide each.
    let needed = ldd(binary);
    let in_image: BTreeSet<String> = image
        .files
        .keys()
        .filter(|p| soname(p).contains(".so"))
        .cloned()
        .collect();
    let needed_paths: BTreeSet<String> = needed.iter().cloned().collect();
    diffs.extend(check(
        "shared libraries (ldd of the binary vs files in the image)",
        format!("{in_image:?}"),
        format!("{needed_paths:?}"),
    ));
    for lib in &needed {
        if !image.files.get(lib).is_some_and(|e| e.kind.is_file()) {
            diffs.push(format!("{name}: {lib} is not a regular file in the image"));
        }
    }
    let extra = extra_libs(df);
    let beyond_base: BTreeSet<String> = needed
        .iter()
        .map(|p| soname(p))
        .filter(|s| !base.libs.contains(&s.as_str()))
        .collect();
    for lib in beyond_base.difference(&extra) {
        diffs.push(format!(
            "{name}: needs {lib}, which neither {} nor the Dockerfile's EXTRA_LIBS {extra:?} provide",
            base.from
        ));
    }
    (diffs, beyond_base)
}

fn extra_libs(df: &Dockerfile) -> BTreeSet<String> {
    df.args
        .get("EXTRA_LIBS")
        .map(|s| s.split_whitespace().map(str::to_string).collect())
        .unwrap_or_default()
}

/// What every Rust image carries from its distroless base: the nonroot user, /tmp, CA certificates,
/// and no shell.
fn base_files(name: &str, image: &Image) -> Vec<String> {
    let mut diffs = Vec::new();
    let text = |p: &str| {
        image
            .files
            .get(p)
            .map(|e| String::from_utf8_lossy(&e.data).to_string())
    };
    if !text("/etc/passwd").is_some_and(|t| t.contains("\nnonroot:x:65532:65532:")) {
        diffs.push(format!("{name}: /etc/passwd lacks nonroot (65532)"));
    }
    if !text("/etc/group").is_some_and(|t| t.contains("\nnonroot:x:65532:")) {
        diffs.push(format!("{name}: /etc/group lacks nonroot (65532)"));
    }
    if !image
        .files
        .get("/tmp")
        .is_some_and(|e| e.kind.is_dir() && e.mode & 0o7777 == 0o1777)
    {
        diffs.push(format!("{name}: no /tmp with mode 1777"));
    }
    if !image
        .files
        .get("/home/nonroot")
        .is_some_and(|e| e.kind.is_dir() && e.uid == 65532)
    {
        diffs.push(format!("{name}: no /home/nonroot owned by 65532"));
    }
    if !text("/etc/ssl/certs/ca-certificates.crt").is_some_and(|t| t.contains("BEGIN CERTIFICATE"))
    {
        diffs.push(format!(
            "{name}: no CA certificates at /etc/ssl/certs/ca-certificates.crt"
        ));
    }
    for shell in ["/bin/sh", "/usr/bin/sh", "/bin/bash"] {
        if image.files.contains_key(shell) {
            diffs.push(format!("{name}: the image has a shell ({shell})"));
        }
    }
    diffs
}

fn profile() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}

/// Kubernetes' pause Dockerfile, from the module cache `hack/tools.sh k8s` fills.
fn pause_dockerfile() -> PathBuf {
    let versions = std::fs::read_to_string(repo_root().join("hack/versions.env")).unwrap();
    let k8s = versions
        .lines()
        .find_map(|l| l.strip_prefix("K8S_VERSION="))
        .expect("K8S_VERSION in hack/versions.env");
    let out = Command::new("go")
        .args(["env", "GOMODCACHE"])
        .output()
        .unwrap();
    let modcache = String::from_utf8(out.stdout).unwrap();
    PathBuf::from(modcache.trim()).join(format!("k8s.io/kubernetes@{k8s}/build/pause/Dockerfile"))
}

#[test]
fn script_images_match_the_dockerfiles() {
    let root = repo_root();
    // Fail here, not inside the script's cargo build (which would wait for this test's cargo lock).
    let binaries = [
        "shop-operator",
        "shop-registry",
        "shop-gateway",
        "shop-product",
    ];
    let binaries = binaries
        .iter()
        .chain(&["shop-inventory", "shop-order", "shop-notification"]);
    for b in binaries {
        binary_path(b);
    }
    let list = build_and_list();

    let mut diffs = Vec::new();
    let mut seen = Vec::new();
    // Per Dockerfile: its EXTRA_LIBS, and the union of what its binaries need beyond the base. One
    // service Dockerfile serves six binaries, so it copies what any of them needs, and nothing else.
    let mut extras: BTreeMap<PathBuf, (BTreeSet<String>, BTreeSet<String>)> = BTreeMap::new();
    for line in list.lines() {
        let mut cols = line.split('\t');
        let (name, reference, archive) = (
            cols.next().unwrap(),
            cols.next().unwrap(),
            cols.next().unwrap(),
        );
        if name.starts_with("store-") {
            // No Dockerfile: on kind a Shop's stores pull the public images (see below).
            continue;
        }
        let image = read_archive(Path::new(archive));
        let (dockerfile, binary) = match name {
            // hack/images.sh keeps the pause binary it compiled beside the archives.
            "pause" => (
                pause_dockerfile(),
                Path::new(archive).with_file_name("bin/pause"),
            ),
            "shop-operator" => (root.join("docker/operator.Dockerfile"), binary_path(name)),
            _ => (root.join("docker/service.Dockerfile"), binary_path(name)),
        };
        let text = std::fs::read_to_string(&dockerfile)
            .unwrap_or_else(|e| panic!("cannot read {}: {e}", dockerfile.display()));
        let df = parse_dockerfile(&text);
        let (found, beyond_base) = compare(name, reference, &image, &df, &binary);
        diffs.extend(found);
        let entry = extras
            .entry(dockerfile)
            .or_insert_with(|| (extra_libs(&df), BTreeSet::new()));
        entry.1.extend(beyond_base);
        if name != "pause" {
            diffs.extend(base_files(name, &image));
        }
        seen.push(name.to_string());
    }
    assert_eq!(
        seen,
        [
            "shop-operator",
            "shop-registry",
            "shop-gateway",
            "shop-product",
            "shop-inventory",
            "shop-order",
            "shop-notification",
            "pause"
        ],
        "hack/images.sh list"
    );
    for (dockerfile, (extra, needed)) in &extras {
        if extra != needed {
            diffs.push(format!(
                "{}: EXTRA_LIBS {extra:?}, but its binaries need {needed:?} beyond the base",
                dockerfile.display()
            ));
        }
    }
    assert!(
        diffs.is_empty(),
        "the two image recipes differ:\n{}",
        diffs.join("\n")
    );
}

/// The parser reads what the comparison relies on, so a Dockerfile change cannot slip past it.
#[test]
fn dockerfile_parser_reads_the_runtime_stage() {
    let df = parse_dockerfile(
        r#"# syntax=docker/dockerfile:1.7
ARG RUST_VERSION=1.95
FROM rust:${RUST_VERSION}-bookworm AS build
ARG EXTRA_LIBS="libz.so.1 libfoo.so.2"
USER builder
ENV CARGO=1
RUN echo a \
 && echo b
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/app \
  /usr/local/bin/app
USER 65532:65532
ENV A=1 B=2
ENV C 3
ENTRYPOINT ["/usr/local/bin/app"]
CMD ["run", "--x"]
"#,
    );
    assert_eq!(df.from, "gcr.io/distroless/cc-debian12:nonroot");
    assert_eq!(df.args["EXTRA_LIBS"], "libz.so.1 libfoo.so.2");
    assert_eq!(df.user.as_deref(), Some("65532:65532"));
    assert_eq!(df.env, ["A=1", "B=2", "C=3"]);
    assert_eq!(df.copies, ["/usr/local/bin/app"]);
    assert_eq!(df.entrypoint.unwrap(), ["/usr/local/bin/app"]);
    assert_eq!(df.cmd.unwrap(), ["run", "--x"]);
}

/// The local store images (a Shop's managed stores on the real node) keep the operator's
/// contract: the uid the StatefulSet runs them as, an executable entrypoint, the data directory
/// writable by that uid, and no shell.
#[test]
fn store_images_run_as_the_operators_uid_with_their_entrypoint_and_no_shell() {
    use shop_operator::stores::Store;
    let list = build_and_list();
    let mut problems = Vec::new();
    for store in Store::ALL {
        let name = match store {
            Store::Mysql => "store-mariadb",
            Store::Mongodb => "store-ferretdb",
            Store::Kafka => "store-kafka",
            Store::Zipkin => "store-zipkin",
        };
        let line = list
            .lines()
            .find(|l| l.starts_with(&format!("{name}\t")))
            .unwrap_or_else(|| panic!("hack/images.sh list has no {name}"));
        let archive = line.split('\t').nth(2).unwrap();
        let image = read_archive(Path::new(archive));
        let config = &image.config["config"];
        let uid = store.run_as();
        let user = config["User"].as_str().unwrap_or_default();
        if user != format!("{uid}:{uid}") {
            problems.push(format!(
                "{name}: user {user:?}, the operator runs it as {uid}"
            ));
        }
        let entry = strings(&config["Entrypoint"]).unwrap_or_default();
        match entry.first().and_then(|e| image.files.get(e.as_str())) {
            Some(f) if f.mode & 0o111 != 0 => {}
            _ => problems.push(format!(
                "{name}: entrypoint {entry:?} is not an executable file"
            )),
        }
        for shell in ["/bin/sh", "/bin/bash", "/usr/bin/sh", "/usr/bin/bash"] {
            if image.files.contains_key(shell) {
                problems.push(format!("{name}: has a shell ({shell})"));
            }
        }
        if let Some(path) = store.data_path() {
            match image.files.get(path) {
                Some(d) if d.uid == uid as u64 => {}
                other => problems.push(format!(
                    "{name}: data directory {path} not owned by {uid}: {:?}",
                    other.map(|d| d.uid)
                )),
            }
        }
        let passwd = image
            .files
            .get("/etc/passwd")
            .map(|f| String::from_utf8_lossy(&f.data).into_owned())
            .unwrap_or_default();
        if !passwd
            .lines()
            .any(|l| l.split(':').nth(2) == Some(&uid.to_string()))
        {
            problems.push(format!("{name}: /etc/passwd has no user {uid}"));
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

/// Runs `hack/images.sh build` (unchanged images are kept) and returns `hack/images.sh list`.
fn build_and_list() -> String {
    let script = repo_root().join("hack/images.sh");
    let status = Command::new(&script)
        .args(["build", profile()])
        .status()
        .unwrap();
    assert!(
        status.success(),
        "hack/images.sh build {} failed",
        profile()
    );
    let list = Command::new(&script).arg("list").output().unwrap();
    assert!(list.status.success(), "hack/images.sh list failed");
    String::from_utf8(list.stdout).unwrap()
}
