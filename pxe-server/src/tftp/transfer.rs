//! The per-transfer state machine of a read request: option negotiation
//! (RFC 2347/2348/2349, RFC 7440 windowsize) and the send/acknowledge/retransmit
//! loop. Pure: it consumes received datagrams and timeouts and answers with what
//! to send; the shell in [`super`] owns the socket, the clock and the file.
//!
//! Blocks are counted with a 64-bit index starting at 1; on the wire the number
//! is the index modulo 65536, so a file longer than 65535 blocks rolls over to
//! block 0 as tftp-hpa, curl, atftp and iPXE expect.

use std::time::Duration;

use super::packet::{self, ErrorCode, Packet, DEFAULT_BLKSIZE, MAX_BLKSIZE, MIN_BLKSIZE};

/// Server-side limits for TFTP.
#[derive(Clone, Debug)]
pub struct TftpLimits {
    /// Transfers running at once; further requests get an ERROR.
    pub max_transfers: usize,
    /// Largest block size granted (clients asking more get this).
    pub max_blksize: u16,
    /// Largest window granted (RFC 7440).
    pub max_windowsize: u16,
    /// Bytes of one window at most. Bounds a transfer's memory, and keeps a
    /// window's burst inside a client's default socket receive buffer: RFC 7440
    /// has no selective acknowledgement, so a burst that overflows it loses its
    /// tail and costs a retransmission timeout per window (measured with atftp on
    /// loopback: blksize 8192 × window 16 took minutes for 64 MiB, 64 KiB windows
    /// a fraction of a second).
    pub max_window_bytes: usize,
    /// Retransmission timeout unless the client negotiates `timeout`.
    pub timeout: Duration,
    /// Retransmissions of the same packet before the transfer is given up.
    pub max_retries: u32,
}

impl Default for TftpLimits {
    fn default() -> Self {
        TftpLimits {
            max_transfers: 256,
            max_blksize: MAX_BLKSIZE,
            max_windowsize: 64,
            max_window_bytes: 64 * 1024,
            timeout: Duration::from_secs(1),
            max_retries: 5,
        }
    }
}

/// What the transfer runs with after negotiation.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Negotiated {
    /// Bytes per DATA block.
    pub blksize: u16,
    /// Blocks sent before waiting for an ACK.
    pub windowsize: u16,
    /// Retransmission timeout.
    pub timeout: Duration,
    /// The options to acknowledge, in request order; empty means no OACK.
    pub oack: Vec<(String, String)>,
}

/// Applies the client's options to `limits`. Options the server does not know or
/// whose values are invalid are left out of the OACK, as RFC 2347 allows.
pub fn negotiate(options: &[(String, String)], file_size: u64, limits: &TftpLimits) -> Negotiated {
    let mut n = Negotiated {
        blksize: DEFAULT_BLKSIZE,
        windowsize: 1,
        timeout: limits.timeout,
        oack: Vec::new(),
    };
    let max_blksize = limits.max_blksize.clamp(MIN_BLKSIZE, MAX_BLKSIZE);
    let mut seen = Vec::new();
    for (name, value) in options {
        if seen.contains(name) {
            continue;
        }
        seen.push(name.clone());
        let num = value.trim().parse::<u64>().ok();
        match (name.as_str(), num) {
            ("blksize", Some(b)) if b >= u64::from(MIN_BLKSIZE) => {
                n.blksize = b.min(u64::from(max_blksize)) as u16;
                n.oack.push((name.clone(), n.blksize.to_string()));
            }
            ("tsize", Some(_)) => n.oack.push((name.clone(), file_size.to_string())),
            ("timeout", Some(t)) if (1..=255).contains(&t) => {
                n.timeout = Duration::from_secs(t);
                n.oack.push((name.clone(), t.to_string()));
            }
            ("windowsize", Some(w)) if (1..=65535).contains(&w) => {
                n.windowsize = w.min(u64::from(limits.max_windowsize.max(1))) as u16;
                n.oack.push((name.clone(), n.windowsize.to_string()));
            }
            _ => {}
        }
    }
    // Bound the memory one window needs; the block size is fixed first because it
    // is what the client's MTU planning depends on.
    let fit = (limits.max_window_bytes / usize::from(n.blksize)).clamp(1, 32768) as u16;
    if n.windowsize > fit {
        n.windowsize = fit;
        for (k, v) in n.oack.iter_mut() {
            if k == "windowsize" {
                *v = fit.to_string();
            }
        }
    }
    n
}

/// What to put on the wire next.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Send {
    /// Nothing.
    Nothing,
    /// A ready packet (OACK or ERROR).
    Packet(Vec<u8>),
    /// DATA blocks `first..first+count` (64-bit indices; the shell reads the file).
    Blocks {
        /// Index of the first block, starting at 1.
        first: u64,
        /// Number of blocks.
        count: u64,
    },
}

/// How a transfer ended.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Outcome {
    /// The client acknowledged the last block.
    Complete,
    /// The client sent an ERROR packet.
    ClientError {
        /// Its code.
        code: u16,
        /// Its message.
        message: String,
    },
    /// The retry budget ran out.
    TimedOut,
}

/// The answer to one event.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Step {
    /// What to send.
    pub send: Send,
    /// `Some` when the transfer is over (after sending `send`).
    pub done: Option<Outcome>,
    /// Whether the event made progress (restart the retransmission clock).
    pub progress: bool,
}

impl Step {
    fn nothing() -> Step {
        Step {
            send: Send::Nothing,
            done: None,
            progress: false,
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Phase {
    Oack,
    Data,
    Done,
}

/// One read transfer.
#[derive(Clone, Debug)]
pub struct Transfer {
    size: u64,
    blksize: u64,
    windowsize: u64,
    last_block: u64,
    phase: Phase,
    /// First block not yet acknowledged.
    base: u64,
    /// One past the last block sent.
    sent_end: u64,
    retries: u32,
    max_retries: u32,
    oack: Vec<u8>,
}

/// The wire number of block index `idx`.
pub fn wire_block(idx: u64) -> u16 {
    (idx & 0xffff) as u16
}

impl Transfer {
    /// Starts a transfer of `size` bytes; returns the first thing to send.
    pub fn start(n: &Negotiated, size: u64, max_retries: u32) -> (Transfer, Step) {
        let blksize = u64::from(n.blksize.max(1));
        let mut t = Transfer {
            size,
            blksize,
            windowsize: u64::from(n.windowsize.max(1)),
            // The final block is the first one shorter than blksize, possibly empty.
            last_block: size / blksize + 1,
            phase: Phase::Oack,
            base: 1,
            sent_end: 1,
            retries: 0,
            max_retries,
            oack: Vec::new(),
        };
        let step = if n.oack.is_empty() {
            t.phase = Phase::Data;
            t.send_window()
        } else {
            t.oack = packet::encode_oack(&n.oack);
            Step {
                send: Send::Packet(t.oack.clone()),
                done: None,
                progress: true,
            }
        };
        (t, step)
    }

    /// Bytes of the file covered by block `idx`: (offset, length).
    pub fn block_range(&self, idx: u64) -> (u64, usize) {
        let off = (idx - 1).saturating_mul(self.blksize);
        let len = self.size.saturating_sub(off).min(self.blksize);
        (off, len as usize)
    }

    /// The file size this transfer sends.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Bytes the client has acknowledged.
    pub fn acked_bytes(&self) -> u64 {
        ((self.base - 1) * self.blksize).min(self.size)
    }

    fn send_window(&mut self) -> Step {
        let count = self.windowsize.min(self.last_block + 1 - self.base);
        self.sent_end = self.base + count;
        Step {
            send: Send::Blocks {
                first: self.base,
                count,
            },
            done: None,
            progress: true,
        }
    }

    /// Handles a datagram from the client's transfer ID.
    pub fn on_datagram(&mut self, buf: &[u8]) -> Step {
        if self.phase == Phase::Done {
            return Step::nothing();
        }
        match packet::parse(buf) {
            Ok(Packet::Error { code, message }) => {
                self.phase = Phase::Done;
                Step {
                    send: Send::Nothing,
                    done: Some(Outcome::ClientError { code, message }),
                    progress: false,
                }
            }
            Ok(Packet::Ack(n)) => self.on_ack(n),
            // Anything else from the client's port is noise; the retry budget
            // bounds how long it can keep us around.
            _ => Step::nothing(),
        }
    }

    fn on_ack(&mut self, n: u16) -> Step {
        match self.phase {
            Phase::Oack if n == 0 => {
                self.phase = Phase::Data;
                self.retries = 0;
                self.send_window()
            }
            Phase::Data => {
                // Candidates are base-1 (a duplicate) .. sent_end-1; windows are
                // far smaller than 65536 so the match is unique.
                let prev = self.base - 1;
                let idx = prev + u64::from(n.wrapping_sub(wire_block(prev)));
                if idx == prev || idx >= self.sent_end {
                    // Duplicate or stale: never resend on it (Sorcerer's Apprentice).
                    return Step::nothing();
                }
                self.base = idx + 1;
                self.retries = 0;
                if idx == self.last_block {
                    self.phase = Phase::Done;
                    return Step {
                        send: Send::Nothing,
                        done: Some(Outcome::Complete),
                        progress: true,
                    };
                }
                self.send_window()
            }
            _ => Step::nothing(),
        }
    }

    /// Handles expiry of the retransmission timer.
    pub fn on_timeout(&mut self) -> Step {
        if self.phase == Phase::Done {
            return Step::nothing();
        }
        self.retries += 1;
        if self.retries > self.max_retries {
            self.phase = Phase::Done;
            return Step {
                send: Send::Packet(packet::encode_error(
                    ErrorCode::NotDefined,
                    &format!("timed out after {} retransmissions", self.max_retries),
                )),
                done: Some(Outcome::TimedOut),
                progress: false,
            };
        }
        let send = match self.phase {
            Phase::Oack => Send::Packet(self.oack.clone()),
            _ => Send::Blocks {
                first: self.base,
                count: self.sent_end - self.base,
            },
        };
        Step {
            send,
            done: None,
            progress: true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    fn show(step: &Step, out: &mut String) {
        match &step.send {
            Send::Nothing => {}
            Send::Blocks { first, count } => {
                let last = first + count - 1;
                out.push_str(&format!(
                    "  -> data {}..{} (wire {}..{})\n",
                    first,
                    last,
                    wire_block(*first),
                    wire_block(last)
                ));
            }
            Send::Packet(p) => out.push_str(&format!("  -> {:?}\n", packet::parse(p).unwrap())),
        }
        if let Some(d) = &step.done {
            out.push_str(&format!("  done {d:?}\n"));
        }
    }

    /// Runs a script: the first line is `size N [opt=value ...]`, then events
    /// `ack N`, `timeout`, `error N`, `junk`.
    fn check(script: &str, expect: Expect) {
        let mut lines = script.trim().lines().map(str::trim);
        let head: Vec<&str> = lines.next().unwrap().split_whitespace().collect();
        assert_eq!(head[0], "size");
        let size: u64 = head[1].parse().unwrap();
        let raw: Vec<(&str, &str)> = head[2..]
            .iter()
            .map(|kv| kv.split_once('=').unwrap())
            .collect();
        let rrq = packet::encode_request(1, b"f", "octet", &raw);
        let Ok(Packet::Rrq(req)) = packet::parse(&rrq) else {
            panic!("bad rrq")
        };
        let opts = req.options;
        let limits = TftpLimits {
            max_retries: 2,
            max_windowsize: 16,
            ..TftpLimits::default()
        };
        let n = negotiate(&opts, size, &limits);
        let mut out = format!(
            "blksize={} window={} timeout={:?} oack={:?}\n",
            n.blksize, n.windowsize, n.timeout, n.oack
        );
        let (mut t, step) = Transfer::start(&n, size, limits.max_retries);
        out.push_str("start\n");
        show(&step, &mut out);
        for ev in lines {
            out.push_str(ev);
            out.push('\n');
            let step = match ev.split_whitespace().collect::<Vec<_>>().as_slice() {
                ["ack", n] => t.on_datagram(&packet::encode_ack(n.parse().unwrap())),
                ["timeout"] => t.on_timeout(),
                ["error", n] => t.on_datagram(&packet::encode_error(
                    if *n == "8" {
                        ErrorCode::OptionRefused
                    } else {
                        ErrorCode::NotDefined
                    },
                    "client says no",
                )),
                ["junk"] => t.on_datagram(&[0, 9, 1]),
                other => panic!("bad event {other:?}"),
            };
            show(&step, &mut out);
        }
        expect.assert_eq(&out);
    }

    #[test]
    fn lockstep_without_options() {
        check(
            "size 1200
             ack 1
             ack 1
             ack 2
             ack 3",
            expect![[r#"
                blksize=512 window=1 timeout=1s oack=[]
                start
                  -> data 1..1 (wire 1..1)
                ack 1
                  -> data 2..2 (wire 2..2)
                ack 1
                ack 2
                  -> data 3..3 (wire 3..3)
                ack 3
                  done Complete
            "#]],
        );
    }

    #[test]
    fn exact_multiple_ends_with_empty_block() {
        check(
            "size 1024
             ack 1
             ack 2
             ack 3",
            expect![[r#"
                blksize=512 window=1 timeout=1s oack=[]
                start
                  -> data 1..1 (wire 1..1)
                ack 1
                  -> data 2..2 (wire 2..2)
                ack 2
                  -> data 3..3 (wire 3..3)
                ack 3
                  done Complete
            "#]],
        );
    }

    #[test]
    fn empty_file() {
        check(
            "size 0
             ack 1",
            expect![[r#"
                blksize=512 window=1 timeout=1s oack=[]
                start
                  -> data 1..1 (wire 1..1)
                ack 1
                  done Complete
            "#]],
        );
    }

    #[test]
    fn oack_then_windows_and_duplicate_acks() {
        check(
            "size 5000 blksize=1000 windowsize=4 tsize=0 timeout=3 foo=bar
             ack 0
             ack 0
             ack 2
             ack 2
             ack 1
             ack 6
             ack 5
             ack 6",
            expect![[r#"
                blksize=1000 window=4 timeout=3s oack=[("blksize", "1000"), ("windowsize", "4"), ("tsize", "5000"), ("timeout", "3")]
                start
                  -> Oack([("blksize", "1000"), ("windowsize", "4"), ("tsize", "5000"), ("timeout", "3")])
                ack 0
                  -> data 1..4 (wire 1..4)
                ack 0
                ack 2
                  -> data 3..6 (wire 3..6)
                ack 2
                ack 1
                ack 6
                  done Complete
                ack 5
                ack 6
            "#]],
        );
    }

    #[test]
    fn client_error_after_oack_ends_at_once() {
        check(
            "size 100000 tsize=0
             error 8
             timeout
             ack 0",
            expect![[r#"
                blksize=512 window=1 timeout=1s oack=[("tsize", "100000")]
                start
                  -> Oack([("tsize", "100000")])
                error 8
                  done ClientError { code: 8, message: "client says no" }
                timeout
                ack 0
            "#]],
        );
    }

    #[test]
    fn client_error_mid_transfer() {
        check(
            "size 100000
             ack 1
             error 0
             ack 2",
            expect![[r#"
                blksize=512 window=1 timeout=1s oack=[]
                start
                  -> data 1..1 (wire 1..1)
                ack 1
                  -> data 2..2 (wire 2..2)
                error 0
                  done ClientError { code: 0, message: "client says no" }
                ack 2
            "#]],
        );
    }

    #[test]
    fn retransmission_budget() {
        check(
            "size 3000 blksize=1000 windowsize=2
             timeout
             ack 0
             timeout
             ack 1
             timeout
             timeout
             junk
             timeout",
            expect![[r#"
                blksize=1000 window=2 timeout=1s oack=[("blksize", "1000"), ("windowsize", "2")]
                start
                  -> Oack([("blksize", "1000"), ("windowsize", "2")])
                timeout
                  -> Oack([("blksize", "1000"), ("windowsize", "2")])
                ack 0
                  -> data 1..2 (wire 1..2)
                timeout
                  -> data 1..2 (wire 1..2)
                ack 1
                  -> data 2..3 (wire 2..3)
                timeout
                  -> data 2..3 (wire 2..3)
                timeout
                  -> data 2..3 (wire 2..3)
                junk
                timeout
                  -> Error { code: 0, message: "timed out after 2 retransmissions" }
                  done TimedOut
            "#]],
        );
    }

    #[test]
    fn option_limits_and_invalid_values() {
        check(
            "size 10 blksize=7 windowsize=0 timeout=256 tsize=x",
            expect![[r#"
                blksize=512 window=1 timeout=1s oack=[]
                start
                  -> data 1..1 (wire 1..1)
            "#]],
        );
        check(
            "size 10 BLKSIZE=99999 windowsize=99 blksize=100",
            expect![[r#"
                blksize=65464 window=1 timeout=1s oack=[("blksize", "65464"), ("windowsize", "1")]
                start
                  -> Oack([("blksize", "65464"), ("windowsize", "1")])
            "#]],
        );
    }

    #[test]
    fn window_bytes_cap_shrinks_window() {
        let limits = TftpLimits {
            max_window_bytes: 100_000,
            ..TftpLimits::default()
        };
        let opts = [
            ("blksize".to_string(), "65464".to_string()),
            ("windowsize".to_string(), "64".to_string()),
        ];
        let n = negotiate(&opts, 1 << 30, &limits);
        assert_eq!((n.blksize, n.windowsize), (65464, 1));
        assert_eq!(n.oack[1], ("windowsize".to_string(), "1".to_string()));
    }

    #[test]
    fn rollover_past_65535_blocks() {
        // 65537 full blocks of 8 bytes plus the empty final block.
        let n = negotiate(
            &[
                ("blksize".into(), "8".into()),
                ("windowsize".into(), "4".into()),
            ],
            8 * 65537,
            &TftpLimits::default(),
        );
        let (mut t, _) = Transfer::start(&n, 8 * 65537, 5);
        let mut step = t.on_datagram(&packet::encode_ack(0));
        let mut acks = 0u64;
        while let Send::Blocks { first, count } = step.send {
            let last = first + count - 1;
            acks += 1;
            // A duplicate of the previous ACK is ignored even across the wrap.
            assert_eq!(
                t.on_datagram(&packet::encode_ack(wire_block(first - 1))),
                Step::nothing()
            );
            step = t.on_datagram(&packet::encode_ack(wire_block(last)));
            if step.done.is_some() {
                assert_eq!(last, 65538);
                assert_eq!(wire_block(last), 2);
                break;
            }
        }
        assert_eq!(step.done, Some(Outcome::Complete));
        assert_eq!(acks, 65538u64.div_ceil(4));
        assert_eq!(t.block_range(65538), (8 * 65537, 0));
    }
}
