//! Fuzz target: TFTP request parsing, name confinement and the transfer state
//! machine. Invariants checked: nothing panics; a sanitized name is relative and
//! has no `..`; an accepted RRQ's negotiated values stay inside RFC limits; the
//! state machine, fed the rest of the input as client datagrams, never asks for
//! blocks past the end of the file.
#![no_main]

use libfuzzer_sys::fuzz_target;
use pxe_server::tftp::packet::{self, Packet, MAX_BLKSIZE, MIN_BLKSIZE};
use pxe_server::tftp::path::sanitize;
use pxe_server::tftp::transfer::{negotiate, Send, TftpLimits, Transfer};

fuzz_target!(|data: &[u8]| {
    // First datagram: up to the first 0xff 0xff marker; the rest are client packets.
    let (first, rest) = match data.windows(2).position(|w| w == [0xff, 0xff]) {
        Some(i) => (&data[..i], &data[i + 2..]),
        None => (data, &[][..]),
    };
    let Ok(Packet::Rrq(req)) = packet::parse(first) else {
        return;
    };
    if let Ok(p) = sanitize(&req.filename) {
        assert!(p.is_relative());
        assert!(p
            .components()
            .all(|c| matches!(c, std::path::Component::Normal(_))));
    }
    let size = (req.filename.len() as u64) * 977;
    let limits = TftpLimits::default();
    let n = negotiate(&req.options, size, &limits);
    assert!((MIN_BLKSIZE..=MAX_BLKSIZE).contains(&n.blksize));
    assert!(n.windowsize >= 1 && n.windowsize <= limits.max_windowsize);
    let (mut t, _) = Transfer::start(&n, size, 3);
    let last = size / u64::from(n.blksize) + 1;
    for chunk in rest.split(|&b| b == 0xfe) {
        let step = if chunk.is_empty() {
            t.on_timeout()
        } else {
            t.on_datagram(chunk)
        };
        if let Send::Blocks { first, count } = step.send {
            assert!(first >= 1 && count >= 1 && first + count - 1 <= last);
        }
        if step.done.is_some() {
            break;
        }
    }
});
