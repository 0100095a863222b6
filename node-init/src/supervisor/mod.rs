//! PID 1's supervisor: the boot after the early mounts, and the loop PID 1
//! runs forever.
//!
//! [`run`] takes the first steps in order ([`early`]), then hands over to
//! the [`Supervisor`]'s loop: each turn starts the supervised processes that
//! are due, waits for a signal or the next restart, reaps children, and
//! handles what the worker threads report on the one [`Event`] channel.
//! Every event may unblock the next strand of the boot, so after each one
//! the loop checks whether the agent or the head's omboot may start.
//!
//! The strands of the boot run in worker threads, because each can wait
//! for minutes (a DHCP lease, an NFS server, an admission) while the loop
//! must keep reaping. Each strand lives in its own file, with the
//! `Supervisor` methods that start it and the thread that does the work:
//!
//! - [`early`]: before the loop: the hello line, the `om.*` settings, the
//!   modules CRIU needs;
//! - [`system_layer`]: the image's system layer, mounted and moved into;
//! - [`cluster_key`]: the cluster key: given, fetched, made fresh on the
//!   head, or granted by the head's admission (heard announcing itself
//!   when nothing names it);
//! - [`shared_tree`]: the shared tree at `/cluster` and the head's users;
//! - [`boot_medium`]: on the head, the boot medium and the tree it serves;
//! - [`services`]: the supervised processes: the console shells, the agent
//!   and the head's `omboot serve`.
//!
//! The network thread is started here ([`crate::network`] does the work).
//!
//! Architecture Invariant: the strand modules import from this file (the
//! [`Supervisor`], [`Event`], [`notify`], [`spawn_worker`]) and from no
//! other strand but [`services`] (the console's shell, for
//! [`system_layer`]); this file imports only [`early`], and drives the
//! strands through the `Supervisor` methods they define.

use std::path::Path;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::{address, cmdline, media, network, power, reaper, system, PowerAction};

mod boot_medium;
mod cluster_key;
mod early;
mod services;
mod shared_tree;
mod system_layer;

/// Boots the machine as PID 1 with the settings from the kernel command
/// line in `cmdline` (a file), then loops forever.
pub(crate) fn run(cmdline: &Path) -> ! {
    let mount_failures = crate::mounts::mount_early();
    let _ = crate::console::setup_stdio();
    // Before any thread exists, so every thread inherits the blocked mask.
    reaper::take_over_signals();
    early::say_hello(&mount_failures);
    let settings = early::read_settings(cmdline);
    if let Err(e) = crate::netif::set_up("lo") {
        say!("{e}");
    }
    early::load_criu_modules();

    let mut sup = Supervisor::new(settings);
    sup.main_loop()
}

/// Events from the worker threads.
#[derive(Debug)]
enum Event {
    Net(network::NetEvent),
    KeyReady,
    /// The head's boot medium is mounted; `tree` is the shared tree its
    /// omboot serves (`/cluster` or an NFS URL), if any.
    MediaReady {
        tree: Option<String>,
    },
    /// The shared tree is mounted, or the agent should start without it.
    ShareSettled,
    /// The system layer is mounted at [`system::NEW_ROOT`] (`Ok`), or could
    /// not be had (`Err`, the console line).
    LayerMounted(Result<system::LayerSource, String>),
    /// The head found no boot medium in its first
    /// [`boot_medium::MEDIA_PATIENCE`]: its agent starts on the initramfs
    /// (the search goes on for omboot).
    NoMediaYet,
    /// A head announced itself (no `om.server=` named one).
    HeadFound(contracts::announce::Announcement),
}

/// Hands `event` to PID 1's loop and wakes it from its signal wait. Fails
/// only when the loop is gone.
fn notify(tx: &mpsc::Sender<Event>, event: Event) -> Result<(), mpsc::SendError<Event>> {
    tx.send(event)?;
    reaper::wake();
    Ok(())
}

/// Starts a worker thread called `name`; `what` names its job in the
/// console line if it cannot start.
fn spawn_worker(name: &str, what: &str, work: impl FnOnce() + Send + 'static) {
    let spawned = std::thread::Builder::new().name(name.into()).spawn(work);
    if let Err(e) = spawned {
        say!("cannot start the {what}: {e}");
    }
}

/// PID 1's state: the supervised processes, the channel the workers report
/// on, and how far each strand of the boot has got.
struct Supervisor {
    settings: cmdline::Settings,
    services: reaper::Services,
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    hostname: Option<String>,
    /// The address PID 1 heard of first: the agent talks on its interface
    /// and the head serves on it.
    net: Option<address::IfAddress>,
    key_ready: bool,
    key_started: bool,
    media_ready: bool,
    /// On the head: the shared tree omboot serves (`--share`).
    tree: Option<String>,
    /// `None` until the network is up; then whether the agent may start as
    /// far as the shared tree goes.
    share_settled: Option<bool>,
    /// `None` until known whether there is a system layer; then whether the
    /// root is settled (the layer's, or the initramfs for good).
    system_settled: Option<bool>,
}

impl Supervisor {
    fn new(settings: cmdline::Settings) -> Self {
        let (tx, rx) = mpsc::channel();
        Supervisor {
            settings,
            services: reaper::Services::default(),
            tx,
            rx,
            hostname: None,
            net: None,
            key_ready: false,
            key_started: false,
            media_ready: false,
            tree: None,
            share_settled: None,
            system_settled: None,
        }
    }

    fn main_loop(&mut self) -> ! {
        self.start_shells();
        self.start_network();
        if self.settings.role == cmdline::Role::Head {
            self.start_media();
        }
        loop {
            // A panic here would end PID 1 and panic the kernel: report it
            // (the panic hook already printed the message) and go on.
            let turn = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.turn()));
            if turn.is_err() {
                say!("internal error in the init loop (see above); carrying on");
            }
        }
    }

    /// Starts the network thread, and a thread forwarding its events into
    /// the one channel the loop reads.
    fn start_network(&self) {
        let (net_tx, net_rx) = mpsc::channel();
        network::start(self.settings.clone(), net_tx);
        let tx = self.tx.clone();
        let _ = std::thread::Builder::new()
            .name("net-events".into())
            .spawn(move || {
                for ev in net_rx {
                    if notify(&tx, Event::Net(ev)).is_err() {
                        break;
                    }
                }
            });
    }

    /// One turn of the loop: start what is due, wait for a signal or the
    /// next deadline, handle the signal and the queued events.
    fn turn(&mut self) {
        self.services.start_due(Instant::now());
        let timeout = self
            .services
            .next_deadline()
            .map(|d| d.saturating_duration_since(Instant::now()))
            .unwrap_or(Duration::from_secs(60))
            .min(Duration::from_secs(60));
        if let Some(sig) = reaper::wait_signal(timeout) {
            self.on_signal(sig);
        }
        while let Ok(ev) = self.rx.try_recv() {
            self.on_event(ev);
        }
    }

    fn on_signal(&mut self, sig: libc::c_int) {
        if sig == libc::SIGCHLD {
            let now = Instant::now();
            for (pid, status) in reaper::reap() {
                if !self.services.exited(pid, &status, now) {
                    tracing::debug!(pid = pid.as_raw(), status = %reaper::describe(&status), "reaped orphan");
                }
            }
            return;
        }
        let action = nix::sys::signal::Signal::try_from(sig)
            .ok()
            .and_then(PowerAction::from_signal);
        if let Some(action) = action {
            power::shutdown(action, &self.services.tty_pids());
        }
    }

    /// Moves each strand of the boot on by what a worker reported, then
    /// starts the agent and the head's omboot if they are now due.
    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Net(network::NetEvent::Up { address, hostname }) => {
                self.network_up(address, hostname)
            }
            Event::KeyReady => {
                self.key_ready = true;
            }
            Event::MediaReady { tree } => {
                self.media_ready = true;
                self.tree = tree;
                let layer = Path::new(media::MEDIA_DIR).join(contracts::image::SYSTEM_LAYER);
                self.start_system(layer.is_file().then_some(layer));
            }
            Event::NoMediaYet => self.start_system(None),
            Event::ShareSettled => {
                self.share_settled = Some(true);
            }
            Event::LayerMounted(mounted) => {
                self.enter_layer(mounted);
                self.start_share();
            }
            Event::HeadFound(head) => self.found_head(head),
        }
        self.maybe_start_omboot();
        self.maybe_start_agent();
    }

    /// The network is up on `address`: the first time, the strands that
    /// wait for it start (the key, the system layer on a node or where
    /// `om.system=` names one, the shared tree).
    fn network_up(&mut self, address: address::IfAddress, hostname: String) {
        tracing::info!(iface = %address.iface, address = %address.address, %hostname, "network up");
        if self.hostname.is_none() {
            self.hostname = Some(hostname);
            self.net = Some(address);
            self.start_key();
            if self.settings.role == cmdline::Role::Node || self.settings.system.is_some() {
                self.start_system(None);
            }
            self.start_share();
        }
    }
}
