//! `omnode init`: PID 1 of the netbooted image.
//!
//! The boot, in order: mount the early file systems ([`mounts`]), make
//! `/dev/console` stdio ([`console`]), take over the signals ([`reaper`]),
//! read the `om.*` settings ([`cmdline`]), load the modules CRIU needs
//! ([`kmod`]; no device asks for them), start root shells on the console
//! (and serial), and in the background load the device modules,
//! bring up the wired NICs with DHCP ([`network`], [`dhcp_client`],
//! [`packet`], [`netif`], [`address`]). Once the network is up: the head
//! (named by `om.server=`, or heard announcing itself: [`announce`]), the
//! cluster key ([`key`]; the head makes a fresh one), the image's system
//! layer as the root when it has one ([`system`], over [`loopdev`]: from the
//! head's NFS export on a node, from the medium on the head; a layer that
//! cannot be had leaves the initramfs as the root), the shared tree at `/cluster`
//! with the head's users and groups ([`share`], over [`fetch`]), the agent
//! (after the tree is mounted, or a minute of trying), and on the head the
//! boot medium ([`media`]), the head's own tree ([`storage`]) and `omboot
//! serve` with the interface, mode and pool [`head`] derives from the
//! address the head got. Then PID 1 loops
//! forever: reap children, restart the supervised ones with backoff, and
//! power off or reboot on request ([`power`]).
//!
//! PID 1 must never exit (the kernel would panic): every failure is printed
//! as an `omnode: ` line and retried; [`run`] returns only when it is not
//! PID 1 at all.
//!
//! Entry points for the `omnode` binary: [`run`] (`omnode init`, and `/init`)
//! and [`power::request`] (`omnode poweroff`, `omnode reboot`).
//!
//! # Layers
//!
//! Each module imports only from the layers below it (`say!` counts as an
//! import of [`console`]):
//!
//! 1. no imports within the crate: [`address`] (the [`address::Lease`] and
//!    [`address::IfAddress`] data), [`cmdline`], [`console`], [`fetch`],
//!    [`kmod`], [`loopdev`], [`mounts`], [`packet`];
//! 2. the pure cores and the thin system calls over layer 1: [`head`]
//!    (address, cmdline), `dhcp_client::client` (address), [`netif`]
//!    (address), [`reaper`] (console), [`announce`] (console), [`media`] (kmod), [`key`] (fetch),
//!    [`share`] (fetch, kmod), [`storage`] (kmod, media);
//! 3. the shells over them: `dhcp_client::shell` (its core, netif, packet),
//!    [`power`] (reaper, mounts), [`system`] (kmod, loopdev, share);
//! 4. [`network`] (dhcp_client, head, netif, kmod, reaper, cmdline);
//! 5. this file: [`run`] and PID 1's loop, over everything.
//!
//! Architecture Invariant: there is no import cycle among the modules; a
//! pure core ([`head`], `dhcp_client::client`) never imports the I/O shell that
//! drives it ([`network`], `dhcp_client::shell`), and the data both share
//! lives in [`address`], below both.

use std::convert::Infallible;
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use contracts::http::CHECKIN_PATH;

/// Prints an `omnode: ` progress line on the console.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::say(format_args!($($arg)*))
    };
}

pub mod address;
pub mod announce;
pub mod cmdline;
pub mod console;
pub mod dhcp_client;
pub mod fetch;
pub mod head;
pub mod key;
pub mod kmod;
pub mod loopdev;
pub mod media;
pub mod mounts;
pub mod netif;
pub mod network;
pub mod packet;
pub mod power;
pub mod reaper;
pub mod share;
pub mod storage;
pub mod system;

pub use power::{request as request_power, PowerAction, PowerError};

/// Options of `omnode init`.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct InitArgs {
    /// Read the settings from this file instead of /proc/cmdline.
    #[arg(long, value_name = "FILE")]
    pub cmdline: Option<PathBuf>,
}

/// Why `omnode init` did not start.
#[derive(Debug, thiserror::Error)]
pub enum InitError {
    /// `omnode init` was run by something other than the kernel.
    #[error(
        "omnode init must run as PID 1 (this is pid {0}); on an ordinary system use `omnode agent`"
    )]
    NotPid1(u32),
}

/// Where the agent and omboot binaries live in the image.
const OMNODE: &str = "/bin/omnode";
const OMBOOT: &str = "/bin/omboot";
/// Where the head's `omboot serve` writes: one line per exchange would bury
/// the console shell.
const OMBOOT_LOG: &str = "/run/omboot.log";

/// Runs PID 1. Returns only an error (when not PID 1); otherwise it never
/// returns: shutdown ends in the reboot syscall.
pub fn run(args: InitArgs) -> Result<Infallible, InitError> {
    let pid = std::process::id();
    if pid != 1 {
        return Err(InitError::NotPid1(pid));
    }
    let mount_failures = mounts::mount_early();
    let _ = console::setup_stdio();
    // Before any thread exists, so every thread inherits the blocked mask.
    reaper::take_over_signals();
    say_hello(&mount_failures);
    let settings = read_settings(
        &args
            .cmdline
            .unwrap_or_else(|| PathBuf::from("/proc/cmdline")),
    );
    if let Err(e) = netif::set_up("lo") {
        say!("{e}");
    }
    load_criu_modules();

    let mut sup = Supervisor::new(settings);
    sup.main_loop()
}

/// The first console lines: the version, the kernel and how the early
/// mounts went.
fn say_hello(mount_failures: &[mounts::MountError]) {
    let release = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    say!(
        "init {} starting on Linux {}",
        env!("CARGO_PKG_VERSION"),
        release.trim()
    );
    if mount_failures.is_empty() {
        let points: Vec<&str> = mounts::EARLY.iter().map(|m| m.target).collect();
        say!("mounted {}", points.join(" "));
    }
    for f in mount_failures {
        say!("{f}");
    }
}

/// Reads the `om.*` settings from the kernel command line in `path` (the
/// defaults if it cannot be read) and prints the problems and the result.
fn read_settings(path: &Path) -> cmdline::Settings {
    let line = std::fs::read_to_string(path).unwrap_or_else(|e| {
        say!("cannot read {}: {e}; using defaults", path.display());
        String::new()
    });
    let (settings, problems) = cmdline::parse(&line);
    for p in &problems {
        say!("kernel command line: {p}");
    }
    say!(
        "role {}, cluster {}, server {}",
        match settings.role {
            cmdline::Role::Node => "node",
            cmdline::Role::Head => "head",
        },
        settings.cluster.as_deref().unwrap_or("(none)"),
        settings
            .server
            .map(|s| s.to_string())
            .unwrap_or_else(|| "(none)".into())
    );
    settings
}

/// Loads the modules CRIU needs ([`contracts::modules::CRIU`]) once, before
/// anything can start a job, and says in one console line how it went. A
/// failure only means checkpoints fail.
fn load_criu_modules() {
    let Some(dir) = kmod::modules_dir() else {
        say!("cannot read the kernel release; not loading the modules criu needs");
        return;
    };
    let started = Instant::now();
    match kmod::load_listed(&dir, contracts::modules::CRIU) {
        Ok(report) => say!("{}", criu_modules_line(&report, started.elapsed())),
        Err(e) => say!("not loading the modules criu needs: {e}"),
    }
}

/// The console line for the modules CRIU needs: what was loaded (in
/// `took`), what the image lacks and what failed.
fn criu_modules_line(report: &kmod::LoadReport, took: Duration) -> String {
    let mut line = if report.loaded.is_empty() {
        "modules for criu: none loaded".to_string()
    } else {
        format!(
            "modules for criu: loaded {} in {:.2}s",
            report.loaded.join(" "),
            took.as_secs_f64()
        )
    };
    let (mut missing, mut failed) = (Vec::new(), Vec::new());
    for e in &report.failed {
        match e {
            kmod::KmodError::Unknown(name) => missing.push(name.as_str()),
            e => failed.push(e.to_string()),
        }
    }
    if !missing.is_empty() {
        line.push_str(&format!("; not in this image: {}", missing.join(" ")));
    }
    if !failed.is_empty() {
        line.push_str(&format!("; failed: {}", failed.join("; ")));
    }
    if !report.failed.is_empty() {
        line.push_str(" (criu dump and restore may fail)");
    }
    line
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
    /// The head found no boot medium in its first [`MEDIA_PATIENCE`]: its
    /// agent starts on the initramfs (the search goes on for omboot).
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

    /// A supervised root shell on every console tty.
    fn start_shells(&mut self) {
        let now = Instant::now();
        for tty in console::shell_ttys() {
            say!("root shell on {}", tty.display());
            self.services.add(
                &format!("shell on {}", tty.display()),
                vec![console_shell().into()],
                reaper::Attach::Tty(tty),
                now,
            );
        }
    }

    /// Once the network is up (on the head: once its medium is found, or
    /// not found in time): the system layer, mounted by a worker that
    /// keeps trying for [`SYSTEM_PATIENCE`]. `medium` is the head's
    /// medium's layer file. Without a layer the root is settled at once.
    fn start_system(&mut self, medium: Option<PathBuf>) {
        use contracts::share::Share;
        if self.system_settled.is_some() {
            return;
        }
        let source = match (&self.settings.system, &self.net, medium) {
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
        };
        let Some(source) = source else {
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

    /// The system layer is mounted (or not): PID 1 moves into it, and the
    /// console shells restart there. Any failure leaves the initramfs as
    /// the root, said on the console.
    fn enter_layer(&mut self, mounted: Result<system::LayerSource, String>) {
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

    fn on_event(&mut self, ev: Event) {
        match ev {
            Event::Net(network::NetEvent::Up { address, hostname }) => {
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

    /// On the head, once the medium is mounted, the address known and the
    /// key in place: `omboot serve` on the head's interface.
    fn maybe_start_omboot(&mut self) {
        if self.settings.role != cmdline::Role::Head {
            return;
        }
        let Some(net) = &self.net else {
            return;
        };
        if !self.media_ready
            || !self.key_ready
            || self.system_settled != Some(true)
            || self.services.contains("omboot")
        {
            return;
        }
        match head::omboot_argv(
            OMBOOT,
            &self.settings,
            net,
            Path::new(media::MEDIA_DIR),
            Path::new(key::KEY_FILE),
            self.tree.as_deref(),
        ) {
            Ok(Some(argv)) => {
                say!("starting {}", argv.join(" "));
                say!("omboot logs to {OMBOOT_LOG} (tail -f it to watch the nodes boot)");
                self.services.add(
                    "omboot",
                    argv,
                    reaper::Attach::LogFile(OMBOOT_LOG.into()),
                    Instant::now(),
                );
            }
            Ok(None) => {
                // Record it as handled so the message is printed once.
                self.media_ready = false;
                say!("om.pxe=off: not serving the netboot");
            }
            Err(e) => {
                self.media_ready = false;
                say!("not serving the netboot: {e}");
            }
        }
    }

    /// Installs or fetches the key once the network is up.
    fn start_key(&mut self) {
        if self.key_started {
            return;
        }
        self.key_started = true;
        match self.settings.key.clone() {
            // The head makes the cluster: a fresh key each boot, handed to
            // the nodes on their command line by omboot.
            None if self.settings.role == cmdline::Role::Head => {
                let fresh = contracts::key::ClusterKey::generate();
                self.install_key(&fresh, "new cluster key");
            }
            // A node asks the head for admission: the key never travels
            // readable. Booted from a medium, it first listens for a head.
            None if self.settings.server.is_some() => self.start_admission(),
            None => {
                let Some(net) = &self.net else {
                    return;
                };
                let (iface, addr) = (net.iface.clone(), net.address);
                let wanted = self.settings.cluster.clone();
                let tx = self.tx.clone();
                spawn_worker("announce", "search for the head", move || {
                    match announce::wait_for_head(&iface, addr, wanted.as_deref()) {
                        Ok(head) => {
                            let _ = notify(&tx, Event::HeadFound(head));
                        }
                        Err(e) => say!(
                            "{e}; not starting the agent (pass om.server=HEAD, or om.key=HEX64)"
                        ),
                    }
                });
            }
            Some(cmdline::KeySource::Key(k)) => self.install_key(&k, "cluster key"),
            Some(cmdline::KeySource::Url(url)) => {
                let tx = self.tx.clone();
                spawn_worker("key", "key fetch", move || fetch_key(&url, &tx));
            }
        }
    }

    /// Whether this machine waits to hear a head before it knows its
    /// admission server and shared tree (booted from a medium, nothing
    /// named on its command line).
    fn looking_for_head(&self) -> bool {
        self.settings.role == cmdline::Role::Node
            && self.settings.key.is_none()
            && self.settings.server.is_none()
    }

    /// A head announced itself: it is this machine's boot server from now
    /// on, as if `om.server=`, `om.http=`, and (unless set) `om.cluster=`
    /// and `om.share=` had named it.
    fn found_head(&mut self, head: contracts::announce::Announcement) {
        if !self.looking_for_head() {
            return;
        }
        say!(
            "found the head of cluster {} at {}:{}",
            head.cluster,
            head.server,
            head.http_port
        );
        self.settings.server = Some(head.server);
        self.settings.http_port = head.http_port;
        self.settings.cluster.get_or_insert(head.cluster);
        if self.settings.share.is_none() {
            self.settings.share = head.share;
        }
        self.start_admission();
        self.start_share();
    }

    /// The admission worker, asking the head `om.server=` names.
    fn start_admission(&self) {
        let (Some(server), Some(net)) = (self.settings.server, &self.net) else {
            return;
        };
        let base = format!("http://{server}:{}", self.settings.http_port);
        let cluster = head::cluster_id(&self.settings).to_string();
        let iface = net.iface.clone();
        let name = self.hostname.clone();
        let tx = self.tx.clone();
        spawn_worker("admit", "admission", move || {
            admit(&base, &cluster, &iface, name.as_deref(), &tx)
        });
    }

    /// Writes the key given as `hex` to [`key::KEY_FILE`]; `what` starts the
    /// console line that says so.
    fn install_key(&mut self, key: &contracts::key::ClusterKey, what: &str) {
        match key::install(key, Path::new(key::KEY_FILE)) {
            Ok(()) => {
                say!("{what} written to {}", key::KEY_FILE);
                self.key_ready = true;
            }
            Err(e) => say!("{e}"),
        }
    }

    /// Once the host name and the key are known: the agent.
    fn maybe_start_agent(&mut self) {
        let Some(name) = &self.hostname else {
            return;
        };
        if !self.key_ready
            || self.share_settled != Some(true)
            || self.system_settled != Some(true)
            || self.services.contains("agent")
        {
            return;
        }
        let exe = std::env::current_exe()
            .ok()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| OMNODE.to_string());
        let argv = agent_argv(
            exe,
            &self.settings,
            name,
            self.net.as_ref(),
            self.tree.as_deref(),
        );
        say!("starting agent: {}", argv.join(" "));
        self.services
            .add("agent", argv, reaper::Attach::Console, Instant::now());
    }

    /// Once the network is up: the shared tree `om.share=` names, mounted by
    /// a worker thread that keeps trying.
    fn start_share(&mut self) {
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
                say!(
                    "om.share=off: no shared tree at {}",
                    contracts::share::MOUNT_POINT
                );
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

    fn start_media(&self) {
        let tx = self.tx.clone();
        let share = self.settings.share.clone();
        spawn_worker("media", "boot medium search", move || {
            find_media(share.as_ref(), &tx)
        });
    }
}

/// The console's shell: bash where the root has it (a system layer), else
/// the initramfs's `/bin/sh` (busybox).
fn console_shell() -> &'static str {
    if Path::new("/bin/bash").is_file() {
        "/bin/bash"
    } else {
        "/bin/sh"
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

/// How long a machine keeps trying to mount its system layer before it
/// carries on from the initramfs.
const SYSTEM_PATIENCE: Duration = Duration::from_secs(60);

/// How long the head looks for its boot medium before its agent starts on
/// the initramfs (the search goes on, for omboot).
const MEDIA_PATIENCE: Duration = Duration::from_secs(30);

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

/// The `omnode agent` command line: `exe` is the omnode binary, `name` the
/// host name, `net` the address PID 1 heard of first, `tree` the shared
/// tree a head serves.
fn agent_argv(
    exe: String,
    settings: &cmdline::Settings,
    name: &str,
    net: Option<&address::IfAddress>,
    tree: Option<&str>,
) -> Vec<String> {
    // A netbooted node or a head belongs to the cluster: root's jobs run
    // there (a workstation's owner opts in instead).
    let mut argv = vec![
        exe,
        "agent".into(),
        "--allow-root-jobs".into(),
        "--key-file".into(),
        key::KEY_FILE.into(),
        "--name".into(),
        name.into(),
        "--cluster".into(),
        head::cluster_id(settings).to_string(),
    ];
    // Not the default route's interface: a head with an uplink NIC
    // serves the cluster on the other one.
    if let Some(net) = net {
        argv.push("--interface".into());
        argv.push(net.iface.clone());
    }
    if let Some(share @ contracts::share::Share::Nfs(_)) = &settings.share {
        argv.push("--share".into());
        argv.push(share.to_string());
    } else if let Some(tree) = tree {
        argv.push("--share".into());
        argv.push(tree.into());
    }
    let serving = settings.role == cmdline::Role::Head && settings.pxe != cmdline::PxeMode::Off;
    if let Some(net) = net.filter(|_| serving) {
        // The head checks in with its own boot server, so the nodes
        // list shows it too.
        argv.push("--checkin".into());
        argv.push(format!(
            "http://{}:{}{CHECKIN_PATH}",
            net.address, settings.http_port
        ));
    } else if let Some(server) = settings.server {
        argv.push("--seed".into());
        argv.push(server.to_string());
        argv.push("--checkin".into());
        argv.push(format!(
            "http://{server}:{}{CHECKIN_PATH}",
            settings.http_port
        ));
    }
    argv
}

/// How often a pending or refused machine asks again.
const ADMIT_RETRY: Duration = Duration::from_secs(3);

/// The admission thread: a fresh key pair, then asks the head at `base`
/// until it admits this machine (printing each new answer once), installs
/// the key and tells the loop.
fn admit(base: &str, cluster: &str, iface: &str, name: Option<&str>, tx: &mpsc::Sender<Event>) {
    let mac = std::fs::read_to_string(format!("/sys/class/net/{iface}/address"))
        .ok()
        .and_then(|m| m.trim().parse().ok());
    let Some(mac) = mac else {
        say!("cannot read {iface}'s MAC address; not asking for admission");
        return;
    };
    let me = contracts::admit::MachineKey::generate();
    say!(
        "asking {base} for admission as {mac} (machine key {})",
        me.public().fingerprint()
    );
    let mut last = String::new();
    loop {
        let said = match key::ask(base, cluster, mac, name, &me) {
            Ok(key::Admission::Admitted(k)) => match key::install(&k, Path::new(key::KEY_FILE)) {
                Ok(()) => {
                    say!(
                        "admitted by the head; cluster key written to {}",
                        key::KEY_FILE
                    );
                    let _ = notify(tx, Event::KeyReady);
                    return;
                }
                Err(e) => e.to_string(),
            },
            Ok(key::Admission::Pending(why)) => format!("admission pending: {why}"),
            Ok(key::Admission::Refused(why)) => format!("admission refused: {why}"),
            Err(e) => format!("{e}; asking again"),
        };
        if said != last {
            say!("{said}");
            last = said;
        }
        std::thread::sleep(ADMIT_RETRY);
    }
}

/// The key thread: fetches the key from `url` and installs it, retrying
/// with backoff until it works, then tells the loop.
fn fetch_key(url: &str, tx: &mpsc::Sender<Event>) {
    let mut wait = Duration::from_secs(1);
    loop {
        match key::fetch(url).and_then(|k| key::install(&k, Path::new(key::KEY_FILE))) {
            Ok(()) => {
                say!("cluster key fetched from {url}");
                let _ = notify(tx, Event::KeyReady);
                return;
            }
            Err(e) => {
                say!("{e}; retrying in {}s", wait.as_secs());
                std::thread::sleep(wait);
                wait = (wait * 2).min(Duration::from_secs(30));
            }
        }
    }
}

/// How long the agent waits for the shared tree before it starts without
/// it (the mount goes on being tried).
const SHARE_PATIENCE: Duration = Duration::from_secs(60);

/// The share thread: mounts `share` at `/cluster` (retrying every 3 s),
/// installs the head's users and groups from `server`, and tells the loop;
/// after [`SHARE_PATIENCE`] of failures it tells the loop anyway and keeps
/// trying.
fn mount_share(
    share: &contracts::share::NfsShare,
    client: std::net::Ipv4Addr,
    server: Option<std::net::Ipv4Addr>,
    http_port: u16,
    tx: &mpsc::Sender<Event>,
) {
    use contracts::share::MOUNT_POINT;
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
        match share::install_accounts(server, http_port) {
            Ok(hidden) if hidden.is_empty() => say!("users and groups installed from the head"),
            Ok(hidden) => say!(
                "users and groups installed from the head; its numbers hide this node's {}",
                hidden.join(", ")
            ),
            Err(e) => say!("{e}; {MOUNT_POINT} shows numeric owners"),
        }
    }
    if !settled {
        let _ = notify(tx, Event::ShareSettled);
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

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    fn check_agent_argv(line: &str, net: Option<&str>, expect: Expect) {
        let (settings, problems) = cmdline::parse(line);
        assert!(problems.is_empty(), "{problems:?}");
        let net = net.map(|a| address::IfAddress {
            iface: "eth0".into(),
            address: a.parse().unwrap(),
            prefix: 24,
            gateway: None,
            from_dhcp: false,
        });
        let tree = (settings.role == cmdline::Role::Head).then_some("/cluster");
        let argv = agent_argv("/bin/omnode".into(), &settings, "n1", net.as_ref(), tree);
        expect.assert_eq(&argv.join(" "));
    }

    #[test]
    fn agent_seeds_from_the_server_and_checks_in_with_it() {
        check_agent_argv(
            "om.server=10.77.0.1 om.cluster=lab om.share=nfs://10.77.0.1/cluster",
            Some("10.77.0.130"),
            expect!["/bin/omnode agent --allow-root-jobs --key-file /run/omcluster.key --name n1 --cluster lab --interface eth0 --share nfs://10.77.0.1/cluster --seed 10.77.0.1 --checkin http://10.77.0.1:80/api/v1/checkin"],
        );
        check_agent_argv(
            "om.role=node",
            None,
            expect![
                "/bin/omnode agent --allow-root-jobs --key-file /run/omcluster.key --name n1 --cluster omcluster"
            ],
        );
    }

    #[test]
    fn criu_modules_line_says_what_loaded_and_what_failed() {
        let took = Duration::from_millis(120);
        let mut report = kmod::LoadReport::default();
        expect!["modules for criu: none loaded"].assert_eq(&criu_modules_line(&report, took));
        report.loaded = vec!["crc32c_generic".into(), "libcrc32c".into()];
        expect!["modules for criu: loaded crc32c_generic libcrc32c in 0.12s"]
            .assert_eq(&criu_modules_line(&report, took));
        report
            .failed
            .push(kmod::KmodError::Unknown("nf_tables".into()));
        report
            .failed
            .push(kmod::KmodError::Unknown("raw_diag".into()));
        report.failed.push(kmod::KmodError::Load {
            name: "tcp_diag".into(),
            path: "/lib/modules/6.1.0-50-amd64/kernel/net/ipv4/tcp_diag.ko".into(),
            errno: nix::errno::Errno::ENOENT,
        });
        expect!["modules for criu: loaded crc32c_generic libcrc32c in 0.12s; not in this image: nf_tables raw_diag; failed: loading module tcp_diag (/lib/modules/6.1.0-50-amd64/kernel/net/ipv4/tcp_diag.ko) failed: ENOENT: No such file or directory (criu dump and restore may fail)"]
            .assert_eq(&criu_modules_line(&report, took));
    }

    #[test]
    fn serving_head_checks_in_with_itself() {
        check_agent_argv(
            "om.role=head om.server=10.0.0.9 om.http=8080",
            Some("10.77.0.1"),
            expect!["/bin/omnode agent --allow-root-jobs --key-file /run/omcluster.key --name n1 --cluster omcluster --interface eth0 --share /cluster --checkin http://10.77.0.1:8080/api/v1/checkin"],
        );
        check_agent_argv(
            "om.role=head om.pxe=off om.server=10.0.0.9",
            Some("10.77.0.1"),
            expect!["/bin/omnode agent --allow-root-jobs --key-file /run/omcluster.key --name n1 --cluster omcluster --interface eth0 --share /cluster --seed 10.0.0.9 --checkin http://10.0.0.9:80/api/v1/checkin"],
        );
    }
}
