//! Carries a [`Fault`] out on the real node and waits for the target to be whole again.
//!
//! A kill deletes one ready pod with grace period 0 through the API server (the kubelet kills its
//! containers at once). A pause stops every process of one ready pod with SIGSTOP from the host
//! (the node's containers are host processes, found by the pod's uid in their cgroup path under
//! the kubelet's cgroupfs driver) and continues them afterwards; the pod's sandbox (`pause`) is
//! left alone.

use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, DeleteParams, ListParams};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use shop_testkit::cluster::is_ready;

use crate::plan::Fault;

/// What happened to one fault.
#[derive(Debug, Clone)]
pub struct Injected {
    /// The fault.
    pub fault: Fault,
    /// The pod it hit.
    pub pod: String,
    /// When it was injected.
    pub at: Instant,
    /// From the injection until the target had as many ready pods as before (the victim
    /// replaced, or the paused pod continued); `None` when that did not happen in time.
    pub whole_after: Option<Duration>,
}

/// The pods of one Shop, by component label.
pub struct Pods {
    api: Api<Pod>,
    shop: String,
}

impl Pods {
    /// The pods of Shop `shop` in `namespace`.
    pub fn new(client: &kube::Client, namespace: &str, shop: &str) -> Self {
        Self {
            api: Api::namespaced(client.clone(), namespace),
            shop: shop.to_owned(),
        }
    }

    /// Ready pods of `target` that are not being deleted, sorted by name.
    pub async fn ready(&self, target: &str) -> anyhow::Result<Vec<Pod>> {
        let selector = shop_testkit::cluster::component_selector(&self.shop, target);
        let mut pods: Vec<Pod> = self
            .api
            .list(&ListParams::default().labels(&selector))
            .await
            .with_context(|| format!("listing the {target} pods"))?
            .items
            .into_iter()
            .filter(|p| is_ready(p) && p.metadata.deletion_timestamp.is_none())
            .collect();
        pods.sort_by(|a, b| a.metadata.name.cmp(&b.metadata.name));
        Ok(pods)
    }

    /// Injects `fault` and waits (up to `patience`) until the target is whole again.
    pub async fn inject(&self, fault: &Fault, patience: Duration) -> anyhow::Result<Injected> {
        let target = fault.target();
        let before = self.ready(target).await?;
        let Some(victim) = before.first() else {
            bail!("no ready {target} pod to hit (is the Shop Available?)");
        };
        let name = victim.metadata.name.clone().unwrap_or_default();
        let uid = victim.metadata.uid.clone().unwrap_or_default();
        let at = Instant::now();
        match fault {
            Fault::Kill(_) => {
                self.api
                    .delete(&name, &DeleteParams::default().grace_period(0))
                    .await
                    .with_context(|| format!("deleting pod {name}"))?;
            }
            Fault::Pause(_, how_long) => {
                let pids = pod_processes(&uid)?;
                if pids.is_empty() {
                    bail!("no process of pod {name} (uid {uid}) found under /proc");
                }
                signal_all(&pids, Signal::SIGSTOP);
                tokio::time::sleep(*how_long).await;
                signal_all(&pids, Signal::SIGCONT);
            }
        }
        let deadline = at + patience;
        let whole_after = loop {
            let now = self.ready(target).await.unwrap_or_default();
            let victim_gone = matches!(fault, Fault::Pause(..))
                || now.iter().all(|p| p.metadata.uid.as_deref() != Some(&uid));
            if victim_gone && now.len() >= before.len() {
                break Some(at.elapsed());
            }
            if Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        };
        Ok(Injected {
            fault: fault.clone(),
            pod: name,
            at,
            whole_after,
        })
    }
}

/// Host pids of the processes of the pod with `uid`, the sandbox's `pause` excepted.
fn pod_processes(uid: &str) -> anyhow::Result<Vec<Pid>> {
    // cgroupfs driver: /kubepods/<qos>/pod<uid>/<container>; the systemd driver writes the uid
    // with underscores (kubepods-<qos>-pod<uid_>.slice).
    let marks = [format!("pod{uid}"), format!("pod{}", uid.replace('-', "_"))];
    let mut pids = Vec::new();
    for entry in std::fs::read_dir("/proc").context("reading /proc")? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry
            .file_name()
            .to_str()
            .and_then(|s| s.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(cgroup) = std::fs::read_to_string(entry.path().join("cgroup")) else {
            continue;
        };
        if !marks.iter().any(|m| cgroup.contains(m.as_str())) {
            continue;
        }
        let comm = std::fs::read_to_string(entry.path().join("comm")).unwrap_or_default();
        if comm.trim() != "pause" {
            pids.push(Pid::from_raw(pid));
        }
    }
    Ok(pids)
}

fn signal_all(pids: &[Pid], signal: Signal) {
    for pid in pids {
        // A process that exited meanwhile is no error: the pod is what is being paused.
        let _ = kill(*pid, signal);
    }
}
