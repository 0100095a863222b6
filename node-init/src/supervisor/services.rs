//! The processes PID 1 supervises (restarted with backoff when they exit):
//! a root shell on every console tty from the start, the agent once the
//! machine has its name, key, root and shared tree, and on the head
//! `omboot serve` once its medium is mounted too. The `maybe_start_*`
//! methods run after every event and start what has become due.

use std::path::Path;
use std::time::Instant;

use contracts::http::CHECKIN_PATH;

use super::Supervisor;
use crate::{address, cmdline, console, head, key, media, reaper};

/// Where the agent and omboot binaries live in the image.
const OMNODE: &str = "/bin/omnode";
const OMBOOT: &str = "/bin/omboot";
/// Where the head's `omboot serve` writes: one line per exchange would bury
/// the console shell.
const OMBOOT_LOG: &str = "/run/omboot.log";

impl Supervisor {
    /// A supervised root shell on every console tty.
    pub(super) fn start_shells(&mut self) {
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

    /// On the head, once the medium is mounted, the address known and the
    /// key in place: `omboot serve` on the head's interface.
    pub(super) fn maybe_start_omboot(&mut self) {
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

    /// Once the host name and the key are known: the agent.
    pub(super) fn maybe_start_agent(&mut self) {
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
}

/// The console's shell: bash where the root has it (a system layer), else
/// the initramfs's `/bin/sh` (busybox).
pub(super) fn console_shell() -> &'static str {
    if Path::new("/bin/bash").is_file() {
        "/bin/bash"
    } else {
        "/bin/sh"
    }
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
    // The head shows the cluster in a browser (the web view).
    if settings.role == cmdline::Role::Head {
        argv.push("--web".into());
        argv.push(format!("0.0.0.0:{}", contracts::http::WEB_VIEW_PORT));
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
    fn serving_head_checks_in_with_itself() {
        check_agent_argv(
            "om.role=head om.server=10.0.0.9 om.http=8080",
            Some("10.77.0.1"),
            expect!["/bin/omnode agent --allow-root-jobs --key-file /run/omcluster.key --name n1 --cluster omcluster --interface eth0 --share /cluster --web 0.0.0.0:7947 --checkin http://10.77.0.1:8080/api/v1/checkin"],
        );
        check_agent_argv(
            "om.role=head om.pxe=off om.server=10.0.0.9",
            Some("10.77.0.1"),
            expect!["/bin/omnode agent --allow-root-jobs --key-file /run/omcluster.key --name n1 --cluster omcluster --interface eth0 --share /cluster --web 0.0.0.0:7947 --seed 10.0.0.9 --checkin http://10.0.0.9:80/api/v1/checkin"],
        );
    }
}
