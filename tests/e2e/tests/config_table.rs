//! docs/configuration.md, the one table of every setting of every binary, is generated from the
//! binaries themselves: each option of `--help` with its environment variable, default and the
//! first line of its description. This test renders the table and fails when the committed file
//! differs; `SHOP_UPDATE_DOCS=1 cargo test -p shop-e2e --test config_table` rewrites it.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::Command;

use shop_testkit::{binary_path, repo_root};

/// Binaries and the subcommand whose options configure them.
const BINARIES: &[(&str, &[&str])] = &[
    ("shop-operator", &["run"]),
    ("shop-registry", &[]),
    ("shop-gateway", &[]),
    ("shop-product", &[]),
    ("shop-inventory", &[]),
    ("shop-order", &[]),
    ("shop-notification", &[]),
];

/// One option: (flag, env, default, description).
type Row = (String, String, String, String);

/// Takes `[env: X=]` and `[default: Y]` out of a help line (clap puts them on lines of their
/// own in the long layout, at the end of the line in the short one); returns what is left.
fn take_marks(text: &str, row: &mut Row) -> String {
    let mut rest = text.to_owned();
    for (mark, slot) in [("[env: ", 1), ("[default: ", 2)] {
        if let Some(at) = rest.find(mark) {
            let end = rest[at..].find(']').map_or(rest.len(), |e| at + e + 1);
            let value = rest[at + mark.len()..end - 1]
                .trim_end_matches('=')
                .to_owned();
            if slot == 1 {
                row.1 = value;
            } else {
                row.2 = value;
            }
            rest.replace_range(at..end, "");
        }
    }
    rest.trim().to_owned()
}

fn options(help: &str) -> Vec<Row> {
    let mut rows: Vec<Row> = Vec::new();
    let mut current: Option<Row> = None;
    for line in help.lines() {
        let t = line.trim();
        if line.starts_with("  -") || line.starts_with("      --") {
            rows.extend(current.take());
            // Short layout: "--flag <VALUE>  Description [env: X=] [default: Y]".
            let (flag_part, desc) = match t.find("  ") {
                Some(i) => (&t[..i], t[i..].trim()),
                None => (t, ""),
            };
            let flag = flag_part.split(" <").next().unwrap_or(flag_part).to_owned();
            let mut row = (flag, String::new(), String::new(), String::new());
            row.3 = take_marks(desc, &mut row).replace('|', "\\|");
            current = Some(row);
        } else if let Some(row) = current.as_mut() {
            let rest = take_marks(t, row);
            if row.3.is_empty() && !rest.is_empty() {
                row.3 = rest.replace('|', "\\|");
            }
        }
    }
    rows.extend(current);
    rows.retain(|r| r.0 != "-h, --help" && r.0 != "-V, --version");
    rows
}

fn render() -> String {
    let mut out = String::from(
        "# Configuration\n\nEvery setting of every binary, generated from their `--help` by \
         `tests/e2e/tests/config_table.rs` (a test fails when this file drifts; \
         `SHOP_UPDATE_DOCS=1 cargo test -p shop-e2e --test config_table` rewrites it). Each flag \
         can also be set through its environment variable; the operator sets the services' \
         variables from the Shop (docs/operator.md).\n",
    );
    for (bin, sub) in BINARIES {
        let out_cmd = Command::new(binary_path(bin))
            .args(*sub)
            .arg("--help")
            .output()
            .unwrap();
        assert!(out_cmd.status.success(), "{bin} --help failed");
        let help = String::from_utf8_lossy(&out_cmd.stdout);
        let title = if sub.is_empty() {
            format!("`{bin}`")
        } else {
            format!("`{bin} {}`", sub.join(" "))
        };
        out.push_str(&format!(
            "\n## {title}\n\n| environment | flag | default | what |\n|---|---|---|---|\n"
        ));
        for (flag, env, default, what) in options(&help) {
            let env = if env.is_empty() {
                "–".to_owned()
            } else {
                format!("`{env}`")
            };
            let default = if default.is_empty() {
                String::new()
            } else {
                format!("`{default}`")
            };
            out.push_str(&format!("| {env} | `{flag}` | {default} | {what} |\n"));
        }
    }
    out
}

#[test]
fn docs_configuration_md_is_the_table_the_binaries_describe() {
    let path = repo_root().join("docs/configuration.md");
    let want = render();
    if std::env::var_os("SHOP_UPDATE_DOCS").is_some() {
        std::fs::write(&path, &want).unwrap();
    }
    let have = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        have == want,
        "docs/configuration.md differs from the binaries' --help; run \
         `SHOP_UPDATE_DOCS=1 cargo test -p shop-e2e --test config_table`"
    );
}

#[test]
fn every_option_of_the_services_can_be_set_from_the_environment() {
    // Kubernetes configures pods through environment variables only: an option without one
    // could not be set by the operator or a user's `env:` override.
    for (bin, sub) in BINARIES {
        let help = Command::new(binary_path(bin))
            .args(*sub)
            .arg("--help")
            .output()
            .unwrap();
        let missing: Vec<String> = options(&String::from_utf8_lossy(&help.stdout))
            .into_iter()
            .filter(|r| r.1.is_empty())
            .map(|r| r.0)
            .collect();
        assert!(
            missing.is_empty(),
            "{bin}: options without an environment variable: {missing:?}"
        );
    }
}

#[test]
fn a_log_filter_that_does_not_parse_stops_every_binary_at_start_naming_rust_log() {
    // RUST_LOG is read like every other setting (it is in --help and the table): a typo in it
    // must not leave a service running with logging silently at its default.
    for (bin, _) in BINARIES {
        let mut cmd = Command::new(binary_path(bin));
        cmd.env("RUST_LOG", "shop=loud")
            .env("RUST_BACKTRACE", "0")
            .env("SHOP_PORT", "0")
            .env("SHOP_OPERATOR_ADMIN_ADDR", "127.0.0.1:0")
            // Required by inventory and order; never reached.
            .env("DATABASE_URL", "mysql://nobody@127.0.0.1:1/none")
            .stdin(std::process::Stdio::null());
        let mut child = cmd
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                panic!("{bin} kept running with RUST_LOG=shop=loud");
            }
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        let out = child.wait_with_output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{bin} exited 0 with a bad RUST_LOG");
        assert!(
            stderr.contains("RUST_LOG") && stderr.contains("shop=loud"),
            "{bin}: the error does not name RUST_LOG and the filter:\n{stderr}"
        );
    }
}
