//! Power off, reboot and halt: the request side (`omnode poweroff`,
//! `omnode reboot`, which signal PID 1) and PID 1's shutdown sequence.
//!
//! The signals follow busybox init, so its `poweroff`/`reboot`/`halt`
//! applets work too: SIGUSR2 powers off, SIGTERM reboots, SIGUSR1 halts;
//! SIGINT (Ctrl-Alt-Del) reboots and SIGPWR powers off.

use std::time::{Duration, Instant};

use nix::sys::reboot::RebootMode;
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

/// What to do at the end.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PowerAction {
    /// Switch the machine off.
    PowerOff,
    /// Restart it.
    Reboot,
    /// Stop the CPU, power stays on.
    Halt,
}

impl PowerAction {
    /// The signal that asks PID 1 for this.
    pub fn signal(self) -> Signal {
        match self {
            PowerAction::PowerOff => Signal::SIGUSR2,
            PowerAction::Reboot => Signal::SIGTERM,
            PowerAction::Halt => Signal::SIGUSR1,
        }
    }

    /// The action PID 1 takes for a signal.
    pub fn from_signal(sig: Signal) -> Option<Self> {
        match sig {
            Signal::SIGUSR2 | Signal::SIGPWR => Some(PowerAction::PowerOff),
            Signal::SIGTERM | Signal::SIGINT => Some(PowerAction::Reboot),
            Signal::SIGUSR1 => Some(PowerAction::Halt),
            _ => None,
        }
    }

    fn verb(self) -> &'static str {
        match self {
            PowerAction::PowerOff => "power off",
            PowerAction::Reboot => "reboot",
            PowerAction::Halt => "halt",
        }
    }
}

/// Asking PID 1 failed.
#[derive(Debug, thiserror::Error)]
#[error("cannot ask PID 1 to {verb}: {errno}")]
pub struct PowerError {
    verb: &'static str,
    errno: nix::errno::Errno,
}

/// Asks PID 1 (`omnode init`) to power off, reboot or halt. This is what the
/// `omnode poweroff` and `omnode reboot` subcommands call.
pub fn request(action: PowerAction) -> Result<(), PowerError> {
    kill(Pid::from_raw(1), action.signal()).map_err(|errno| PowerError {
        verb: action.verb(),
        errno,
    })
}

/// Waits up to `limit` for all children to be reaped.
fn reap_until_none(limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        crate::reaper::reap();
        // ECHILD: nobody left.
        if matches!(
            nix::sys::wait::waitpid(
                Pid::from_raw(-1),
                Some(nix::sys::wait::WaitPidFlag::WNOHANG)
            ),
            Err(nix::errno::Errno::ECHILD)
        ) {
            return true;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return false;
        }
        crate::reaper::wait_signal(left.min(Duration::from_millis(200)));
    }
}

/// PID 1's shutdown: hang up the shells in `hangup` (interactive shells
/// ignore SIGTERM), stop every process (TERM, then KILL after 5 s), sync,
/// unmount, and power off / reboot / halt. Never returns; if the final
/// syscall fails it says so and idles, the machine can then be reset.
pub fn shutdown(action: PowerAction, hangup: &[Pid]) -> ! {
    say!("{}: stopping all processes", action.verb());
    for pid in hangup {
        let _ = kill(*pid, Signal::SIGHUP);
    }
    let _ = kill(Pid::from_raw(-1), Signal::SIGTERM);
    if !reap_until_none(Duration::from_secs(5)) {
        say!("some processes ignored SIGTERM; killing them");
        let _ = kill(Pid::from_raw(-1), Signal::SIGKILL);
        reap_until_none(Duration::from_secs(2));
    }
    nix::unistd::sync();
    let stuck = crate::mounts::unmount_all();
    if !stuck.is_empty() {
        say!("could not unmount {}", stuck.join(", "));
    }
    nix::unistd::sync();
    say!("{} now", action.verb());
    let mode = match action {
        PowerAction::PowerOff => RebootMode::RB_POWER_OFF,
        PowerAction::Reboot => RebootMode::RB_AUTOBOOT,
        PowerAction::Halt => RebootMode::RB_HALT_SYSTEM,
    };
    let Err(e) = nix::sys::reboot::reboot(mode);
    say!(
        "{} failed: {e}; the machine can be reset by hand",
        action.verb()
    );
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_round_trip() {
        for a in [
            PowerAction::PowerOff,
            PowerAction::Reboot,
            PowerAction::Halt,
        ] {
            assert_eq!(PowerAction::from_signal(a.signal()), Some(a));
        }
        assert_eq!(
            PowerAction::from_signal(Signal::SIGINT),
            Some(PowerAction::Reboot)
        );
        assert_eq!(PowerAction::from_signal(Signal::SIGCHLD), None);
    }
}
