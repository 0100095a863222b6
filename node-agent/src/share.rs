//! The shared tree at `/cluster` as this agent sees it: what should be
//! there (`--share`, from `omnode init`), what is mounted, whether its
//! server answers, its size and free space. The view rides in the load
//! vector, so `omctl df` lists every node's and `omctl status` flags a node
//! that lost its mount.
//!
//! A `statvfs` of an NFS mount whose server is gone blocks in the kernel
//! (the mount is `hard` on purpose: jobs wait, they do not fail). So the
//! probe runs on a thread of its own ([`Probe`]), never on the runtime; a
//! sample older than [`STALE`] means the server is not answering.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use contracts::share::{find_mount, MOUNT_POINT};

/// How often the probe looks.
pub const PERIOD: Duration = Duration::from_secs(5);
/// A sample older than this means `statvfs` is stuck: the server does not
/// answer.
pub const STALE: Duration = Duration::from_secs(15);

pub use agent_control::ShareView;

/// One look at the tree: mounted source and `(size, free)` in KiB.
#[derive(Debug, Clone, Default)]
struct Sample {
    mounted: Option<String>,
    space: Option<(u64, u64)>,
}

fn sample() -> Sample {
    let mounted = std::fs::read_to_string("/proc/self/mounts")
        .ok()
        .and_then(|m| find_mount(&m))
        .map(|(source, fstype)| format!("{source} ({fstype})"));
    let space = mounted.as_ref().and_then(|_| {
        let st = nix::sys::statvfs::statvfs(MOUNT_POINT).ok()?;
        let frag = st.fragment_size().max(1) as u64;
        Some((
            st.blocks() as u64 * frag / 1024,
            st.blocks_available() as u64 * frag / 1024,
        ))
    });
    Sample { mounted, space }
}

/// The probe thread and its last sample. Dropping it tells the thread to
/// end after its current look (a look stuck on a dead server ends with
/// the process).
#[derive(Debug)]
pub struct Probe {
    expected: Option<String>,
    last: Arc<Mutex<(Sample, Instant)>>,
    stop: Arc<AtomicBool>,
}

impl Probe {
    /// Starts the probe; `expected` is what `--share` named.
    pub fn start(expected: Option<String>) -> std::io::Result<Probe> {
        let last = Arc::new(Mutex::new((sample(), Instant::now())));
        let stop = Arc::new(AtomicBool::new(false));
        let (slot, flag) = (last.clone(), stop.clone());
        std::thread::Builder::new()
            .name("share-probe".into())
            .spawn(move || {
                while !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(PERIOD);
                    let s = sample();
                    if let Ok(mut l) = slot.lock() {
                        *l = (s, Instant::now());
                    }
                }
            })?;
        Ok(Probe {
            expected,
            last,
            stop,
        })
    }

    /// The view now; `None` when nothing is expected or mounted.
    pub fn view(&self) -> Option<ShareView> {
        let (s, at) = self.last.lock().ok()?.clone();
        if self.expected.is_none() && s.mounted.is_none() {
            return None;
        }
        let (size_kib, free_kib) = s.space.unwrap_or((0, 0));
        Some(ShareView {
            expected: self.expected.clone(),
            responding: s.mounted.is_none() || (s.space.is_some() && at.elapsed() < STALE),
            mounted: s.mounted,
            size_kib,
            free_kib,
        })
    }
}

impl Drop for Probe {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
