//! What the boot server (`omboot serve`) knows of each machine it saw
//! boot: the stage it reached on its way from firmware to a running agent,
//! as `GET /api/v1/nodes` serves it and the web view shows it.

use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use crate::mac::MacAddr;

/// Where `omboot` serves every machine's [`NodeRecord`], JSON.
pub const NODES_PATH: &str = "/api/v1/nodes";

/// How far a node got on its way from firmware to a running cluster agent.
#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum BootStage {
    /// The firmware (or iPXE) talked DHCP to us.
    Dhcp,
    /// A file was requested over TFTP (normally the iPXE binary).
    Tftp,
    /// iPXE fetched its per-MAC boot script.
    Script,
    /// The kernel was requested over HTTP.
    Kernel,
    /// The initrd was requested over HTTP.
    Initrd,
    /// The node's agent checked in: the node is up.
    Agent,
}

impl BootStage {
    /// Its name as the API says it (`dhcp`, `tftp`, …).
    pub fn as_str(&self) -> &'static str {
        match self {
            BootStage::Dhcp => "dhcp",
            BootStage::Tftp => "tftp",
            BootStage::Script => "script",
            BootStage::Kernel => "kernel",
            BootStage::Initrd => "initrd",
            BootStage::Agent => "agent",
        }
    }

    /// Every stage, in boot order.
    pub const ALL: [BootStage; 6] = [
        BootStage::Dhcp,
        BootStage::Tftp,
        BootStage::Script,
        BootStage::Kernel,
        BootStage::Initrd,
        BootStage::Agent,
    ];
}

/// Everything known about one node.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
pub struct NodeRecord {
    /// The node's MAC address: the key of the registry.
    pub mac: MacAddr,
    /// The last IP address seen for the node.
    pub address: Option<IpAddr>,
    /// Client system architecture (RFC 4578 option 93 code), when known.
    pub architecture: Option<u16>,
    /// A readable name of `architecture` (`bios`, `uefi-x64`, …).
    pub architecture_name: Option<String>,
    /// Hostname from DHCP or the agent's check-in.
    pub hostname: Option<String>,
    /// Unix seconds of the first observation.
    pub first_seen: u64,
    /// Unix seconds of the latest observation.
    pub last_seen: u64,
    /// The latest boot stage seen.
    pub stage: BootStage,
    /// Unix seconds it reached `stage` (0 from a server that did not say).
    #[serde(default)]
    pub stage_since: u64,
    /// Unix seconds of the latest fetch of its boot script, kernel or
    /// initrd from this server, or of the latest lease this server granted
    /// a machine that booted from a medium: when it last booted from this
    /// head (admission trusts that, see `admission`).
    #[serde(default)]
    pub booted_at: Option<u64>,
}

impl NodeRecord {
    /// A machine first seen at `now`, at `stage`.
    pub fn first(mac: MacAddr, stage: BootStage, now: u64) -> Self {
        NodeRecord {
            mac,
            address: None,
            architecture: None,
            architecture_name: None,
            hostname: None,
            first_seen: now,
            last_seen: now,
            stage,
            stage_since: now,
            booted_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stage_names_are_the_api_s() {
        for s in BootStage::ALL {
            let json = serde_json::to_string(&s).unwrap();
            assert_eq!(json, format!("\"{}\"", s.as_str()));
        }
    }

    #[test]
    fn a_record_from_an_older_server_still_reads() {
        let r = NodeRecord::first("52:54:00:00:00:01".parse().unwrap(), BootStage::Tftp, 7);
        let mut v = serde_json::to_value(&r).unwrap();
        v.as_object_mut().unwrap().remove("stage_since");
        let back: NodeRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back.stage_since, 0);
        assert_eq!(back.stage, BootStage::Tftp);
    }
}
