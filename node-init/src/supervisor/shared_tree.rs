//! The shared tree strand: the NFS tree `om.share=` names (or the head
//! announced), mounted at `/cluster` by a worker that keeps trying, then
//! the head's users and groups installed so its files show their owners.
//!
//! The agent waits for the tree, but not forever: after
//! [`SHARE_PATIENCE`] it starts without it while the mount goes on.

use std::net::Ipv4Addr;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use contracts::share::MOUNT_POINT;

use super::{notify, spawn_worker, Event, Supervisor};
use crate::share;

/// How long the agent waits for the shared tree before it starts without
/// it (the mount goes on being tried).
const SHARE_PATIENCE: Duration = Duration::from_secs(60);

impl Supervisor {
    /// Once the network is up: the shared tree `om.share=` names, mounted by
    /// a worker thread that keeps trying.
    pub(super) fn start_share(&mut self) {
        // Heard from the head once it announces itself; mounted in the
        // root the machine keeps (the system layer's, once it is in).
        if self.share_settled.is_some()
            || self.looking_for_head()
            || self.system_settled != Some(true)
        {
            return;
        }
        let share = match (&self.settings.share, &self.net) {
            (Some(contracts::share::Share::Nfs(n)), Some(net)) => (n.clone(), net.address),
            (Some(contracts::share::Share::Off), _) => {
                say!("om.share=off: no shared tree at {MOUNT_POINT}");
                self.share_settled = Some(true);
                return;
            }
            _ => {
                self.share_settled = Some(true);
                return;
            }
        };
        self.share_settled = Some(false);
        let (tx, server, port) = (
            self.tx.clone(),
            self.settings.server,
            self.settings.http_port,
        );
        spawn_worker("share", "shared tree mount", move || {
            mount_share(&share.0, share.1, server, port, &tx)
        });
    }
}

/// The share thread: mounts `share` at `/cluster` (retrying every 3 s),
/// installs the head's users and groups from `server`, and tells the loop;
/// after [`SHARE_PATIENCE`] of failures it tells the loop anyway and keeps
/// trying.
fn mount_share(
    share: &contracts::share::NfsShare,
    client: Ipv4Addr,
    server: Option<Ipv4Addr>,
    http_port: u16,
    tx: &mpsc::Sender<Event>,
) {
    say!("mounting {MOUNT_POINT} from {share}");
    let started = Instant::now();
    let mut settled = false;
    for attempt in 1u32.. {
        match share::mount(share, client) {
            Ok(()) => break,
            Err(e) => {
                if attempt == 1 || attempt % 20 == 0 {
                    say!("{e}; retrying every 3s");
                }
                if !settled && started.elapsed() > SHARE_PATIENCE {
                    say!("starting the agent without {MOUNT_POINT}; still trying to mount it");
                    settled = notify(tx, Event::ShareSettled).is_ok();
                }
                std::thread::sleep(Duration::from_secs(3));
            }
        }
    }
    say!(
        "mounted {MOUNT_POINT} from {share} in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    if let Some(server) = server {
        install_head_accounts(server, http_port);
    }
    if !settled {
        let _ = notify(tx, Event::ShareSettled);
    }
}

/// Installs the users and groups of the head at `server` (its HTTP port
/// `http_port`), so the tree's files show their owners' names; says on the
/// console how it went.
fn install_head_accounts(server: Ipv4Addr, http_port: u16) {
    match share::install_accounts(server, http_port) {
        Ok(hidden) if hidden.is_empty() => say!("users and groups installed from the head"),
        Ok(hidden) => say!(
            "users and groups installed from the head; its numbers hide this node's {}",
            hidden.join(", ")
        ),
        Err(e) => say!("{e}; {MOUNT_POINT} shows numeric owners"),
    }
}
