//! Fuzz target: the agents' datagrams, before and after authentication.
//! Arbitrary bytes never open under the cluster key; the same bytes sealed
//! by a member open exactly once (a replay is refused); what opens is
//! decoded as a `Datagram` without panicking, and a decoded one encodes
//! back to the same bytes; its SWIM payload, fed to a membership (a member can
//! send anything), never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use node_agent::crypto::{Opener, Sealer};
use node_agent::membership::{Membership, NodeId};
use node_agent::wire::Datagram;
use rand10::SeedableRng;

const KEY: [u8; 32] = [9; 32];
const NOW_MS: u64 = 1_800_000_000_000;

fn me() -> NodeId {
    NodeId {
        name: "n0".into(),
        addr: "10.0.0.1:7946".parse().unwrap(),
        started_ms: 1,
        bump: 0,
    }
}

fuzz_target!(|data: &[u8]| {
    let mut opener = Opener::new(&KEY, 1);
    assert!(opener.open(NOW_MS, data).is_err(), "unsealed bytes opened");
    let mut sealer = Sealer::new(&KEY, 2);
    let packet = sealer.seal(NOW_MS, data);
    let opened = opener.open(NOW_MS, &packet).expect("a member's packet opens");
    assert_eq!(opened.plaintext, data);
    assert!(opener.open(NOW_MS, &packet).is_err(), "a replay opened");
    let mut flipped = sealer.seal(NOW_MS, data);
    let last = flipped.len() - 1;
    flipped[last] ^= 1;
    assert!(opener.open(NOW_MS, &flipped).is_err(), "a flipped bit opened");

    if let Ok(d) = Datagram::decode(&opened.plaintext) {
        // Bytes, not values: a float may be NaN, which equals nothing.
        let bytes = d.encode();
        assert_eq!(Datagram::decode(&bytes).unwrap().encode(), bytes);
        if let Datagram::Swim(swim) = d {
            let mut m = Membership::with_rng(me(), rand10::rngs::StdRng::seed_from_u64(1));
            let _ = m.handle_data(&swim);
        }
    }
    let mut m = Membership::with_rng(me(), rand10::rngs::StdRng::seed_from_u64(2));
    let _ = m.handle_data(data);
});
