//! `omctl shell`: a shell whose commands become cluster jobs, the nearest
//! user space gets to openMosix, where every process could migrate with
//! no prefix at all.
//!
//! How, two ways at once, since shells find programs differently:
//! - a private directory of shims goes first in `PATH`, one per program
//!   found in `PATH`, each a symlink to one script that runs `omctl run
//!   --node HERE -- PROGRAM ARGS…` with the original `PATH` restored (so the
//!   job itself finds the real program): what bash and dash look up;
//! - a file of shell functions, one per program whose name is a plain
//!   identifier, doing the same (`OM_SHELL_RC`, sourced by the shell
//!   `omctl shell` starts): a busybox built as a standalone shell
//!   (Debian's busybox-static) runs its own applets (`awk`, `cat`, `ls`…)
//!   without looking at `PATH`, but a function comes first. Functions
//!   carry into subshells, not into a new shell process, so there the
//!   commands of a script run locally; the image's busybox is Debian's
//!   dynamic build, which looks in `PATH`.
//!
//! Every command the shell runs this way, typed or in a script, starts as
//! a job on this node, like a process under openMosix, and the balancer
//! (the agent's balancing) moves it where it finishes first.
//!
//! Limits, said in the README too: builtins (`cd`, `echo`, `test`, `read`…)
//! and programs named by a path (`./x`, `/bin/x`) run as ordinary local
//! processes; under a standalone busybox shell, a script that runs in a
//! new shell process finds only the `PATH` shims, which that shell
//! ignores for its applets, so its commands run locally; shells, the cluster's own tools,
//! and programs that need this terminal or this node's processes
//! ([`STAY_LOCAL`]) are not shimmed; each command costs a job start; a
//! job's stdin is relayed, so input typed ahead while a command runs is
//! that command's.

use std::os::unix::fs::{symlink, PermissionsExt};
use std::path::{Path, PathBuf};

/// Programs never turned into jobs: shells (a script they run must see the
/// shims), the cluster's tools, and what needs this terminal or this
/// node's own processes.
pub const STAY_LOCAL: &[&str] = &[
    "sh", "ash", "bash", "dash", "zsh", "ksh", "busybox", "env", "omctl", "omnode", "mosmon",
    "mtop", "mps", "mosctl", "mosrun", "migrate", "kill", "killall", "pkill", "pgrep", "ps", "top",
    "htop", "jobs", "fg", "bg", "wait", "clear", "reset", "stty", "tty", "tput", "less", "more",
    "vi", "vim", "nano", "man", "su", "sudo", "login", "ssh", "scp", "exit", "logout", "script",
    "tmux", "screen", "watch", "nohup", "setsid", "chroot", "unshare", "nsenter", "mount",
    "umount", "poweroff", "reboot", "halt", "shutdown", "init",
    // Shell builtins: they run in the shell whatever PATH says, and a
    // function of their name would shadow them.
    ".", ":", "[", "[[", "alias", "break", "cd", "chdir", "command", "continue", "echo", "eval",
    "exec", "export", "false", "getopts", "hash", "help", "history", "let", "local", "printf",
    "pwd", "read", "readonly", "return", "set", "shift", "source", "test", "times", "trap", "true",
    "type", "ulimit", "umask", "unalias", "unset",
];

/// The script every shim points to.
const RUNNER: &str = ".omctl-run";
/// The file of functions, in the shim directory.
pub const RC: &str = ".omctl-shell.rc";

/// Errors preparing the shims.
#[derive(Debug, thiserror::Error)]
pub enum ShellError {
    /// The shim directory could not be written.
    #[error("cannot prepare the shell's command shims in {dir}: {source}")]
    Shims {
        /// The directory.
        dir: String,
        /// Cause.
        source: std::io::Error,
    },
}

/// Quotes `s` for `sh` (single quotes).
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The runner script: restores the original `PATH` and runs the command
/// named like the shim as a job on `node`.
pub fn runner_script(omctl: &Path, socket: &Path, node: &str) -> String {
    format!(
        "#!/bin/sh\n# omctl shell: run the command named like this link as a cluster job.\n\
         PATH=$OM_SHELL_PATH exec {} --socket {} run --node {} -- \"${{0##*/}}\" \"$@\"\n",
        quote(&omctl.display().to_string()),
        quote(&socket.display().to_string()),
        quote(node)
    )
}

/// Whether `name` can be a shell function's name everywhere (ash is strict).
fn plain_name(name: &str) -> bool {
    let mut c = name.chars();
    c.next()
        .is_some_and(|f| f.is_ascii_alphabetic() || f == '_')
        && c.all(|x| x.is_ascii_alphanumeric() || x == '_')
}

/// The functions file: one function per plain-named program of `names`
/// that runs it as a job on `node` with the original `PATH`.
pub fn functions(names: &[String], omctl: &Path, socket: &Path, node: &str) -> String {
    let mut out = String::from("# omctl shell: these commands run as cluster jobs.\n");
    let call = format!(
        "PATH=$OM_SHELL_PATH {} --socket {} run --node {} --",
        quote(&omctl.display().to_string()),
        quote(&socket.display().to_string()),
        quote(node)
    );
    for name in names.iter().filter(|n| plain_name(n)) {
        out.push_str(&format!("{name}() {{ {call} {name} \"$@\"; }}\n"));
    }
    out
}

/// The programs in the directories of `path` that get a shim: executable
/// files (or links to them), first of a name wins, none of [`STAY_LOCAL`].
pub fn shimmed(path: &str) -> Vec<String> {
    let mut names = std::collections::BTreeSet::new();
    for dir in path.split(':').filter(|d| !d.is_empty()) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            continue;
        };
        for e in entries.flatten() {
            let Some(name) = e.file_name().to_str().map(String::from) else {
                continue;
            };
            if name.starts_with('.') || STAY_LOCAL.contains(&name.as_str()) {
                continue;
            }
            let executable = std::fs::metadata(e.path())
                .is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0);
            if executable {
                names.insert(name);
            }
        }
    }
    names.into_iter().collect()
}

/// A directory of shims, removed when dropped.
#[derive(Debug)]
pub struct Shims {
    /// The directory to put first in `PATH`.
    pub dir: PathBuf,
    /// How many programs got a shim.
    pub count: usize,
}

impl Shims {
    /// The functions file to source.
    pub fn rc(&self) -> PathBuf {
        self.dir.join(RC)
    }
}

impl Shims {
    /// Writes the runner and a link per program of `path` into a fresh
    /// private directory under `parent`.
    pub fn create(
        parent: &Path,
        path: &str,
        omctl: &Path,
        socket: &Path,
        node: &str,
    ) -> Result<Self, ShellError> {
        let dir = parent.join(format!("omctl-shell.{}", std::process::id()));
        let err = |source| ShellError::Shims {
            dir: dir.display().to_string(),
            source,
        };
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir(&dir).map_err(err)?;
        let mut shims = Shims { dir, count: 0 };
        let dir = &shims.dir;
        let err = |source| ShellError::Shims {
            dir: dir.display().to_string(),
            source,
        };
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).map_err(err)?;
        let runner = dir.join(RUNNER);
        std::fs::write(&runner, runner_script(omctl, socket, node)).map_err(err)?;
        std::fs::set_permissions(&runner, std::fs::Permissions::from_mode(0o755)).map_err(err)?;
        let names = shimmed(path);
        for name in &names {
            symlink(RUNNER, dir.join(name)).map_err(err)?;
        }
        std::fs::write(dir.join(RC), functions(&names, omctl, socket, node)).map_err(err)?;
        shims.count = names.len();
        Ok(shims)
    }
}

impl Drop for Shims {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    #[test]
    fn shims_run_path_programs_through_omctl_and_skip_shells() {
        let tmp = tempfile::tempdir().unwrap();
        let bin = tmp.path().join("bin");
        std::fs::create_dir(&bin).unwrap();
        for (name, mode) in [("awk", 0o755), ("sh", 0o755), ("notes", 0o644)] {
            std::fs::write(bin.join(name), "").unwrap();
            std::fs::set_permissions(bin.join(name), std::fs::Permissions::from_mode(mode))
                .unwrap();
        }
        // A fake omctl that prints what it was asked and with which PATH.
        let fake = tmp.path().join("omctl");
        std::fs::write(&fake, "#!/bin/sh\necho \"PATH=$PATH $*\"\n").unwrap();
        std::fs::set_permissions(&fake, std::fs::Permissions::from_mode(0o755)).unwrap();
        let path = bin.display().to_string();
        let shims = Shims::create(
            tmp.path(),
            &path,
            &fake,
            Path::new("/run/o m.sock"),
            "node-'a",
        )
        .unwrap();
        assert_eq!(
            shims.count, 1,
            "only awk: sh stays local, notes is not executable"
        );
        let out = Command::new(shims.dir.join("awk"))
            .args(["x y", "z"])
            .env("OM_SHELL_PATH", &path)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("PATH={path} --socket /run/o m.sock run --node node-'a -- awk x y z\n")
        );
        // The function does the same for a shell that prefers its own applets.
        let out = Command::new("sh")
            .arg("-c")
            .arg(". \"$1\"; awk 'x y' z")
            .arg("sh")
            .arg(shims.rc())
            .env("OM_SHELL_PATH", &path)
            .output()
            .unwrap();
        assert_eq!(
            String::from_utf8_lossy(&out.stdout),
            format!("PATH={path} --socket /run/o m.sock run --node node-'a -- awk x y z\n"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            functions(&["a-b".into(), "ok_1".into()], &fake, Path::new("/s"), "n")
                .lines()
                .skip(1)
                .eq(["ok_1() { PATH=$OM_SHELL_PATH '".to_string()
                    + &fake.display().to_string()
                    + "' --socket '/s' run --node 'n' -- ok_1 \"$@\"; }"])
        );
        let dir = shims.dir.clone();
        drop(shims);
        assert!(!dir.exists());
    }
}
