//! Fuzz target: the framing of exec streams and the control socket, and the
//! small HTTP answers nodes read from the head. A client hello is checked
//! strictly; arbitrary chunks never open under a stream's cipher, while the
//! same bytes sealed by the peer open in order; a `Frame` decodes without
//! panicking and a decoded one encodes back to the same bytes; an HTTP response
//! parse never panics and never returns a body longer than its input.
#![no_main]

use contracts::http::parse_response;
use libfuzzer_sys::fuzz_target;
use node_agent::crypto::{parse_hello, stream_ciphers, Role, HELLO_LEN};
use node_agent::wire::Frame;

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

    if let Ok(f) = Frame::decode(data) {
        // Bytes, not values: a float may be NaN, which equals nothing.
        let bytes = f.encode();
        assert_eq!(Frame::decode(&bytes).unwrap().encode(), bytes);
    }
    if let Some((status, body)) = parse_response(data) {
        assert!(status.starts_with("HTTP/1."));
        assert!(body.len() <= data.len());
    }
});
