//! `omnode init`: PID 1 of the netbooted image.
//!
//! The boot, in order: mount the early file systems ([`mounts`]), make
//! `/dev/console` stdio ([`console`]), take over the signals ([`reaper`]),
//! read the `om.*` settings ([`cmdline`]), start root shells on the console
//! (and serial), and in the background load the device modules ([`kmod`]),
//! bring up the wired NICs with DHCP ([`network`], [`dhcp_client`],
//! [`packet`], [`netif`]). Once the network is up: the cluster key
//! ([`key`]; the head makes a fresh one), the agent, and on the head the
//! boot medium ([`media`]) and `omboot serve` with the interface, mode and
//! pool [`head`] derives from the address the head got. Then PID 1 loops forever: reap children, restart the
//! supervised ones with backoff, and power off or reboot on request
//! ([`power`]).
//!
//! PID 1 must never exit (the kernel would panic): every failure is printed
//! as an `omnode: ` line and retried; [`run`] returns only when it is not
//! PID 1 at all.
//!
//! Entry points for the `omnode` binary: [`run`] (`omnode init`, and `/init`)
//! and [`power::request`] (`omnode poweroff`, `omnode reboot`).

use std::convert::Infallible;
use std::path::PathBuf;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use contracts::http::CHECKIN_PATH;

/// Prints an `omnode: ` progress line on the console.
macro_rules! say {
    ($($arg:tt)*) => {
        $crate::console::say(format_args!($($arg)*))
    };
}

pub mod cmdline;
pub mod console;
pub mod dhcp_client;
pub mod head;
pub mod key;
pub mod kmod;
pub mod media;
pub mod mounts;
pub mod netif;
pub mod network;
pub mod packet;
pub mod power;
pub mod reaper;

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
    for f in &mount_failures {
        say!("{f}");
    }
    let cmdline_path = args
        .cmdline
        .unwrap_or_else(|| PathBuf::from("/proc/cmdline"));
    let line = std::fs::read_to_string(&cmdline_path).unwrap_or_else(|e| {
        say!(
            "cannot read {}: {e}; using defaults",
            cmdline_path.display()
        );
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
    if let Err(e) = netif::set_up("lo") {
        say!("{e}");
    }

    let mut sup = Supervisor::new(settings);
    sup.main_loop()
}

/// Events from the worker threads.
#[derive(Debug)]
enum Event {
    Net(network::NetEvent),
    KeyReady,
    MediaReady,
}

struct Supervisor {
    settings: cmdline::Settings,
    services: reaper::Services,
    tx: mpsc::Sender<Event>,
    rx: mpsc::Receiver<Event>,
    hostname: Option<String>,
    /// The address PID 1 heard of first: the agent talks on its interface
    /// and the head serves on it.
    net: Option<network::IfAddress>,
    key_ready: bool,
    key_started: bool,
    media_ready: bool,
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
        }
    }

    fn main_loop(&mut self) -> ! {
        let now = Instant::now();
        for tty in console::shell_ttys() {
            say!("root shell on {}", tty.display());
            self.services.add(
                &format!("shell on {}", tty.display()),
                vec!["/bin/sh".into()],
                reaper::Attach::Tty(tty),
                now,
            );
        }
        let (net_tx, net_rx) = mpsc::channel();
        network::start(self.settings.clone(), net_tx);
        {
            // Forward network events into the one channel the loop reads.
            let tx = self.tx.clone();
            let _ = std::thread::Builder::new()
                .name("net-events".into())
                .spawn(move || {
                    for ev in net_rx {
                        if tx.send(Event::Net(ev)).is_err() {
                            break;
                        }
                        reaper::wake();
                    }
                });
        }
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
                }
            }
            Event::KeyReady => {
                self.key_ready = true;
            }
            Event::MediaReady => {
                self.media_ready = true;
            }
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
        if !self.media_ready || !self.key_ready || self.services.contains("omboot") {
            return;
        }
        match head::omboot_argv(
            OMBOOT,
            &self.settings,
            net,
            std::path::Path::new(media::MEDIA_DIR),
            std::path::Path::new(key::KEY_FILE),
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
        let path = std::path::Path::new(key::KEY_FILE);
        match self.settings.key.clone() {
            // The head makes the cluster: a fresh key each boot, handed to
            // the nodes on their command line by omboot.
            None if self.settings.role == cmdline::Role::Head => {
                let fresh = contracts::key::ClusterKey::generate();
                match key::install(&fresh, path) {
                    Ok(()) => {
                        say!("new cluster key written to {}", key::KEY_FILE);
                        self.key_ready = true;
                    }
                    Err(e) => say!("{e}"),
                }
            }
            None => say!(
                "no om.key= on the kernel command line; not starting the agent (pass om.key=HEX64 or om.key=http://HEAD/…)"
            ),
            Some(cmdline::KeySource::Key(k)) => match key::install(&k, path) {
                Ok(()) => {
                    say!("cluster key written to {}", key::KEY_FILE);
                    self.key_ready = true;
                }
                Err(e) => say!("{e}"),
            },
            Some(cmdline::KeySource::Url(url)) => {
                let tx = self.tx.clone();
                let spawned = std::thread::Builder::new().name("key".into()).spawn(move || {
                    let mut wait = Duration::from_secs(1);
                    loop {
                        match key::fetch(&url).and_then(|k| key::install(&k, std::path::Path::new(key::KEY_FILE))) {
                            Ok(()) => {
                                say!("cluster key fetched from {url}");
                                let _ = tx.send(Event::KeyReady);
                                reaper::wake();
                                return;
                            }
                            Err(e) => {
                                say!("{e}; retrying in {}s", wait.as_secs());
                                std::thread::sleep(wait);
                                wait = (wait * 2).min(Duration::from_secs(30));
                            }
                        }
                    }
                });
                if let Err(e) = spawned {
                    say!("cannot start the key fetch: {e}");
                }
            }
        }
    }

    fn maybe_start_agent(&mut self) {
        let Some(name) = self.hostname.clone() else {
            return;
        };
        if !self.key_ready || self.services.contains("agent") {
            return;
        }
        let exe = std::env::current_exe()
            .ok()
            .filter(|p| p.exists())
            .map(|p| p.display().to_string())
            .unwrap_or_else(|| OMNODE.to_string());
        let mut argv = vec![
            exe,
            "agent".into(),
            "--key-file".into(),
            key::KEY_FILE.into(),
            "--name".into(),
            name,
            "--cluster".into(),
            head::cluster_id(&self.settings).to_string(),
        ];
        // Not the default route's interface: a head with an uplink NIC
        // serves the cluster on the other one.
        if let Some(net) = &self.net {
            argv.push("--interface".into());
            argv.push(net.iface.clone());
        }
        let serving =
            self.settings.role == cmdline::Role::Head && self.settings.pxe != cmdline::PxeMode::Off;
        if let Some(net) = self.net.as_ref().filter(|_| serving) {
            // The head checks in with its own boot server, so the nodes
            // list shows it too.
            argv.push("--checkin".into());
            argv.push(format!(
                "http://{}:{}{CHECKIN_PATH}",
                net.address, self.settings.http_port
            ));
        } else if let Some(server) = self.settings.server {
            argv.push("--seed".into());
            argv.push(server.to_string());
            argv.push("--checkin".into());
            argv.push(format!(
                "http://{server}:{}{CHECKIN_PATH}",
                self.settings.http_port
            ));
        }
        say!("starting agent: {}", argv.join(" "));
        self.services
            .add("agent", argv, reaper::Attach::Console, Instant::now());
    }

    fn start_media(&self) {
        let tx = self.tx.clone();
        let spawned = std::thread::Builder::new()
            .name("media".into())
            .spawn(move || {
                // Block drivers load in the network thread's module pass; give
                // them a few rounds before complaining.
                for attempt in 1.. {
                    match media::mount_media() {
                        Ok(dev) => {
                            say!(
                                "boot medium {} mounted on {}",
                                dev.display(),
                                media::MEDIA_DIR
                            );
                            let _ = tx.send(Event::MediaReady);
                            reaper::wake();
                            return;
                        }
                        Err(e) => {
                            if attempt == 3 || attempt % 20 == 0 {
                                say!("{e}; still looking");
                            }
                            std::thread::sleep(Duration::from_secs(3));
                        }
                    }
                }
            });
        if let Err(e) = spawned {
            say!("cannot start the boot medium search: {e}");
        }
    }
}
