//! The cluster key strand: how this machine comes to hold the key the
//! agents share, once the network is up. The head makes a fresh one each
//! boot; `om.key=` gives it outright or names a URL to fetch it from; a node
//! asks the head for admission (a fresh machine key pair; the cluster key
//! never travels readable), first listening for a head's announcement when
//! nothing names one. Whatever the way, the key ends in [`key::KEY_FILE`].

use std::path::Path;
use std::sync::mpsc;
use std::time::Duration;

use super::{notify, spawn_worker, Event, Supervisor};
use crate::{announce, cmdline, head, key};

/// How often a pending or refused machine asks again.
const ADMIT_RETRY: Duration = Duration::from_secs(3);

impl Supervisor {
    /// Installs or fetches the key once the network is up.
    pub(super) fn start_key(&mut self) {
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
            None => self.start_head_search(),
            Some(cmdline::KeySource::Key(k)) => self.install_key(&k, "cluster key"),
            Some(cmdline::KeySource::Url(url)) => {
                let tx = self.tx.clone();
                spawn_worker("key", "key fetch", move || fetch_key(&url, &tx));
            }
        }
    }

    /// The announcement worker: listens on the machine's interface for a
    /// head of the `om.cluster=` cluster (any, if unset) and reports it.
    fn start_head_search(&self) {
        let Some(net) = &self.net else {
            return;
        };
        let (iface, addr) = (net.iface.clone(), net.address);
        let wanted = self.settings.cluster.clone();
        let tx = self.tx.clone();
        spawn_worker(
            "announce",
            "search for the head",
            move || match announce::wait_for_head(&iface, addr, wanted.as_deref()) {
                Ok(head) => {
                    let _ = notify(&tx, Event::HeadFound(head));
                }
                Err(e) => {
                    say!("{e}; not starting the agent (pass om.server=HEAD, or om.key=HEX64)")
                }
            },
        );
    }

    /// Whether this machine waits to hear a head before it knows its
    /// admission server and shared tree (booted from a medium, nothing
    /// named on its command line).
    pub(super) fn looking_for_head(&self) -> bool {
        self.settings.role == cmdline::Role::Node
            && self.settings.key.is_none()
            && self.settings.server.is_none()
    }

    /// A head announced itself: it is this machine's boot server from now
    /// on, as if `om.server=`, `om.http=`, and (unless set) `om.cluster=`
    /// and `om.share=` had named it.
    pub(super) fn found_head(&mut self, head: contracts::announce::Announcement) {
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

    /// Writes `key` to [`key::KEY_FILE`]; `what` starts the
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
}

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
