//! Fuzz target: the framing of exec streams and the control socket, and the
//! small HTTP answers nodes read from the head. A client hello is checked
//! strictly; arbitrary chunks never open under a stream's cipher, while the
//! same bytes sealed by the peer open in order; a `PeerFrame`, a control
//! request or reply, and a control hello decode without panicking and a
//! decoded one encodes back to the same bytes; an HTTP response
//! parse never panics and never returns a body longer than its input.
#![no_main]

use contracts::http::parse_response;
use libfuzzer_sys::fuzz_target;
use node_agent::crypto::{parse_hello, stream_ciphers, Role, HELLO_LEN};
use agent_control::protocol::Hello;
use agent_control::{ControlReply, ControlRequest};
use node_agent::wire::PeerFrame;

fuzz_target!(|data: &[u8]| {
    let _ = parse_hello(&data[..data.len().min(HELLO_LEN)]);
    let root = [5u8; 32];
    let (cn, sn) = ([1u8; 32], [2u8; 32]);
    let (mut client_send, _) = stream_ciphers(&root, &cn, &sn, Role::Client);
    let (_, mut server_recv) = stream_ciphers(&root, &cn, &sn, Role::Server);
    assert!(server_recv.open(data).is_err(), "an unsealed chunk opened");
    let (mut client_send2, _) = stream_ciphers(&root, &cn, &sn, Role::Client);
    let (_, mut server_recv2) = stream_ciphers(&root, &cn, &sn, Role::Server);
    let sealed = client_send2.seal(data);
    assert_eq!(server_recv2.open(&sealed).unwrap(), data);
    let _ = client_send.seal(data);

    if let Ok(f) = PeerFrame::decode(data) {
        // Bytes, not values: a float may be NaN, which equals nothing.
        let bytes = f.encode();
        assert_eq!(PeerFrame::decode(&bytes).unwrap().encode(), bytes);
    }
    if let Ok(r) = postcard::from_bytes::<ControlRequest>(data) {
        let bytes = postcard::to_stdvec(&r).unwrap();
        let again: ControlRequest = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(postcard::to_stdvec(&again).unwrap(), bytes);
    }
    if let Ok(r) = postcard::from_bytes::<ControlReply>(data) {
        let bytes = postcard::to_stdvec(&r).unwrap();
        let again: ControlReply = postcard::from_bytes(&bytes).unwrap();
        assert_eq!(postcard::to_stdvec(&again).unwrap(), bytes);
    }
    if let Some(h) = Hello::decode(data) {
        assert_eq!(Hello::decode(&h.encode()), Some(h));
    }
    if let Some((status, body)) = parse_response(data) {
        assert!(status.starts_with("HTTP/1."));
        assert!(body.len() <= data.len());
    }
});
