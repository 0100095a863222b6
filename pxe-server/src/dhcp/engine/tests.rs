//! Data-driven tests of the DHCP engine: a script of client packets, each
//! reply rendered as text and compared with an expect-test snapshot.

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};

use expect_test::{expect, Expect};

use super::*;
use crate::config::{Pool, Reservation};
use crate::dhcp::packet::{Options, BOOTREQUEST, MAGIC};

fn cfg(mode: Mode) -> EngineConfig {
    let mut reservations = HashMap::new();
    reservations.insert(
        MacAddr([0x52, 0x54, 0, 0, 0, 0x99]),
        Reservation {
            address: Ipv4Addr::new(10, 0, 0, 50),
            hostname: Some("node99".into()),
        },
    );
    EngineConfig {
        mode,
        interfaces: vec![Interface {
            name: "eth0".into(),
            addr: Ipv4Addr::new(10, 0, 0, 1),
            net: "10.0.0.0/24".parse().unwrap(),
        }],
        dhcp: DhcpConfig {
            pools: vec![
                PoolConfig {
                    range: "10.0.0.100-10.0.0.102".parse::<Pool>().unwrap(),
                    subnet: "10.0.0.0/24".parse().unwrap(),
                    router: Some(Ipv4Addr::new(10, 0, 0, 254)),
                },
                PoolConfig {
                    range: "10.5.0.10-10.5.0.11".parse::<Pool>().unwrap(),
                    subnet: "10.5.0.0/24".parse().unwrap(),
                    router: Some(Ipv4Addr::new(10, 5, 0, 1)),
                },
            ],
            reservations,
            lease_time: 600,
            decline_quarantine: 1000,
            dns: vec![Ipv4Addr::new(10, 0, 0, 53)],
            domain: None,
        },
        available: Available::ALL,
        http_port: 8080,
        dhcp_port: 67,
    }
}

/// A client request; `mac` is the last byte of 52:54:00:00:00:xx.
fn req(kind: MessageType, mac: u8) -> Packet {
    let mut b = vec![0u8; 240];
    b[236..240].copy_from_slice(&MAGIC);
    let mut p = Packet::parse(&b).unwrap();
    p.op = BOOTREQUEST;
    p.htype = 1;
    p.hlen = 6;
    p.xid = 0x1000 + u32::from(mac);
    p.chaddr[..6].copy_from_slice(&[0x52, 0x54, 0, 0, 0, mac]);
    p.options = Options::default();
    p.options.set(opt::MSG_TYPE, [kind.to_u8()]);
    p
}

fn with(mut p: Packet, code: u8, v: &[u8]) -> Packet {
    p.options.set(code, v.to_vec());
    p
}

fn ip(s: &str) -> Ipv4Addr {
    s.parse().unwrap()
}

const SERVER: [u8; 4] = [10, 0, 0, 1];

fn show_opt(code: u8, v: &[u8]) -> String {
    match code {
        opt::MSG_TYPE => String::new(),
        1 | 3 | 6 | 54 if v.len().is_multiple_of(4) => {
            let ips: Vec<String> = v
                .chunks(4)
                .map(|c| Ipv4Addr::new(c[0], c[1], c[2], c[3]).to_string())
                .collect();
            format!(" {code}={}", ips.join(","))
        }
        51 | 58 | 59 if v.len() == 4 => {
            format!(" {code}={}", u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
        }
        12 | 56 | 60 => format!(" {code}={:?}", String::from_utf8_lossy(v)),
        _ => format!(" {code}={v:02x?}"),
    }
}

fn show(o: &Outcome) -> String {
    let mut s = String::new();
    match &o.reply {
        Some(r) => {
            let p = Packet::parse(&r.bytes).unwrap();
            s.push_str(&format!(
                "{} yi={} ci={} si={} file={:?} to {}{} |",
                p.msg_type().unwrap().name(),
                p.yiaddr,
                p.ciaddr,
                p.siaddr,
                String::from_utf8_lossy(&p.file),
                r.dest,
                if r.local_port != 67 {
                    format!(" via :{}", r.local_port)
                } else {
                    String::new()
                },
            ));
            for (c, v) in p.options.iter() {
                s.push_str(&show_opt(c, v));
            }
        }
        None => s.push_str("(no reply)"),
    }
    for r in &o.persist {
        s.push_str(&format!(
            " [persist {} {} {:?} exp {}]",
            r.ip, r.mac, r.state, r.expires
        ));
    }
    if let Some(note) = o.exchange.as_ref().and_then(|e| e.note.as_ref()) {
        s.push_str(&format!(" ({note})"));
    }
    s
}

struct Step {
    label: &'static str,
    p: Packet,
    now: u64,
    src: SocketAddrV4,
    port: u16,
}

fn step(label: &'static str, p: Packet, now: u64) -> Step {
    Step {
        label,
        p,
        now,
        src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
        port: 67,
    }
}

fn run(e: &mut Engine, steps: Vec<Step>, expect: Expect) {
    let mut out = String::new();
    for s in steps {
        let bytes = s.p.encode();
        let o = e.handle(
            Incoming {
                bytes: &bytes,
                iface: 0,
                src: s.src,
                local_port: s.port,
            },
            s.now,
        );
        out.push_str(&format!("{}: {}\n", s.label, show(&o)));
    }
    expect.assert_eq(&out);
}

fn sel(mac: u8, addr: &str) -> Packet {
    with(
        with(req(MessageType::Request, mac), opt::SERVER_ID, &SERVER),
        opt::REQUESTED_IP,
        &ip(addr).octets(),
    )
}

#[test]
fn dora_renew_rebind_release_expiry() {
    let mut e = Engine::new(cfg(Mode::Dhcp), LeaseTable::default());
    let mut renew = req(MessageType::Request, 1);
    renew.ciaddr = ip("10.0.0.100");
    let mut rebind = renew.clone();
    rebind.flags = FLAG_BROADCAST;
    let mut release = req(MessageType::Release, 1);
    release.ciaddr = ip("10.0.0.100");
    let mut release_other = release.clone();
    release_other.chaddr[5] = 7;
    run(
        &mut e,
        vec![
            step("discover 1", req(MessageType::Discover, 1), 100),
            step("discover 2", req(MessageType::Discover, 2), 100),
            step("select 1", sel(1, "10.0.0.100"), 101),
            step("select 2 wrong addr", sel(2, "10.0.0.100"), 101),
            step(
                "client 3 picks other server",
                with(sel(3, "10.0.0.9"), opt::SERVER_ID, &[10, 0, 0, 9]),
                101,
            ),
            step("renew 1", renew.clone(), 400),
            step("rebind 1", rebind, 800),
            step("release by other mac", release_other, 801),
            step("release 1", release, 802),
            step("discover 1 again", req(MessageType::Discover, 1), 803),
            step(
                "init-reboot 2 other net",
                with(
                    req(MessageType::Request, 2),
                    opt::REQUESTED_IP,
                    &[192, 168, 1, 5],
                ),
                804,
            ),
            step(
                "init-reboot 2 free addr",
                with(
                    req(MessageType::Request, 2),
                    opt::REQUESTED_IP,
                    &[10, 0, 0, 101],
                ),
                805,
            ),
            step(
                "discover 4 after offer expiry",
                req(MessageType::Discover, 4),
                900,
            ),
        ],
        expect![[r#"
            discover 1: OFFER yi=10.0.0.100 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53
            discover 2: OFFER yi=10.0.0.101 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53
            select 1: ACK yi=10.0.0.100 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53 [persist 10.0.0.100 52:54:00:00:00:01 Active exp 701]
            select 2 wrong addr: NAK yi=0.0.0.0 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 56="address held by another client" (address held by another client)
            client 3 picks other server: (no reply)
            renew 1: ACK yi=10.0.0.100 ci=10.0.0.100 si=0.0.0.0 file="" to 10.0.0.100:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53 [persist 10.0.0.100 52:54:00:00:00:01 Active exp 1000]
            rebind 1: ACK yi=10.0.0.100 ci=10.0.0.100 si=0.0.0.0 file="" to 10.0.0.100:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53 [persist 10.0.0.100 52:54:00:00:00:01 Active exp 1400]
            release by other mac: (no reply) (not this client's lease: ignored)
            release 1: (no reply) [persist 10.0.0.100 52:54:00:00:00:01 Released exp 802]
            discover 1 again: OFFER yi=10.0.0.100 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53
            init-reboot 2 other net: NAK yi=0.0.0.0 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 56="wrong network" (wrong network)
            init-reboot 2 free addr: ACK yi=10.0.0.101 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53 [persist 10.0.0.101 52:54:00:00:00:02 Active exp 1405]
            discover 4 after offer expiry: OFFER yi=10.0.0.102 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53
        "#]],
    );
}

#[test]
fn exhaustion_expiry_decline_and_restart() {
    let mut e = Engine::new(cfg(Mode::Dhcp), LeaseTable::default());
    let mut decline = with(
        req(MessageType::Decline, 3),
        opt::REQUESTED_IP,
        &[10, 0, 0, 102],
    );
    decline = with(decline, opt::SERVER_ID, &SERVER);
    run(
        &mut e,
        vec![
            step("ack 1", sel(1, "10.0.0.100"), 10),
            step("ack 2", sel(2, "10.0.0.101"), 10),
            step("ack 3", sel(3, "10.0.0.102"), 10),
            step("pool full", req(MessageType::Discover, 4), 20),
            step("3 declines", decline, 30),
            step("still full (quarantine)", req(MessageType::Discover, 4), 40),
            step("1 expired: 4 gets it", req(MessageType::Discover, 4), 700),
        ],
        expect![[r#"
            ack 1: ACK yi=10.0.0.100 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53 [persist 10.0.0.100 52:54:00:00:00:01 Active exp 610]
            ack 2: ACK yi=10.0.0.101 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53 [persist 10.0.0.101 52:54:00:00:00:02 Active exp 610]
            ack 3: ACK yi=10.0.0.102 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53 [persist 10.0.0.102 52:54:00:00:00:03 Active exp 610]
            pool full: (no reply) (pool exhausted)
            3 declines: (no reply) [persist 10.0.0.102 52:54:00:00:00:03 Declined exp 1030] (quarantined for 1000 s)
            still full (quarantine): (no reply) (pool exhausted)
            1 expired: 4 gets it: OFFER yi=10.0.0.100 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53
        "#]],
    );
    // A restarted engine (same committed table) keeps every held address.
    let table = e.leases().clone();
    let mut e2 = Engine::new(cfg(Mode::Dhcp), table);
    run(
        &mut e2,
        vec![
            step(
                "after restart, 5 cannot take 2's address",
                sel(5, "10.0.0.101"),
                100,
            ),
            step("nor the quarantined one", sel(5, "10.0.0.102"), 100),
            step("pool full for 5", req(MessageType::Discover, 5), 100),
        ],
        expect![[r#"
            after restart, 5 cannot take 2's address: NAK yi=0.0.0.0 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 56="address held by another client" (address held by another client)
            nor the quarantined one: NAK yi=0.0.0.0 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 56="address held by another client" (address held by another client)
            pool full for 5: (no reply) (pool exhausted)
        "#]],
    );
}

#[test]
fn reservations_relays_inform_and_pxe() {
    let mut e = Engine::new(cfg(Mode::Dhcp), LeaseTable::default());
    let mut relayed = req(MessageType::Discover, 7);
    relayed.giaddr = ip("10.5.0.1");
    let mut relayed_far = relayed.clone();
    relayed_far.giaddr = ip("10.9.0.1");
    let mut inform = req(MessageType::Inform, 8);
    inform.ciaddr = ip("10.0.0.77");
    let bios = with(
        with(
            req(MessageType::Discover, 9),
            opt::VENDOR_CLASS,
            b"PXEClient:Arch:00000:UNDI:002001",
        ),
        opt::CLIENT_ARCH,
        &[0, 0],
    );
    let uefi = with(
        with(
            req(MessageType::Discover, 10),
            opt::VENDOR_CLASS,
            b"PXEClient:Arch:00007:UNDI:003016",
        ),
        opt::CLIENT_ARCH,
        &[0, 7],
    );
    let uefi = with(uefi, opt::CLIENT_UUID, &[0, 1, 2, 3]);
    let ipxe = with(
        with(bios.clone(), opt::USER_CLASS, b"iPXE"),
        opt::IPXE,
        &[1, 1, 1],
    );
    run(
        &mut e,
        vec![
            step("reserved client", req(MessageType::Discover, 0x99), 1),
            step(
                "reserved asks for a pool address",
                sel(0x99, "10.0.0.100"),
                1,
            ),
            step("reserved selects its own", sel(0x99, "10.0.0.50"), 1),
            step(
                "other client asks for the reserved address",
                with(
                    req(MessageType::Discover, 5),
                    opt::REQUESTED_IP,
                    &[10, 0, 0, 50],
                ),
                1,
            ),
            step("relayed from 10.5.0.1", relayed, 1),
            step("relayed from unknown subnet", relayed_far, 1),
            step("inform", inform, 1),
            step("bios pxe", bios, 1),
            step("uefi pxe", uefi, 1),
            step("ipxe", ipxe, 1),
        ],
        expect![[r#"
            reserved client: OFFER yi=10.0.0.50 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53 12="node99"
            reserved asks for a pool address: NAK yi=0.0.0.0 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 56="client has another reserved address" (client has another reserved address)
            reserved selects its own: ACK yi=10.0.0.50 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53 12="node99" [persist 10.0.0.50 52:54:00:00:00:99 Active exp 601]
            other client asks for the reserved address: OFFER yi=10.0.0.100 ci=0.0.0.0 si=0.0.0.0 file="" to 255.255.255.255:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53
            relayed from 10.5.0.1: OFFER yi=10.5.0.10 ci=0.0.0.0 si=0.0.0.0 file="" to 10.5.0.1:67 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.5.0.1 6=10.0.0.53
            relayed from unknown subnet: (no reply) (no pool for relay 10.9.0.1)
            inform: ACK yi=0.0.0.0 ci=10.0.0.77 si=0.0.0.0 file="" to 10.0.0.77:68 | 54=10.0.0.1 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53
            bios pxe: OFFER yi=10.0.0.101 ci=0.0.0.0 si=10.0.0.1 file="ipxe/undionly.kpxe" to 255.255.255.255:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53 60="PXEClient" 43=[06, 01, 08, ff]
            uefi pxe: OFFER yi=10.0.0.102 ci=0.0.0.0 si=10.0.0.1 file="ipxe/snponly.efi" to 255.255.255.255:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53 60="PXEClient" 43=[06, 01, 08, ff] 97=[00, 01, 02, 03]
            ipxe: OFFER yi=10.0.0.101 ci=0.0.0.0 si=10.0.0.1 file="http://10.0.0.1:8080/boot.ipxe" to 255.255.255.255:68 | 54=10.0.0.1 51=600 58=300 59=525 1=255.255.255.0 3=10.0.0.254 6=10.0.0.53 60="PXEClient" 43=[06, 01, 08, ff]
        "#]],
    );
}

#[test]
fn proxy_mode_answers_only_pxe_and_never_gives_an_address() {
    let mut e = Engine::new(cfg(Mode::Proxy), LeaseTable::default());
    let bios = with(
        with(
            req(MessageType::Discover, 9),
            opt::VENDOR_CLASS,
            b"PXEClient:Arch:00000:UNDI:002001",
        ),
        opt::CLIENT_ARCH,
        &[0, 0],
    );
    let mut on_4011 = with(
        with(
            req(MessageType::Request, 10),
            opt::VENDOR_CLASS,
            b"PXEClient:Arch:00007:UNDI:003016",
        ),
        opt::CLIENT_ARCH,
        &[0, 7],
    );
    on_4011.ciaddr = ip("192.168.1.40");
    let lan_request = with(sel(9, "192.168.1.41"), opt::SERVER_ID, &[192, 168, 1, 1]);
    let lan_request = with(
        lan_request,
        opt::VENDOR_CLASS,
        b"PXEClient:Arch:00000:UNDI:002001",
    );
    let arm32 = with(
        with(
            req(MessageType::Discover, 11),
            opt::VENDOR_CLASS,
            b"PXEClient:Arch:00010:UNDI:003016",
        ),
        opt::CLIENT_ARCH,
        &[0, 10],
    );
    run(
        &mut e,
        vec![
            step("plain client", req(MessageType::Discover, 1), 1),
            step("bios pxe discover", bios, 1),
            Step {
                label: "uefi request to 4011",
                p: on_4011,
                now: 1,
                src: SocketAddrV4::new(ip("192.168.1.40"), 4011),
                port: 4011,
            },
            step("request to the LAN's server", lan_request, 1),
            step("arm32: nothing to boot", arm32, 1),
        ],
        expect![[r#"
            plain client: (no reply)
            bios pxe discover: OFFER yi=0.0.0.0 ci=0.0.0.0 si=10.0.0.1 file="ipxe/undionly.kpxe" to 255.255.255.255:68 | 54=10.0.0.1 60="PXEClient" 43=[06, 01, 08, ff]
            uefi request to 4011: ACK yi=0.0.0.0 ci=192.168.1.40 si=10.0.0.1 file="ipxe/snponly.efi" to 192.168.1.40:4011 via :4011 | 54=10.0.0.1 60="PXEClient" 43=[06, 01, 08, ff]
            request to the LAN's server: (no reply)
            arm32: nothing to boot: (no reply) (no boot file for uefi-arm32)
        "#]],
    );
}

#[test]
fn garbage_is_ignored() {
    let mut e = Engine::new(cfg(Mode::Dhcp), LeaseTable::default());
    for bytes in [&b""[..], &[0u8; 300][..], &[1u8; 240][..]] {
        let o = e.handle(
            Incoming {
                bytes,
                iface: 0,
                src: SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, 68),
                local_port: 67,
            },
            1,
        );
        assert_eq!(o, Outcome::default());
    }
}
