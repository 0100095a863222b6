//! Fuzz DHCP packet handling: the parser and the engine (dhcp and proxy
//! mode) on arbitrary bytes. Beyond "never panics", every reply must parse
//! back, a dhcp-mode reply never carries an address outside the pools and
//! reservations, and a ProxyDHCP reply never carries an address at all.
#![no_main]

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use pxe_server::boot::Available;
use contracts::mac::MacAddr;
use pxe_server::config::{DhcpConfig, Interface, Mode, PoolConfig, Reservation};
use pxe_server::dhcp::engine::{Engine, EngineConfig, Incoming};
use pxe_server::dhcp::packet::Packet;
use pxe_server::leases::LeaseTable;

fn config(mode: Mode) -> EngineConfig {
    let mut reservations = HashMap::new();
    reservations.insert(
        MacAddr([0x52, 0x54, 0, 0, 0, 1]),
        Reservation { address: Ipv4Addr::new(10, 0, 0, 50), hostname: Some("n1".into()) },
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
                    range: "10.0.0.100-10.0.0.103".parse().unwrap(),
                    subnet: "10.0.0.0/24".parse().unwrap(),
                    router: None,
                },
                PoolConfig {
                    range: "10.5.0.10-10.5.0.12".parse().unwrap(),
                    subnet: "10.5.0.0/24".parse().unwrap(),
                    router: None,
                },
            ],
            reservations,
            lease_time: 600,
            decline_quarantine: 60,
            dns: vec![],
            domain: None,
        },
        available: Available::ALL,
        http_port: 80,
        dhcp_port: 67,
    }
}

fn allowed(ip: Ipv4Addr) -> bool {
    let c = config(Mode::Dhcp);
    ip.is_unspecified()
        || c.dhcp.pools.iter().any(|p| p.range.contains(ip))
        || c.dhcp.reservations.values().any(|r| r.address == ip)
}

static ENGINES: OnceLock<std::sync::Mutex<(Engine, Engine)>> = OnceLock::new();

fuzz_target!(|data: &[u8]| {
    let _ = Packet::parse(data);
    // The first byte picks port and time so state carries across inputs.
    let (sel, bytes) = data.split_first().unwrap_or((&0, data));
    let engines = ENGINES.get_or_init(|| {
        std::sync::Mutex::new((
            Engine::new(config(Mode::Dhcp), LeaseTable::default()),
            Engine::new(config(Mode::Proxy), LeaseTable::default()),
        ))
    });
    let mut guard = engines.lock().unwrap();
    let (dhcp, proxy) = &mut *guard;
    let inc = Incoming {
        bytes,
        iface: 0,
        src: SocketAddrV4::new(Ipv4Addr::new(10, 0, 0, 9), 68),
        local_port: if sel & 1 == 0 { 67 } else { 4011 },
    };
    let now = u64::from(*sel) * 100;
    let o = dhcp.handle(inc, now);
    if let Some(r) = &o.reply {
        let p = Packet::parse(&r.bytes).expect("reply parses");
        assert!(allowed(p.yiaddr), "dhcp reply with {}", p.yiaddr);
    }
    for rec in &o.persist {
        assert!(allowed(rec.ip) || rec.state != pxe_server::leases::LeaseState::Active);
    }
    let o = proxy.handle(inc, now);
    assert!(o.persist.is_empty());
    if let Some(r) = &o.reply {
        let p = Packet::parse(&r.bytes).expect("reply parses");
        assert!(p.yiaddr.is_unspecified(), "proxy reply with an address");
    }
});
