//! Network interfaces: which ones to use, link up, IPv4 address, default
//! route, resolv.conf and the host name.
//!
//! Configuration goes through the classic `SIOCSIF*`/`SIOCADDRT` ioctls, the
//! same calls busybox `ifconfig` and `route` make, rather than rtnetlink: PID
//! 1 needs exactly four IPv4 operations, synchronously, before anything else
//! runs, and the ioctls need no async runtime and no extra crates
//! (`rtnetlink` brings tokio and the netlink-proto stack; `neli` is a large
//! API for these four calls). Interface discovery reads `/sys/class/net`.

use std::ffi::CString;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::Path;

use contracts::mac::MacAddr;

use crate::address::Lease;

/// A failed interface operation.
#[derive(Debug, thiserror::Error)]
pub enum NetifError {
    /// An ioctl on an interface failed.
    #[error("{op} on {iface}: {source}")]
    Ioctl {
        /// What was being done (`set address 10.0.0.5`…).
        op: String,
        /// The interface.
        iface: String,
        /// The error.
        source: std::io::Error,
    },
    /// The interface name is too long or has a NUL.
    #[error("bad interface name {0:?}")]
    BadName(String),
    /// Writing a system file failed.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// The error.
        source: std::io::Error,
    },
}

/// The wired Ethernet interfaces under `sys_class_net` (normally
/// `/sys/class/net`): type 1 (Ethernet), backed by a device (so not lo,
/// bridges, veths or tunnels), and not wireless. Sorted by name.
pub fn wired_interfaces(sys_class_net: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(sys_class_net) else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter(|e| {
            let p = e.path();
            let ty = std::fs::read_to_string(p.join("type")).unwrap_or_default();
            ty.trim() == "1"
                && p.join("device").exists()
                && !p.join("wireless").exists()
                && !p.join("phy80211").exists()
        })
        .filter_map(|e| e.file_name().into_string().ok())
        .collect();
    out.sort();
    out
}

/// The hardware address of `iface` (SIOCGIFHWADDR, so it follows the
/// calling thread's network namespace, unlike sysfs).
pub fn mac_address(iface: &str) -> std::io::Result<MacAddr> {
    let mut req =
        ifreq(iface).map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    ioctl(iface, "get hardware address", libc::SIOCGIFHWADDR, &mut req)
        .map_err(|e| std::io::Error::other(e.to_string()))?;
    // SAFETY: SIOCGIFHWADDR filled the hwaddr member of the union.
    let hw = unsafe { req.ifr_ifru.ifru_hwaddr };
    if hw.sa_family != libc::ARPHRD_ETHER {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!(
                "{iface} is not an Ethernet interface (hardware type {})",
                hw.sa_family
            ),
        ));
    }
    let mut mac = [0u8; 6];
    for (m, b) in mac.iter_mut().zip(hw.sa_data.iter()) {
        *m = *b as u8;
    }
    Ok(MacAddr(mac))
}

/// Whether `iface` reports a carrier (cable plugged, link negotiated).
pub fn has_carrier(iface: &str) -> bool {
    std::fs::read_to_string(format!("/sys/class/net/{iface}/carrier"))
        .map(|s| s.trim() == "1")
        .unwrap_or(false)
}

fn control_socket() -> std::io::Result<OwnedFd> {
    // SAFETY: plain socket(2); the result is checked and owned.
    let fd = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is new and ours.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

fn ifreq(iface: &str) -> Result<libc::ifreq, NetifError> {
    let name = CString::new(iface).map_err(|_| NetifError::BadName(iface.to_string()))?;
    let bytes = name.as_bytes_with_nul();
    if bytes.len() > libc::IFNAMSIZ {
        return Err(NetifError::BadName(iface.to_string()));
    }
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (d, s) in req.ifr_name.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    Ok(req)
}

fn sockaddr_in(ip: Ipv4Addr) -> libc::sockaddr {
    let sin = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: 0,
        sin_addr: libc::in_addr {
            s_addr: u32::from(ip).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: sockaddr_in and sockaddr have the same size; this is how the
    // ioctl ABI passes IPv4 addresses.
    unsafe { std::mem::transmute::<libc::sockaddr_in, libc::sockaddr>(sin) }
}

fn ioctl<T>(iface: &str, op: &str, request: libc::c_ulong, arg: &mut T) -> Result<(), NetifError> {
    let err = |source| NetifError::Ioctl {
        op: op.to_string(),
        iface: iface.to_string(),
        source,
    };
    let sock = control_socket().map_err(err)?;
    // SAFETY: `arg` is the structure this request expects (ifreq or rtentry),
    // valid for the duration of the call.
    let rc = unsafe { libc::ioctl(sock.as_raw_fd(), request as _, arg as *mut T) };
    if rc < 0 {
        return Err(err(std::io::Error::last_os_error()));
    }
    Ok(())
}

/// Brings `iface` up (IFF_UP).
pub fn set_up(iface: &str) -> Result<(), NetifError> {
    let mut req = ifreq(iface)?;
    ioctl(iface, "get flags", libc::SIOCGIFFLAGS, &mut req)?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe {
        req.ifr_ifru.ifru_flags |= libc::IFF_UP as libc::c_short;
    }
    ioctl(iface, "set link up", libc::SIOCSIFFLAGS, &mut req)
}

/// Sets the interface's primary IPv4 address, netmask and broadcast.
pub fn set_address(
    iface: &str,
    address: Ipv4Addr,
    netmask: Ipv4Addr,
    broadcast: Option<Ipv4Addr>,
) -> Result<(), NetifError> {
    let mut req = ifreq(iface)?;
    req.ifr_ifru.ifru_addr = sockaddr_in(address);
    ioctl(
        iface,
        &format!("set address {address}"),
        libc::SIOCSIFADDR,
        &mut req,
    )?;
    let mut req = ifreq(iface)?;
    req.ifr_ifru.ifru_netmask = sockaddr_in(netmask);
    ioctl(
        iface,
        &format!("set netmask {netmask}"),
        libc::SIOCSIFNETMASK,
        &mut req,
    )?;
    let bcast =
        broadcast.unwrap_or_else(|| Ipv4Addr::from(u32::from(address) | !u32::from(netmask)));
    let mut req = ifreq(iface)?;
    req.ifr_ifru.ifru_broadaddr = sockaddr_in(bcast);
    ioctl(
        iface,
        &format!("set broadcast {bcast}"),
        libc::SIOCSIFBRDADDR,
        &mut req,
    )
}

/// Removes the interface's IPv4 address (setting 0.0.0.0 deletes it).
pub fn clear_address(iface: &str) -> Result<(), NetifError> {
    let mut req = ifreq(iface)?;
    req.ifr_ifru.ifru_addr = sockaddr_in(Ipv4Addr::UNSPECIFIED);
    ioctl(iface, "remove address", libc::SIOCSIFADDR, &mut req)
}

/// `struct rtentry` from `<net/route.h>`, which the libc crate does not
/// provide for glibc targets.
#[repr(C)]
struct RtEntry {
    rt_pad1: libc::c_ulong,
    rt_dst: libc::sockaddr,
    rt_gateway: libc::sockaddr,
    rt_genmask: libc::sockaddr,
    rt_flags: libc::c_ushort,
    rt_pad2: libc::c_short,
    rt_pad3: libc::c_ulong,
    rt_pad4: *mut libc::c_void,
    rt_metric: libc::c_short,
    rt_dev: *mut libc::c_char,
    rt_mtu: libc::c_ulong,
    rt_window: libc::c_ulong,
    rt_irtt: libc::c_ushort,
}

const RTF_UP: libc::c_ushort = 0x0001;
const RTF_GATEWAY: libc::c_ushort = 0x0002;

/// Adds the default route via `gateway` on `iface`. An existing default
/// route (EEXIST) is left alone and counts as success.
pub fn add_default_route(iface: &str, gateway: Ipv4Addr) -> Result<(), NetifError> {
    let dev = CString::new(iface).map_err(|_| NetifError::BadName(iface.to_string()))?;
    let mut rt = RtEntry {
        rt_pad1: 0,
        rt_dst: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_gateway: sockaddr_in(gateway),
        rt_genmask: sockaddr_in(Ipv4Addr::UNSPECIFIED),
        rt_flags: RTF_UP | RTF_GATEWAY,
        rt_pad2: 0,
        rt_pad3: 0,
        rt_pad4: std::ptr::null_mut(),
        rt_metric: 0,
        rt_dev: dev.as_ptr() as *mut libc::c_char,
        rt_mtu: 0,
        rt_window: 0,
        rt_irtt: 0,
    };
    match ioctl(
        iface,
        &format!("add default route via {gateway}"),
        libc::SIOCADDRT,
        &mut rt,
    ) {
        Err(NetifError::Ioctl { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
            Ok(())
        }
        other => other,
    }
}

/// Puts a DHCP lease on `iface`: address and mask, and (if `primary`) the
/// default route through the first router.
pub fn apply_lease(iface: &str, lease: &Lease, primary: bool) -> Result<(), NetifError> {
    set_address(iface, lease.address, lease.netmask, lease.broadcast)?;
    if primary {
        if let Some(gw) = lease.routers.first() {
            add_default_route(iface, *gw)?;
        }
    }
    Ok(())
}

/// The text of `/etc/resolv.conf` for these servers and search domain.
pub fn resolv_conf(dns: &[Ipv4Addr], domain: Option<&str>) -> String {
    let mut s = String::from("# written by omnode init from DHCP\n");
    if let Some(d) = domain {
        s.push_str(&format!("search {d}\n"));
    }
    for ns in dns {
        s.push_str(&format!("nameserver {ns}\n"));
    }
    s
}

/// Writes `/etc/resolv.conf` (creating `/etc` if the image has none).
pub fn write_resolv_conf(dns: &[Ipv4Addr], domain: Option<&str>) -> Result<(), NetifError> {
    let path = "/etc/resolv.conf";
    let _ = std::fs::create_dir_all("/etc");
    std::fs::write(path, resolv_conf(dns, domain)).map_err(|source| NetifError::Write {
        path: path.into(),
        source,
    })
}

/// Sets the kernel host name and writes `/etc/hostname`.
pub fn set_hostname(name: &str) -> Result<(), NetifError> {
    nix::unistd::sethostname(name).map_err(|e| NetifError::Write {
        path: "kernel hostname".into(),
        source: e.into(),
    })?;
    let _ = std::fs::create_dir_all("/etc");
    std::fs::write("/etc/hostname", format!("{name}\n")).map_err(|source| NetifError::Write {
        path: "/etc/hostname".into(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rtentry_has_the_kernel_layout() {
        // x86_64 <net/route.h>: sizeof(struct rtentry) == 120, rt_dev at 88.
        #[cfg(target_arch = "x86_64")]
        {
            assert_eq!(std::mem::size_of::<RtEntry>(), 120);
            assert_eq!(std::mem::offset_of!(RtEntry, rt_dev), 88);
        }
    }

    #[test]
    fn only_wired_device_backed_interfaces_are_used() {
        let net = tempfile::tempdir().unwrap();
        let iface = |name: &str, ty: &str, device: bool, extra: Option<&str>| {
            let d = net.path().join(name);
            std::fs::create_dir_all(&d).unwrap();
            std::fs::write(d.join("type"), format!("{ty}\n")).unwrap();
            if device {
                std::fs::create_dir_all(d.join("device")).unwrap();
            }
            if let Some(x) = extra {
                std::fs::create_dir_all(d.join(x)).unwrap();
            }
        };
        iface("lo", "772", false, None);
        iface("eth1", "1", true, None);
        iface("eth0", "1", true, None);
        iface("wlan0", "1", true, Some("wireless"));
        iface("wlp2s0", "1", true, Some("phy80211"));
        iface("br0", "1", false, Some("bridge"));
        iface("ib0", "32", true, None);
        assert_eq!(wired_interfaces(net.path()), vec!["eth0", "eth1"]);
        assert!(wired_interfaces(&net.path().join("missing")).is_empty());
    }

    #[test]
    fn resolv_conf_lists_servers_and_domain() {
        assert_eq!(
            resolv_conf(&[Ipv4Addr::new(10, 0, 0, 1), Ipv4Addr::new(10, 0, 0, 2)], Some("lab")),
            "# written by omnode init from DHCP\nsearch lab\nnameserver 10.0.0.1\nnameserver 10.0.0.2\n"
        );
    }
}
