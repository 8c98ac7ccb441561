//! Our real binaries as child processes of a test: start, wait until ready, stop.
//!
//! Tests of cross-service behaviour (registration, failover, breakers, restarts) need the real
//! executables, not in-process fakes. `make test` builds every binary before running tests; a test
//! that finds one missing says so and how to build it.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A port that was free a moment ago (bind to 0, read, release).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or_else(|e| panic!("no free port on 127.0.0.1: {e}"))
}

/// Path of a workspace binary in the target dir of the current profile.
pub fn binary_path(name: &str) -> PathBuf {
    let target = std::env::var("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|_| crate::stack::repo_root().join("target"));
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    };
    let path = target.join(profile).join(name);
    assert!(
        path.exists(),
        "binary {} is not built: run `cargo build --workspace --bins` (make test does this first)",
        path.display()
    );
    path
}

/// A running service process; SIGTERM then SIGKILL on drop.
pub struct Service {
    name: String,
    port: u16,
    child: Option<Child>,
}

impl Service {
    /// Starts `bin` with `args` and extra `envs`, listening on `port`, and waits up to 30 s for
    /// `GET /health/ready` to answer 200. Logs go to the test's stderr, prefixed by nothing, so
    /// a failing test shows them.
    pub async fn spawn(bin: &str, args: &[&str], envs: &[(&str, &str)], port: u16) -> Service {
        Service::start(bin, args, envs, port).ready(bin).await
    }

    /// Like [`Service::spawn`], but the process's stdout and stderr go to the file `log` (created
    /// or truncated), so a test can read them afterwards, e.g. to look for a panic.
    pub async fn spawn_logged(
        bin: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        port: u16,
        log: &std::path::Path,
    ) -> Service {
        let out = std::fs::File::create(log)
            .unwrap_or_else(|e| panic!("cannot create the log file {}: {e}", log.display()));
        let err = out
            .try_clone()
            .unwrap_or_else(|e| panic!("cannot share the log file {}: {e}", log.display()));
        Service::start_with(bin, args, envs, port, out.into(), err.into())
            .ready(bin)
            .await
    }

    /// Waits up to 30 s for `GET /health/ready` to answer 200; panics when the process exits first.
    async fn ready(self, bin: &str) -> Service {
        let mut svc = self;
        let port = svc.port;
        let url = format!("{}/health/ready", svc.base_url());
        let client = reqwest::Client::new();
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            // A process that exited (bad config, port taken) fails the test at once, not after 30 s.
            if let Some(status) = svc.child.as_mut().and_then(|c| c.try_wait().ok().flatten()) {
                panic!(
                    "{bin} on port {port} exited before becoming ready ({status}); its log is above \
                     (or in its log file)"
                );
            }
            if matches!(client.get(&url).timeout(Duration::from_secs(1)).send().await,
                Ok(r) if r.status().is_success())
            {
                break;
            }
            if std::time::Instant::now() >= deadline {
                panic!("{bin} on port {port} did not become ready within 30 s");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        svc
    }

    /// Starts the process without waiting for readiness.
    pub fn start(bin: &str, args: &[&str], envs: &[(&str, &str)], port: u16) -> Service {
        Service::start_with(bin, args, envs, port, Stdio::inherit(), Stdio::inherit())
    }

    fn start_with(
        bin: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        port: u16,
        stdout: Stdio,
        stderr: Stdio,
    ) -> Service {
        let path = binary_path(bin);
        let mut cmd = Command::new(&path);
        cmd.args(args)
            .env("SHOP_PORT", port.to_string())
            .env("SHOP_BIND", "127.0.0.1")
            .env("SHOP_LOG_FORMAT", "text")
            .stdin(Stdio::null())
            .stdout(stdout)
            .stderr(stderr);
        for (k, v) in envs {
            cmd.env(k, v);
        }
        let child = cmd
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", path.display()));
        Service {
            name: bin.to_string(),
            port,
            child: Some(child),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn base_url(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// How the process ended when it has (crashed, or was stopped), `None` while it runs.
    pub fn exit_status(&mut self) -> Option<std::process::ExitStatus> {
        self.child
            .as_mut()
            .and_then(|c| c.try_wait().ok().flatten())
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// Sends SIGTERM and waits up to `grace` for exit; returns whether it exited by itself.
    pub fn terminate_within(&mut self, grace: Duration) -> bool {
        let Some(mut child) = self.child.take() else {
            return true;
        };
        let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
        let deadline = std::time::Instant::now() + grace;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(_)) = child.try_wait() {
                return true;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = child.kill();
        let _ = child.wait();
        eprintln!(
            "{} did not exit within {grace:?} of SIGTERM; killed",
            self.name
        );
        false
    }

    /// Sends `sig` (SIGTERM to start a graceful shutdown, SIGSTOP/SIGCONT to freeze and resume:
    /// it keeps its port but answers nothing); panics when the process is gone.
    pub fn signal(&self, sig: Signal) {
        let pid = self
            .pid()
            .unwrap_or_else(|| panic!("{} is not running", self.name));
        kill(Pid::from_raw(pid as i32), sig)
            .unwrap_or_else(|e| panic!("kill -{sig} {} ({pid}): {e}", self.name));
    }

    /// SIGTERM with a 15 s grace period.
    pub fn terminate(&mut self) -> bool {
        self.terminate_within(Duration::from_secs(15))
    }

    /// SIGKILL: the process dies without any chance to clean up (deregister, flush).
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.terminate_within(Duration::from_secs(5));
    }
}
