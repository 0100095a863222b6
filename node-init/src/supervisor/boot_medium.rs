//! The boot medium strand, on the head only: the worker that looks for the
//! ISO 9660 medium the head booted from (the images omboot serves, and
//! maybe a system layer), mounts it at [`media::MEDIA_DIR`], and prepares
//! the shared tree the head serves.
//!
//! Its agent does not wait for the medium forever: after
//! [`MEDIA_PATIENCE`] it starts on the initramfs while the search goes on
//! for omboot.

use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::{notify, spawn_worker, Event, Supervisor};
use crate::{media, storage};

/// How long the head looks for its boot medium before its agent starts on
/// the initramfs (the search goes on, for omboot).
pub(super) const MEDIA_PATIENCE: Duration = Duration::from_secs(30);

impl Supervisor {
    /// The medium search worker, started with the loop on the head.
    pub(super) fn start_media(&self) {
        let tx = self.tx.clone();
        let share = self.settings.share.clone();
        spawn_worker("media", "boot medium search", move || {
            find_media(share.as_ref(), &tx)
        });
    }
}

/// The media thread: looks for the boot medium every 3 s until it is
/// mounted, then prepares the shared tree (`share` is `om.share=`) and
/// tells the loop.
fn find_media(share: Option<&contracts::share::Share>, tx: &mpsc::Sender<Event>) {
    // Block drivers load in the network thread's module pass; give them a
    // few rounds before complaining.
    let started = Instant::now();
    let mut told = false;
    for attempt in 1.. {
        match media::mount_media() {
            Ok(dev) => {
                say!(
                    "boot medium {} mounted on {}",
                    dev.display(),
                    media::MEDIA_DIR
                );
                let tree = head_tree(share);
                let _ = notify(tx, Event::MediaReady { tree });
                return;
            }
            Err(e) => {
                if attempt == 3 || attempt % 20 == 0 {
                    say!("{e}; still looking");
                }
                if !told && started.elapsed() > MEDIA_PATIENCE {
                    say!(
                        "no boot medium in {}s: the agent starts from the initramfs; still looking",
                        MEDIA_PATIENCE.as_secs()
                    );
                    told = notify(tx, Event::NoMediaYet).is_ok();
                }
                std::thread::sleep(Duration::from_secs(3));
            }
        }
    }
}

/// The tree a head's omboot serves: the NFS server `om.share=` names,
/// nothing for `om.share=off`, else its own at `/cluster` on the
/// `OMCLUSTER` partition or tmpfs (the console says which). Runs after the
/// boot medium is found, so the disk drivers are loaded.
fn head_tree(share: Option<&contracts::share::Share>) -> Option<String> {
    use contracts::share::{Share, MOUNT_POINT};
    match share {
        Some(Share::Off) => None,
        Some(nfs @ Share::Nfs(_)) => Some(nfs.to_string()),
        None => match storage::prepare() {
            Ok(storage) => {
                say!("shared tree {MOUNT_POINT} on {storage}");
                Some(MOUNT_POINT.to_string())
            }
            Err(e) => {
                say!("{e}; not serving a shared tree");
                None
            }
        },
    }
}
