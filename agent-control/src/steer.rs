//! Orders for one running job, wherever it runs: a signal
//! (openMosixprocs' SIGSTOP, SIGCONT, kill) or a new nice value (its
//! renice). `omctl kill` and `omctl renice` parse them, the web view sends
//! them, and the agent running the job carries them out between two
//! migrations, never during one.

use serde::{Deserialize, Serialize};

/// The signals an order may name, with their Linux numbers.
pub const SIGNALS: &[(&str, i32)] = &[
    ("HUP", 1),
    ("INT", 2),
    ("QUIT", 3),
    ("KILL", 9),
    ("USR1", 10),
    ("USR2", 12),
    ("ALRM", 14),
    ("TERM", 15),
    ("CONT", 18),
    ("STOP", 19),
    ("TSTP", 20),
    ("WINCH", 28),
];

/// SIGSTOP's number.
pub const SIGSTOP: i32 = 19;
/// SIGCONT's number.
pub const SIGCONT: i32 = 18;

/// The range of nice values.
pub const NICE: std::ops::RangeInclusive<i32> = -20..=19;

/// What to do to a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobOrder {
    /// Send this signal to every process of the job.
    Signal(i32),
    /// Give every thread of the job this nice value.
    Renice(i32),
}

impl JobOrder {
    /// A signal order from a name (`STOP`, `SIGSTOP`, `stop`) or a number
    /// that [`SIGNALS`] lists.
    pub fn signal(word: &str) -> Result<Self, String> {
        let w = word.trim();
        let upper = w.to_ascii_uppercase();
        let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
        SIGNALS
            .iter()
            .find(|(name, n)| *name == bare || n.to_string() == bare)
            .map(|&(_, n)| JobOrder::Signal(n))
            .ok_or_else(|| {
                let names: Vec<&str> = SIGNALS.iter().map(|(n, _)| *n).collect();
                format!("no signal {w:?} (one of {})", names.join(", "))
            })
    }

    /// A renice order, if `nice` is in [`NICE`].
    pub fn renice(nice: i32) -> Result<Self, String> {
        if NICE.contains(&nice) {
            Ok(JobOrder::Renice(nice))
        } else {
            Err(format!("nice {nice} is outside -20..19"))
        }
    }

    /// Checked again where the order arrives: a signal [`SIGNALS`] lists,
    /// a nice value in [`NICE`].
    pub fn valid(&self) -> Result<(), String> {
        match *self {
            JobOrder::Signal(n) if SIGNALS.iter().any(|&(_, s)| s == n) => Ok(()),
            JobOrder::Signal(n) => Err(format!("signal {n} may not be sent to a job")),
            JobOrder::Renice(n) => Self::renice(n).map(|_| ()),
        }
    }

    /// The order for a person: `SIGSTOP`, `nice 10`.
    pub fn describe(&self) -> String {
        match *self {
            JobOrder::Signal(n) => signal_name(n),
            JobOrder::Renice(n) => format!("nice {n}"),
        }
    }
}

/// `SIGSTOP` for 19; `signal 99` for a number [`SIGNALS`] does not list.
pub fn signal_name(n: i32) -> String {
    SIGNALS
        .iter()
        .find(|&&(_, s)| s == n)
        .map_or_else(|| format!("signal {n}"), |(name, _)| format!("SIG{name}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_by_name_or_number() {
        for w in ["STOP", "sigstop", "SIGSTOP", "19", " stop "] {
            assert_eq!(JobOrder::signal(w), Ok(JobOrder::Signal(SIGSTOP)), "{w}");
        }
        assert_eq!(JobOrder::signal("cont"), Ok(JobOrder::Signal(SIGCONT)));
        let e = JobOrder::signal("SIGFOO").unwrap_err();
        assert!(
            e.starts_with("no signal \"SIGFOO\" (one of HUP, INT"),
            "{e}"
        );
        assert!(JobOrder::signal("0").is_err());
        assert!(JobOrder::signal("").is_err());
    }

    #[test]
    fn nice_stays_in_range() {
        assert_eq!(JobOrder::renice(19), Ok(JobOrder::Renice(19)));
        assert_eq!(JobOrder::renice(-20), Ok(JobOrder::Renice(-20)));
        assert_eq!(
            JobOrder::renice(20).unwrap_err(),
            "nice 20 is outside -20..19"
        );
        assert!(JobOrder::Renice(-21).valid().is_err());
        assert!(JobOrder::Signal(31).valid().is_err());
        assert!(JobOrder::Signal(15).valid().is_ok());
    }

    #[test]
    fn orders_read_as_people_say_them() {
        assert_eq!(JobOrder::Signal(9).describe(), "SIGKILL");
        assert_eq!(JobOrder::Renice(5).describe(), "nice 5");
        assert_eq!(signal_name(42), "signal 42");
    }
}
