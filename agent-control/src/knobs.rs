//! The admin knobs of a node, with openMosix's `mosctl` names: `block`,
//! `stay`, `lstay`, `quiet` and the orders `expel` and `bring`. `omctl
//! knob` parses the words, the agent keeps the knobs and gossips them in
//! its load vector, and the balancing policy obeys them.

use serde::{Deserialize, Serialize};

/// The admin knobs of one node, as openMosix's `mosctl` named them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Knobs {
    /// Accept no guest jobs (jobs whose home is another node).
    pub block: bool,
    /// No job leaves this node automatically.
    pub stay: bool,
    /// Jobs whose home is this node stay here; guests may still be moved on.
    pub lstay: bool,
    /// Take no part in automatic balancing: send nothing away by itself
    /// and be no one's target.
    pub quiet: bool,
}

impl Knobs {
    /// The knobs that are on, by name (`-` for none).
    pub fn describe(&self) -> String {
        let on: Vec<&str> = [
            (self.block, "block"),
            (self.stay, "stay"),
            (self.lstay, "lstay"),
            (self.quiet, "quiet"),
        ]
        .iter()
        .filter(|(on, _)| *on)
        .map(|(_, n)| *n)
        .collect();
        if on.is_empty() {
            "-".into()
        } else {
            on.join(",")
        }
    }

    /// Turns the knob named `name` on or off; `false` if there is none of
    /// that name.
    pub fn set(&mut self, name: &str, on: bool) -> bool {
        let knob = match name {
            "block" => &mut self.block,
            "stay" => &mut self.stay,
            "lstay" => &mut self.lstay,
            "quiet" => &mut self.quiet,
            _ => return false,
        };
        *knob = on;
        true
    }
}

/// What an admin can tell a node: a knob on or off, or an order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KnobAction {
    /// Turn a knob (`block`, `stay`, `lstay`, `quiet`) on or off.
    Set {
        /// The knob's name.
        knob: String,
        /// On or off.
        on: bool,
    },
    /// Send every guest away now: home, or to the best node.
    Expel,
    /// Bring every job whose home is this node back home.
    Bring,
    /// Set the share of the node's CPUs cluster jobs may use, percent
    /// (`quota=N`; openMosixView's speed slider).
    Quota(u32),
    /// Power the node off (`poweroff`) or reboot it (`reboot`), once its
    /// guests have left; only a node `omnode init` booted does.
    Power {
        /// Reboot rather than power off.
        reboot: bool,
    },
}

/// Every word `omctl knob` (and `mosctl`) takes.
pub const KNOB_WORDS: &[&str] = &[
    "block", "noblock", "stay", "nostay", "lstay", "nolstay", "quiet", "noquiet", "expel", "bring",
    "quota=N", "poweroff", "reboot",
];

impl KnobAction {
    /// Parses a `mosctl` word: `block`/`noblock`, `stay`/`nostay`,
    /// `lstay`/`nolstay`, `quiet`/`noquiet`, `expel`, `bring`, or
    /// `quota=N` (N from 1 to 100).
    pub fn parse(word: &str) -> Option<Self> {
        if let Some(n) = word.strip_prefix("quota=") {
            return n
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=100).contains(n))
                .map(KnobAction::Quota);
        }
        match word {
            "expel" => Some(KnobAction::Expel),
            "bring" => Some(KnobAction::Bring),
            "poweroff" => Some(KnobAction::Power { reboot: false }),
            "reboot" => Some(KnobAction::Power { reboot: true }),
            _ => {
                let (knob, on) = match word.strip_prefix("no") {
                    Some(k) => (k, false),
                    None => (word, true),
                };
                Knobs::default().set(knob, on).then(|| KnobAction::Set {
                    knob: knob.to_string(),
                    on,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_words_take_one_to_a_hundred() {
        assert_eq!(KnobAction::parse("quota=50"), Some(KnobAction::Quota(50)));
        assert_eq!(KnobAction::parse("quota=100"), Some(KnobAction::Quota(100)));
        for bad in ["quota=0", "quota=101", "quota=", "quota=x", "quota"] {
            assert_eq!(KnobAction::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn knob_words() {
        assert_eq!(
            KnobAction::parse("noblock"),
            Some(KnobAction::Set {
                knob: "block".into(),
                on: false
            })
        );
        assert_eq!(KnobAction::parse("expel"), Some(KnobAction::Expel));
        assert_eq!(
            KnobAction::parse("reboot"),
            Some(KnobAction::Power { reboot: true })
        );
        assert_eq!(KnobAction::parse("nobring"), None);
        assert_eq!(KnobAction::parse("fast"), None);
        for w in KNOB_WORDS {
            let w = w.replace("=N", "=50");
            assert!(KnobAction::parse(&w).is_some(), "{w}");
        }
        let mut k = Knobs::default();
        assert_eq!(k.describe(), "-");
        k.set("block", true);
        k.set("quiet", true);
        assert_eq!(k.describe(), "block,quiet");
    }
}
