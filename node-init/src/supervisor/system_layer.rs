//! The system layer strand: which layer the machine mounts (the head's NFS
//! export that `om.system=` names, or the layer file on the head's boot
//! medium), the worker that mounts it, and PID 1's move into it.
//!
//! While the layer is being had the root is not settled: the shared tree
//! and the agent wait, so they start in the root the machine keeps.

use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::services::console_shell;
use super::{notify, spawn_worker, Event, Supervisor};
use crate::system;

/// How long a machine keeps trying to mount its system layer before it
/// carries on from the initramfs.
const SYSTEM_PATIENCE: Duration = Duration::from_secs(60);

impl Supervisor {
    /// Once the network is up (on the head: once its medium is found, or
    /// not found in time): the system layer, mounted by a worker that
    /// keeps trying for [`SYSTEM_PATIENCE`]. `medium` is the head's
    /// medium's layer file. Without a layer the root is settled at once.
    pub(super) fn start_system(&mut self, medium: Option<PathBuf>) {
        if self.system_settled.is_some() {
            return;
        }
        let Some(source) = self.layer_source(medium) else {
            self.system_settled = Some(true);
            // The root is settled: the tree may be mounted in it.
            self.start_share();
            return;
        };
        self.system_settled = Some(false);
        let tx = self.tx.clone();
        spawn_worker("system", "system layer mount", move || {
            mount_layer(source, &tx)
        });
    }

    /// The layer this machine mounts: the NFS export `om.system=` names
    /// (once the address is known), else the head's `medium` file; none
    /// for `om.system=off` (said on the console) or when there is neither.
    fn layer_source(&self, medium: Option<PathBuf>) -> Option<system::LayerSource> {
        use contracts::share::Share;
        match (&self.settings.system, &self.net, medium) {
            (Some(Share::Off), _, _) => {
                say!("om.system=off: the initramfs stays the root");
                None
            }
            (Some(Share::Nfs(export)), Some(net), _) => Some(system::LayerSource::Nfs {
                export: export.clone(),
                client: net.address,
            }),
            (None, _, Some(file)) => Some(system::LayerSource::File(file)),
            _ => None,
        }
    }

    /// The system layer is mounted (or not): PID 1 moves into it, and the
    /// console shells restart there. Any failure leaves the initramfs as
    /// the root, said on the console.
    pub(super) fn enter_layer(&mut self, mounted: Result<system::LayerSource, String>) {
        self.system_settled = Some(true);
        let source = match mounted {
            Ok(source) => source,
            Err(e) => {
                say!("{e}; staying on the initramfs (its shell and agent run, the layer's programs do not)");
                return;
            }
        };
        match system::switch_root() {
            Ok(()) => {
                say!("running from the system layer {source} (read-only, writes in RAM; the initramfs at {})", system::INITRAMFS_DIR);
                library_cache();
                self.services
                    .restart_ttys(vec![console_shell().into()]);
            }
            Err(e) => say!(
                "cannot move into the system layer: {e}; staying on the initramfs (its shell and agent run)"
            ),
        }
    }
}

/// Makes `/etc/ld.so.cache` with the layer's own `ldconfig`, as dpkg's
/// trigger would have on a Debian machine: the builder cannot run it (it
/// would need root to chroot), and the merged root (layer and initramfs) is
/// only whole here. Programs run without the cache too (the loader's
/// default folders hold Debian's libraries); folders added by
/// `ld.so.conf.d` need it.
fn library_cache() {
    const LDCONFIG: &str = "/sbin/ldconfig";
    if !Path::new(LDCONFIG).is_file() {
        return;
    }
    let started = Instant::now();
    // Waited for here, in the loop's thread: the reaper only reaps when the
    // loop asks, so this child's status is not taken from under it.
    match std::process::Command::new(LDCONFIG)
        .stdin(std::process::Stdio::null())
        .status()
    {
        Ok(s) if s.success() => say!(
            "library cache /etc/ld.so.cache made by {LDCONFIG} in {:.1}s",
            started.elapsed().as_secs_f64()
        ),
        Ok(s) => say!("{LDCONFIG} {s}; programs find their libraries without the cache"),
        Err(e) => {
            say!("cannot run {LDCONFIG}: {e}; programs find their libraries without the cache")
        }
    }
}

/// The system layer thread: mounts the layer at `source` (retrying every
/// 3 s for [`SYSTEM_PATIENCE`]) and tells the loop how it went.
fn mount_layer(source: system::LayerSource, tx: &mpsc::Sender<Event>) {
    say!("mounting the system layer {source}");
    let started = Instant::now();
    let mut last = String::new();
    let outcome = loop {
        match system::mount_layer(&source) {
            Ok(()) => {
                say!(
                    "system layer {source} mounted in {:.1}s",
                    started.elapsed().as_secs_f64()
                );
                break Ok(source);
            }
            Err(e) if started.elapsed() < SYSTEM_PATIENCE => {
                // Each new reason once, not every 3 s.
                let why = e.to_string();
                if why != last {
                    say!(
                        "system layer {source}: {why}; retrying every 3s for {}s",
                        SYSTEM_PATIENCE.as_secs()
                    );
                    last = why;
                }
                std::thread::sleep(Duration::from_secs(3));
            }
            Err(e) => break Err(format!("cannot mount the system layer {source}: {e}")),
        }
    };
    let _ = notify(tx, Event::LayerMounted(outcome));
}
