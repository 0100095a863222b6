//! The source's record of its migration attempts: the one place where an
//! attempt is settled as committed (the source's copy is gone, the target's
//! runs) or kept (the source's copy runs, the target drops its own). No I/O.
//!
//! Settling is first come, first served, and final. The target's `Restored`
//! commits a pending attempt; a failure before it keeps it; and a target
//! that lost its link and asks what became of a pending attempt settles it
//! as kept by asking (presumed abort). So a `Restored` that crawls in after
//! the target was told "kept" cannot commit any more: the source and the
//! target never both drop their copies, nor both run them.

use std::collections::HashMap;

/// How many attempts are remembered: a target asks within a minute.
const REMEMBERED: u64 = 4096;

/// Where an attempt stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Settled {
    /// The job is being dumped or sent; nothing decided yet.
    Pending,
    /// The source's copy is gone: the target's copy is the job.
    Committed,
    /// The source's copy is the job: the target must drop its own.
    Kept,
}

/// Attempts by (job, attempt number).
#[derive(Debug, Default)]
pub struct Ledger {
    attempts: HashMap<(String, u64), Settled>,
}

impl Ledger {
    /// A new attempt, pending. Old attempts are forgotten past
    /// [`REMEMBERED`].
    pub fn begin(&mut self, job: &str, attempt: u64) {
        self.attempts
            .insert((job.to_string(), attempt), Settled::Pending);
        if self.attempts.len() as u64 > REMEMBERED {
            self.attempts.retain(|(_, a), _| *a + REMEMBERED > attempt);
        }
    }

    /// The target confirmed its restore: commits the attempt unless it was
    /// settled already. `true` if the source must now kill its copy.
    pub fn commit(&mut self, job: &str, attempt: u64) -> bool {
        self.settle(job, attempt, Settled::Committed) == Settled::Committed
    }

    /// The move failed before any confirmation: the source keeps the job.
    /// An attempt already committed stays committed.
    pub fn keep(&mut self, job: &str, attempt: u64) -> Settled {
        self.settle(job, attempt, Settled::Kept)
    }

    /// A target asks what became of `attempt`: a pending attempt is settled
    /// as kept there and then; an unknown one (forgotten, or from before
    /// this agent restarted, when its jobs died with it) counts as kept.
    /// `true` if the target's copy is the job.
    pub fn answer(&mut self, job: &str, attempt: u64) -> bool {
        match self.attempts.get(&(job.to_string(), attempt)) {
            Some(_) => self.keep(job, attempt) == Settled::Committed,
            None => false,
        }
    }

    /// Settles a pending attempt as `to`; returns how it stands afterwards.
    fn settle(&mut self, job: &str, attempt: u64, to: Settled) -> Settled {
        let entry = self
            .attempts
            .entry((job.to_string(), attempt))
            .or_insert(Settled::Pending);
        if *entry == Settled::Pending {
            *entry = to;
        }
        *entry
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_confirmed_attempt_commits_once_and_says_so_when_asked() {
        let mut l = Ledger::default();
        l.begin("j", 1);
        assert!(l.commit("j", 1));
        assert!(l.answer("j", 1));
        assert_eq!(l.keep("j", 1), Settled::Committed);
        assert!(l.answer("j", 1));
    }

    #[test]
    fn a_question_before_the_confirmation_keeps_the_job_at_the_source() {
        let mut l = Ledger::default();
        l.begin("j", 1);
        assert!(!l.answer("j", 1));
        // The late `Restored` finds the attempt settled: no commit.
        assert!(!l.commit("j", 1));
        assert!(!l.answer("j", 1));
    }

    #[test]
    fn a_failed_attempt_is_kept_and_unknown_ones_count_as_kept() {
        let mut l = Ledger::default();
        l.begin("j", 1);
        assert_eq!(l.keep("j", 1), Settled::Kept);
        assert!(!l.commit("j", 1));
        assert!(!l.answer("j", 1));
        assert!(!l.answer("j", 2));
        assert!(!l.answer("other", 1));
    }

    #[test]
    fn old_attempts_are_forgotten() {
        let mut l = Ledger::default();
        for a in 1..=REMEMBERED + 10 {
            l.begin("j", a);
            l.commit("j", a);
        }
        assert!(!l.answer("j", 1));
        assert!(l.answer("j", REMEMBERED + 10));
        assert!(l.attempts.len() as u64 <= REMEMBERED + 1);
    }
}
