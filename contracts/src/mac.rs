//! Ethernet MAC addresses: the one type for the DHCP server's chaddr, its
//! reservations and lease file, the node registry, and the agent's check-in.
//!
//! Printed lower case with colons (`52:54:00:12:34:56`), the form `omboot`'s
//! JSON, logs and iPXE's `${net0/mac}` use; parsed from six hex octets
//! separated by `:` or `-`, in either case. Serialised as that string.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An Ethernet MAC address.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug, Default)]
pub struct MacAddr(pub [u8; 6]);

/// A string that is not a MAC address.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("invalid mac address {0:?}: expected six hex octets separated by ':' or '-'")]
pub struct MacParseError(pub String);

impl MacAddr {
    /// The host name a machine gives itself when DHCP names none:
    /// `ROLE-` and the twelve hex digits (`node-5254000c0001`). It is also
    /// the machine's name in the cluster, so tools that know the MAC
    /// (the lab, a person reading a DHCP log) know the name.
    pub fn default_hostname(self, role: &str) -> String {
        let hex: String = self.0.iter().map(|b| format!("{b:02x}")).collect();
        format!("{role}-{hex}")
    }

    /// The six bytes.
    pub fn octets(self) -> [u8; 6] {
        self.0
    }
}

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let m = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            m[0], m[1], m[2], m[3], m[4], m[5]
        )
    }
}

impl From<[u8; 6]> for MacAddr {
    fn from(b: [u8; 6]) -> Self {
        MacAddr(b)
    }
}

impl From<MacAddr> for [u8; 6] {
    fn from(m: MacAddr) -> Self {
        m.0
    }
}

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError(s.chars().take(64).collect());
        let sep = if s.contains('-') { '-' } else { ':' };
        let mut out = [0u8; 6];
        let mut parts = s.split(sep);
        for b in out.iter_mut() {
            let p = parts.next().ok_or_else(err)?;
            if p.is_empty() || p.len() > 2 || !p.bytes().all(|c| c.is_ascii_hexdigit()) {
                return Err(err());
            }
            *b = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        if parts.next().is_some() {
            return Err(err());
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    fn check(input: &str, expect: Expect) {
        let got = match input.parse::<MacAddr>() {
            Ok(m) => {
                assert_eq!(m.to_string().parse::<MacAddr>(), Ok(m), "round trip");
                m.to_string()
            }
            Err(e) => format!("error: {e}"),
        };
        expect.assert_eq(&got);
    }

    #[test]
    fn parse_and_print() {
        check("52:54:00:12:34:56", expect!["52:54:00:12:34:56"]);
        check("52:54:00:AB:cd:0f", expect!["52:54:00:ab:cd:0f"]);
        check("52-54-00-ab-cd-0f", expect!["52:54:00:ab:cd:0f"]);
        check("2:0:0:0:0:1", expect!["02:00:00:00:00:01"]);
        check(
            "52:54:00:00:00",
            expect![[
                r#"error: invalid mac address "52:54:00:00:00": expected six hex octets separated by ':' or '-'"#
            ]],
        );
        for bad in [
            "",
            "52:54:00:00:00:00:00",
            "52:54:00:00:00:0g",
            "52:54:00:00:00:100",
            "52:54:00-00:00:00",
            "52:54:00:00::00",
            "52:54:00:00:00:+1",
        ] {
            assert!(bad.parse::<MacAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn serde_as_a_string() {
        let m = MacAddr([0x52, 0x54, 0, 0xab, 0xcd, 0xef]);
        let json = serde_json::to_string(&m).unwrap();
        assert_eq!(json, r#""52:54:00:ab:cd:ef""#);
        assert_eq!(serde_json::from_str::<MacAddr>(&json).unwrap(), m);
        assert!(serde_json::from_str::<MacAddr>(r#""nope""#).is_err());
    }
}
