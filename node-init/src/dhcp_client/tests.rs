//! The client state machine's tests: scripts of inputs (start, timers,
//! server replies) against a fresh [`Client`], compared as transcripts of
//! actions, states and deadlines.

use std::fmt::Write;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use contracts::mac::MacAddr;
use dhcproto::v4::{DhcpOption, Message, MessageType, Opcode, OptionCode};
use dhcproto::{Decodable, Decoder, Encodable};
use expect_test::{expect, Expect};

use super::client::{backoff, hostname_from_mac, valid_hostname, Action, Client, Input};

const MAC: MacAddr = MacAddr([0x52, 0x54, 0x00, 0x12, 0x34, 0xab]);
const SERVER: Ipv4Addr = Ipv4Addr::new(10, 99, 0, 1);

/// A server reply to the last request the client sent.
fn reply(kind: MessageType, xid: u32, yiaddr: Ipv4Addr, extra: &[DhcpOption]) -> Vec<u8> {
    let mut m = Message::new(
        Ipv4Addr::UNSPECIFIED,
        yiaddr,
        SERVER,
        Ipv4Addr::UNSPECIFIED,
        &MAC.0,
    );
    m.set_opcode(Opcode::BootReply).set_xid(xid);
    m.opts_mut().insert(DhcpOption::MessageType(kind));
    m.opts_mut().insert(DhcpOption::ServerIdentifier(SERVER));
    for o in extra {
        m.opts_mut().insert(o.clone());
    }
    m.to_vec().unwrap()
}

fn full_options() -> Vec<DhcpOption> {
    vec![
        DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 255, 0)),
        DhcpOption::Router(vec![SERVER]),
        DhcpOption::DomainNameServer(vec![SERVER, Ipv4Addr::new(10, 99, 0, 2)]),
        DhcpOption::Hostname("n1".into()),
        DhcpOption::DomainName("lab".into()),
        DhcpOption::AddressLeaseTime(600),
    ]
}

/// A script step: seconds since start, then what happens.
enum Step {
    Start,
    Timer,
    /// A reply built from the client's current xid.
    Reply(MessageType, [u8; 4], Vec<DhcpOption>),
    /// A reply with a wrong transaction id.
    Stray(MessageType),
    /// Bytes that are not DHCP.
    Garbage,
}

fn render(actions: &[Action]) -> String {
    let mut s = String::new();
    for a in actions {
        match a {
            Action::Send { payload, to, from } => {
                let m = Message::decode(&mut Decoder::new(payload)).unwrap();
                let opt = |c| m.opts().get(c).cloned();
                let mut extra = String::new();
                if let Some(DhcpOption::RequestedIpAddress(ip)) =
                    opt(OptionCode::RequestedIpAddress)
                {
                    write!(extra, " requested={ip}").unwrap();
                }
                if let Some(DhcpOption::ServerIdentifier(ip)) = opt(OptionCode::ServerIdentifier) {
                    write!(extra, " server={ip}").unwrap();
                }
                writeln!(
                    s,
                    "  send {:?} to={to:?} from={from:?} ciaddr={} bcast={} secs={}{extra}",
                    m.opts().msg_type().unwrap(),
                    m.ciaddr(),
                    m.flags().broadcast(),
                    m.secs(),
                )
                .unwrap();
            }
            Action::Configure(l) => writeln!(
                s,
                "  configure {}/{} gw={:?} dns={:?} host={:?} domain={:?} lease={}s t1={}s t2={}s",
                l.address,
                l.prefix_len(),
                l.routers,
                l.dns,
                l.hostname,
                l.domain,
                l.lease_time.as_secs(),
                l.renew_after.as_secs(),
                l.rebind_after.as_secs()
            )
            .unwrap(),
            Action::Renewed(l) => writeln!(
                s,
                "  renewed {} lease={}s",
                l.address,
                l.lease_time.as_secs()
            )
            .unwrap(),
            Action::Deconfigure(l) => writeln!(s, "  deconfigure {}", l.address).unwrap(),
            Action::Notice(n) => writeln!(s, "  notice {n:?}").unwrap(),
        }
    }
    s
}

/// Runs a script against a fresh client and compares the transcript:
/// each step, the actions, the state and the next deadline.
fn check(script: &[(u64, Step)], expect: Expect) {
    let t0 = Instant::now();
    let mut c = Client::new(MAC, 0x1000, t0);
    let mut out = String::new();
    for (at, step) in script {
        let now = t0 + Duration::from_secs(*at);
        let (label, actions) = match step {
            Step::Start => ("start".to_string(), c.handle(now, Input::Start)),
            Step::Timer => ("timer".to_string(), c.handle(now, Input::Timer)),
            Step::Reply(kind, ip, opts) => {
                let bytes = reply(*kind, c.xid(), Ipv4Addr::from(*ip), opts);
                (
                    format!("{kind:?} {}", Ipv4Addr::from(*ip)),
                    c.handle(now, Input::Packet(&bytes)),
                )
            }
            Step::Stray(kind) => {
                let bytes = reply(
                    *kind,
                    c.xid() ^ 0xffff,
                    Ipv4Addr::new(10, 99, 0, 66),
                    &full_options(),
                );
                (
                    format!("stray {kind:?}"),
                    c.handle(now, Input::Packet(&bytes)),
                )
            }
            Step::Garbage => (
                "garbage".to_string(),
                c.handle(now, Input::Packet(b"\x02\x01junk")),
            ),
        };
        let next = c
            .deadline()
            .map(|d| format!("+{}s", d.saturating_duration_since(t0).as_secs()))
            .unwrap_or_else(|| "none".into());
        write!(
            out,
            "t={at} {label}\n{}  -> {} next {next}\n",
            render(&actions),
            c.state_name()
        )
        .unwrap();
    }
    expect.assert_eq(&out);
}

const IP: [u8; 4] = [10, 99, 0, 50];

#[test]
fn four_way_exchange_then_renewal() {
    check(
        &[
            (0, Step::Start),
            (1, Step::Stray(MessageType::Offer)),
            (1, Step::Garbage),
            (1, Step::Reply(MessageType::Offer, IP, full_options())),
            (1, Step::Reply(MessageType::Ack, IP, full_options())),
            (299, Step::Timer),
            (301, Step::Timer),
            (302, Step::Reply(MessageType::Ack, IP, full_options())),
        ],
        expect![[r#"
            t=0 start
              send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
              -> SELECTING next +2s
            t=1 stray Offer
              -> SELECTING next +2s
            t=1 garbage
              -> SELECTING next +2s
            t=1 Offer 10.99.0.50
              send Request to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=1 requested=10.99.0.50 server=10.99.0.1
              -> REQUESTING next +3s
            t=1 Ack 10.99.0.50
              configure 10.99.0.50/24 gw=[10.99.0.1] dns=[10.99.0.1, 10.99.0.2] host=Some("n1") domain=Some("lab") lease=600s t1=300s t2=525s
              -> BOUND next +301s
            t=299 timer
              -> BOUND next +301s
            t=301 timer
              send Request to=Unicast(10.99.0.1) from=Some(10.99.0.50) ciaddr=10.99.0.50 bcast=false secs=0
              -> RENEWING next +413s
            t=302 Ack 10.99.0.50
              renewed 10.99.0.50 lease=600s
              -> BOUND next +602s
        "#]],
    );
}

#[test]
fn renew_unicast_then_rebind_broadcast_then_expire() {
    let short = vec![
        DhcpOption::SubnetMask(Ipv4Addr::new(255, 255, 0, 0)),
        DhcpOption::AddressLeaseTime(1000),
    ];
    check(
        &[
            (0, Step::Start),
            (0, Step::Reply(MessageType::Offer, IP, short.clone())),
            (0, Step::Reply(MessageType::Ack, IP, short.clone())),
            (500, Step::Timer),
            (700, Step::Timer),
            (875, Step::Timer),
            (1000, Step::Timer),
        ],
        expect![[r#"
            t=0 start
              send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
              -> SELECTING next +2s
            t=0 Offer 10.99.0.50
              send Request to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0 requested=10.99.0.50 server=10.99.0.1
              -> REQUESTING next +2s
            t=0 Ack 10.99.0.50
              configure 10.99.0.50/16 gw=[] dns=[] host=None domain=None lease=1000s t1=500s t2=875s
              -> BOUND next +500s
            t=500 timer
              send Request to=Unicast(10.99.0.1) from=Some(10.99.0.50) ciaddr=10.99.0.50 bcast=false secs=0
              -> RENEWING next +687s
            t=700 timer
              send Request to=Unicast(10.99.0.1) from=Some(10.99.0.50) ciaddr=10.99.0.50 bcast=false secs=200
              -> RENEWING next +787s
            t=875 timer
              send Request to=Broadcast from=Some(10.99.0.50) ciaddr=10.99.0.50 bcast=false secs=0
              -> REBINDING next +937s
            t=1000 timer
              deconfigure 10.99.0.50
              send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
              -> SELECTING next +1002s
        "#]],
    );
}

#[test]
fn no_answer_backs_off_and_says_so() {
    let mut script = vec![(0, Step::Start)];
    let mut t = 0;
    for _ in 0..5 {
        t += backoff(script.len() as u32).as_secs();
        script.push((t, Step::Timer));
    }
    check(
        &script,
        expect![[r#"
            t=0 start
              send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
              -> SELECTING next +2s
            t=2 timer
              send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=2
              -> SELECTING next +6s
            t=6 timer
              send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=6
              -> SELECTING next +14s
            t=14 timer
              notice NoOffer { attempts: 3 }
              send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=14
              -> SELECTING next +30s
            t=30 timer
              send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=30
              -> SELECTING next +62s
            t=62 timer
              send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=62
              -> SELECTING next +94s
        "#]],
    );
}

#[test]
fn nak_and_unanswered_requests_start_over() {
    check(
        &[
            (0, Step::Start),
            (0, Step::Reply(MessageType::Offer, IP, full_options())),
            (0, Step::Reply(MessageType::Nak, [0, 0, 0, 0], vec![])),
            (1, Step::Reply(MessageType::Offer, IP, full_options())),
            (3, Step::Timer),
            (7, Step::Timer),
            (15, Step::Timer),
            (31, Step::Timer),
            // An offer without an address is ignored.
            (
                32,
                Step::Reply(MessageType::Offer, [0, 0, 0, 0], full_options()),
            ),
        ],
        expect![[r#"
            t=0 start
              send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
              -> SELECTING next +2s
            t=0 Offer 10.99.0.50
              send Request to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0 requested=10.99.0.50 server=10.99.0.1
              -> REQUESTING next +2s
            t=0 Nak 0.0.0.0
              notice Nak { server: 10.99.0.1 }
              send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
              -> SELECTING next +2s
            t=1 Offer 10.99.0.50
              send Request to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=1 requested=10.99.0.50 server=10.99.0.1
              -> REQUESTING next +3s
            t=3 timer
              send Request to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=3 requested=10.99.0.50 server=10.99.0.1
              -> REQUESTING next +7s
            t=7 timer
              send Request to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=7 requested=10.99.0.50 server=10.99.0.1
              -> REQUESTING next +15s
            t=15 timer
              send Request to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=15 requested=10.99.0.50 server=10.99.0.1
              -> REQUESTING next +31s
            t=31 timer
              notice RequestTimedOut { address: 10.99.0.50 }
              send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
              -> SELECTING next +33s
            t=32 Offer 0.0.0.0
              -> SELECTING next +33s
        "#]],
    );
}

#[test]
fn renewal_nak_and_address_change() {
    check(
        &[
            (0, Step::Start),
            (0, Step::Reply(MessageType::Offer, IP, full_options())),
            (0, Step::Reply(MessageType::Ack, IP, full_options())),
            (300, Step::Timer),
            (
                301,
                Step::Reply(MessageType::Ack, [10, 99, 0, 51], full_options()),
            ),
            (601, Step::Timer),
            (602, Step::Reply(MessageType::Nak, [0, 0, 0, 0], vec![])),
        ],
        expect![[r#"
            t=0 start
              send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
              -> SELECTING next +2s
            t=0 Offer 10.99.0.50
              send Request to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0 requested=10.99.0.50 server=10.99.0.1
              -> REQUESTING next +2s
            t=0 Ack 10.99.0.50
              configure 10.99.0.50/24 gw=[10.99.0.1] dns=[10.99.0.1, 10.99.0.2] host=Some("n1") domain=Some("lab") lease=600s t1=300s t2=525s
              -> BOUND next +300s
            t=300 timer
              send Request to=Unicast(10.99.0.1) from=Some(10.99.0.50) ciaddr=10.99.0.50 bcast=false secs=0
              -> RENEWING next +412s
            t=301 Ack 10.99.0.51
              deconfigure 10.99.0.50
              configure 10.99.0.51/24 gw=[10.99.0.1] dns=[10.99.0.1, 10.99.0.2] host=Some("n1") domain=Some("lab") lease=600s t1=300s t2=525s
              -> BOUND next +601s
            t=601 timer
              send Request to=Unicast(10.99.0.1) from=Some(10.99.0.51) ciaddr=10.99.0.51 bcast=false secs=0
              -> RENEWING next +713s
            t=602 Nak 0.0.0.0
              notice Nak { server: 10.99.0.1 }
              deconfigure 10.99.0.51
              send Discover to=Broadcast from=None ciaddr=0.0.0.0 bcast=true secs=0
              -> SELECTING next +604s
        "#]],
    );
}

#[test]
fn hostnames() {
    assert_eq!(hostname_from_mac("node", MAC), "node-5254001234ab");
    assert_eq!(hostname_from_mac("head", MAC), "head-5254001234ab");
    assert!(valid_hostname("n1.lab"));
    assert!(!valid_hostname("-x"));
    assert!(!valid_hostname("a b"));
    assert!(!valid_hostname(""));
}
