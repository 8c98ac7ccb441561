//! Our real binaries as child processes of a test: start, wait until ready, stop.
//!
//! Tests of cross-service behaviour (registration, failover, breakers, restarts) need the real
//! executables, not in-process fakes. `make test` builds every binary before running tests; a test
//! that finds one missing says so and how to build it.
//!
//! Port 0 is the normal way to start one: the process binds a port the OS picks and writes it to
//! `SHOP_PORT_FILE` (see `shop_runtime::Runtime::listening`), which [`Service::launch`] reads. A
//! port chosen by the test with [`free_port`] is free only until the test lets go of it, so another
//! process can take it before the service binds; it is kept for ports that must be known before
//! the process starts (peers naming each other, a restart at the same address) and for servers
//! that are not ours.

use std::net::TcpListener;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// A port that was free a moment ago (bind to 0, read, release). Racy by nature: prefer port 0
/// with [`Service::spawn`]; use this only for a port that must be known before its server starts.
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
    /// Starts `bin` with `args` and extra `envs`, listening on `port` (0: a port the OS picks, read
    /// back from the process, see [`Service::launch`]), and waits up to 30 s for
    /// `GET /health/ready` to answer 200. Logs go to the test's stderr, prefixed by nothing, so
    /// a failing test shows them.
    pub async fn spawn(bin: &str, args: &[&str], envs: &[(&str, &str)], port: u16) -> Service {
        Service::launch(bin, args, envs, port)
            .await
            .ready(bin)
            .await
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
        let (mut svc, port_file) =
            Service::start_with(bin, args, envs, port, out.into(), err.into());
        if let Some(f) = port_file {
            svc.port = svc.bound_port(&f).await;
        }
        svc.ready(bin).await
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

    /// Starts the process without waiting for readiness. With `port` 0 it waits (up to 30 s, a
    /// few milliseconds in practice, sleeping on the tokio timer so the test's other tasks run)
    /// for the process to bind and write the port it got to `SHOP_PORT_FILE`, so
    /// [`Service::port`] is the real one; panics when the process exits first.
    pub async fn launch(bin: &str, args: &[&str], envs: &[(&str, &str)], port: u16) -> Service {
        let (mut svc, port_file) =
            Service::start_with(bin, args, envs, port, Stdio::inherit(), Stdio::inherit());
        if let Some(f) = port_file {
            svc.port = svc.bound_port(&f).await;
        }
        svc
    }

    /// [`Service::launch`] for a caller that is not async (a plain `fn` building a process at a
    /// port it chose, as the operator's helm test does). With `port` 0 it blocks the calling
    /// thread while it polls for the port file, which would stall a tokio worker: async tests
    /// use [`Service::launch`].
    pub fn start(bin: &str, args: &[&str], envs: &[(&str, &str)], port: u16) -> Service {
        let (mut svc, port_file) =
            Service::start_with(bin, args, envs, port, Stdio::inherit(), Stdio::inherit());
        if let Some(f) = port_file {
            svc.port = svc.bound_port_blocking(&f);
        }
        svc
    }

    /// Spawns the process; with `port` 0 also returns the file it will write its port to.
    fn start_with(
        bin: &str,
        args: &[&str],
        envs: &[(&str, &str)],
        port: u16,
        stdout: Stdio,
        stderr: Stdio,
    ) -> (Service, Option<PathBuf>) {
        let path = binary_path(bin);
        let port_file = (port == 0).then(|| {
            std::env::temp_dir().join(format!(
                "shop-port-{}-{}-{}",
                bin,
                std::process::id(),
                uuid::Uuid::new_v4().simple()
            ))
        });
        let mut cmd = Command::new(&path);
        if let Some(f) = &port_file {
            cmd.env("SHOP_PORT_FILE", f);
        }
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
        let svc = Service {
            name: bin.to_string(),
            port,
            child: Some(child),
        };
        (svc, port_file)
    }

    /// Waits for the port the process writes to `file` once it listens; removes the file.
    async fn bound_port(&mut self, file: &std::path::Path) -> u16 {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(port) = self.port_from(file) {
                return port;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            self.check_port_deadline(file, deadline);
        }
    }

    /// [`Service::bound_port`] for a caller without a runtime: sleeps the thread between looks.
    fn bound_port_blocking(&mut self, file: &std::path::Path) -> u16 {
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(port) = self.port_from(file) {
                return port;
            }
            std::thread::sleep(Duration::from_millis(5));
            self.check_port_deadline(file, deadline);
        }
    }

    /// The port in `file` once the process wrote it (the file is then removed); panics when the
    /// process exited instead.
    fn port_from(&mut self, file: &std::path::Path) -> Option<u16> {
        // The runtime renames a complete file into place, so what is there parses.
        if let Some(port) = std::fs::read_to_string(file)
            .ok()
            .and_then(|s| s.trim().parse::<u16>().ok())
        {
            let _ = std::fs::remove_file(file);
            return Some(port);
        }
        if let Some(status) = self.exit_status() {
            panic!(
                "{} exited before listening ({status}); its log is above (or in its log file)",
                self.name
            );
        }
        None
    }

    /// Panics, naming the file, once `deadline` passed without a port.
    fn check_port_deadline(&self, file: &std::path::Path, deadline: std::time::Instant) {
        if std::time::Instant::now() >= deadline {
            panic!(
                "{} did not write its port to {} within 30 s",
                self.name,
                file.display()
            );
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
