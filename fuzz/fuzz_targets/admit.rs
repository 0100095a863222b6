//! Fuzz target: admission from the network. The input is split at `\n`
//! into requests a stranger sends (`POST /api/v1/admit` bodies) and admin
//! headers and bodies (`/api/v1/admission`); each line's first byte picks the
//! policy, whether the machine booted from the head, and the clock. Invariants:
//! nothing panics; a malformed body is an error, not a decision; the book
//! only admits a machine with the key it now holds (`admitted_key` equals
//! the request's key after every `Admit`); a rejected MAC is never admitted;
//! an unsigned or wrongly signed admin request is refused; a sealed answer
//! made of arbitrary fields never opens; a join request's proof never
//! checks without the token's secret; a token registered from the bytes is
//! spent at most its uses, and never once expired; the head's multicast
//! announcement (what a machine booted from the ISO trusts to find the
//! head) decodes to something that encodes back to itself, or to an error;
//! a key rotation's sealed key made of arbitrary bytes never opens, and a
//! key ring given arbitrary times keeps the new key and refuses a second
//! rotation while the first runs.
#![no_main]

use std::collections::HashSet;

use contracts::admit::{
    check_admin, check_join_proof, AdmitAnswer, AdmitRequest, JoinRequest, MachineKey, Token,
    TokenRequest, Verdict,
};
use contracts::key::ClusterKey;
use contracts::mac::MacAddr;
use libfuzzer_sys::fuzz_target;
use pxe_server::admission::{Answer, Book, BootSeen, Policy};

fuzz_target!(|data: &[u8]| {
    let key = ClusterKey::from_bytes([7; 32]);
    let mut book = Book::default();
    let mut rejected: HashSet<MacAddr> = HashSet::new();
    let mut now = 1_000_000u64;
    for line in data.split(|&b| b == b'\n') {
        let Some((&ctl, body)) = line.split_first() else {
            continue;
        };
        now += u64::from(ctl & 0x3f) * 60;
        let policy = if ctl & 0x40 == 0 { Policy::Auto } else { Policy::Manual };
        if let Ok(req) = serde_json::from_slice::<AdmitRequest>(body) {
            let boot = (ctl & 0x80 != 0).then_some(BootSeen {
                at: now - 5,
                address: None,
            });
            let (answer, _) = book.ask(policy, &req, None, boot, now);
            if answer == Answer::Admit {
                assert_eq!(book.admitted_key(req.mac), Some(req.public));
                assert!(!rejected.contains(&req.mac));
            }
            // An admin's decision on whatever asked, by MAC, now and then.
            if ctl & 0x3 == 0x3 {
                let verdict = if ctl & 0x4 == 0 { Verdict::Admit } else { Verdict::Reject };
                if book.decide(&req.mac.to_string(), verdict, now).is_ok() {
                    match verdict {
                        Verdict::Reject => rejected.insert(req.mac),
                        Verdict::Admit => rejected.remove(&req.mac),
                    };
                }
            }
        }
        // The same bytes as a join (the join endpoint's order: proof, then
        // spending) and as a token registration.
        if let Ok(req) = serde_json::from_slice::<JoinRequest>(body) {
            if let Ok(token) = Token::for_id(&key, "c", &req.token) {
                assert!(!check_join_proof(&token, &req.public, &req.name, &req.proof));
            }
        }
        if let Ok(req) = serde_json::from_slice::<TokenRequest>(body) {
            if let Ok(info) = book.register_token(&req, now) {
                let mut spent = 0u32;
                for step in 0..(req.uses.min(50) + 2) {
                    let at = now + u64::from(step) * u64::from(ctl);
                    let ok = book
                        .spend_token(&info.id, (None, "w", MachineKey::generate().public()), None, at)
                        .is_ok();
                    if ok {
                        assert!(at < info.expires);
                        spent += 1;
                    }
                }
                assert!(spent <= req.uses);
            }
        }
        // The same bytes as an admin request: time and tag headers from
        // the body's first two whitespace-separated words.
        let text = String::from_utf8_lossy(body);
        let mut words = text.split_whitespace();
        let (time, tag) = (words.next(), words.next());
        assert!(check_admin(&key, "c", "POST", "/api/v1/admission", time, tag, body, now).is_err());
        // As the head's announcement a machine booted from the ISO hears.
        if let Ok(a) = contracts::announce::Announcement::decode(body) {
            assert_eq!(contracts::announce::Announcement::decode(&a.encode()), Ok(a));
        }
        // As a key rotation handed to the head: its sealed key never opens
        // without the key, and the ring follows its rules whatever the times.
        if let Ok(req) = serde_json::from_slice::<contracts::rotate::RotateRequest>(body) {
            assert!(contracts::rotate::open_key(&[&key], "c", &req.sealed).is_err());
            let mut ring = contracts::rotate::KeyRing::new(key.clone());
            let new = ClusterKey::from_bytes([8; 32]);
            if ring.rotate(new.clone(), now, req.switch_in_ms, req.window_ms).is_ok() {
                assert_eq!(ring.newest(), &new);
                assert!(ring.accepted(now).contains(&&new));
                assert!(ring.rotate(ClusterKey::from_bytes([9; 32]), now, 0, 5_000).is_err());
            }
        }
        // And as an answer a node would try to open.
        if let Ok(AdmitAnswer::Admitted { cluster, enc, sealed }) =
            serde_json::from_slice::<AdmitAnswer>(body)
        {
            let me = MachineKey::generate();
            assert!(me.open(&cluster, MacAddr([2, 0, 0, 0, 0, 1]), &enc, &sealed).is_err());
        }
    }
});
