//! The lab's error type: what can go wrong while building or driving the
//! virtual LAN, its machines and the programs around them.

use std::path::PathBuf;

/// What can go wrong while building or driving the virtual LAN.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    /// A program the lab needs is not installed.
    #[error("{program} is not installed: {hint}")]
    MissingProgram {
        /// The executable that was not found on PATH.
        program: String,
        /// How to get it.
        hint: String,
    },
    /// A file the lab needs (firmware, ROM) is missing.
    #[error("{path} is missing: {hint}")]
    MissingFile {
        /// The file that was not found.
        path: PathBuf,
        /// How to get it.
        hint: String,
    },
    /// Network namespaces need root.
    #[error(
        "the virtual LAN needs root (network namespaces and tap devices); run as root or with sudo"
    )]
    NotRoot,
    /// A command the lab ran failed.
    #[error("`{command}` failed: {stderr}")]
    Command {
        /// The command line that failed.
        command: String,
        /// What it printed on stderr.
        stderr: String,
    },
    /// An I/O error on a file or process the lab manages.
    #[error("{what}: {source}")]
    Io {
        /// What the lab was doing.
        what: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A line did not appear on a machine's serial console in time.
    #[error(
        "{node}: {wanted:?} did not appear on the serial console within {secs} s (log: {log})"
    )]
    Timeout {
        /// The machine's name.
        node: String,
        /// The text that was awaited.
        wanted: String,
        /// How long the lab waited.
        secs: u64,
        /// Where the console log is.
        log: PathBuf,
    },
    /// The head's view never showed what the lab waited for.
    #[error("the head never saw {wanted} within {secs} s; last view: {seen}")]
    NeverSeen {
        /// What was awaited.
        wanted: String,
        /// How long the lab waited.
        secs: u64,
        /// The last view (or the error getting it).
        seen: String,
    },
    /// The browser (or its WebDriver) refused or failed a step.
    #[error("browser: {what}: {cause}")]
    Browser {
        /// The step.
        what: String,
        /// What WebDriver said.
        cause: String,
    },
    /// A machine's qemu process exited while the lab waited for it.
    #[error("{node}: qemu exited ({status}) before {wanted:?} appeared (log: {log})")]
    QemuExited {
        /// The machine's name.
        node: String,
        /// How qemu exited.
        status: String,
        /// The text that was awaited.
        wanted: String,
        /// Where the console log is.
        log: PathBuf,
    },
}

pub(crate) fn io_err(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> LabError {
    let what = what.into();
    move |source| LabError::Io { what, source }
}
