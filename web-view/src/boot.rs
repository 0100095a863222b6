//! The machines on their way into the cluster, with no I/O: what the boot
//! server saw of each (its boot stage, from `GET /api/v1/nodes`) joined
//! with where it stands with admission (the admin's list), so that a
//! machine stuck at TFTP, or waiting for `omctl admit`, is in sight.

use contracts::admit::{AdmissionList, Standing};
use contracts::boot::{BootStage, NodeRecord};
use serde::Serialize;

/// What the boot server knows, as the serving agent fetched it.
#[derive(Debug, Clone, PartialEq)]
pub struct BootPicture {
    /// Every machine it saw boot, with its stage.
    pub nodes: Vec<NodeRecord>,
    /// The admission list.
    pub admission: AdmissionList,
}

/// One machine, as the page shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Machine {
    /// Its MAC.
    pub mac: String,
    /// The name it gave.
    pub name: Option<String>,
    /// Its last address.
    pub address: Option<String>,
    /// Its firmware (`bios`, `uefi-x64`, …), when DHCP said.
    pub firmware: Option<String>,
    /// The last boot stage seen (`dhcp`, `tftp`, `script`, `kernel`,
    /// `initrd`, `agent`); `admission` for a machine that asks to join but
    /// never netbooted from this head.
    pub stage: String,
    /// Unix seconds it reached `stage`.
    pub stage_since: u64,
    /// Unix seconds of its last sign of life at the boot server.
    pub last_seen: u64,
    /// `pending`, `admitted` or `rejected`; `None` before it asked.
    pub admission: Option<Standing>,
    /// Whether it waits for an admin (`omctl admit`, or the page's button).
    pub waiting: bool,
}

/// The boot server's machines joined with the admission list, by MAC:
/// those still on their way (not yet at `agent`) or waiting for a decision
/// first, then the rest, each group by name.
pub fn machines(p: &BootPicture) -> Vec<Machine> {
    let standing = |mac| p.admission.machines.iter().find(|m| m.mac == mac);
    let mut out: Vec<Machine> = p
        .nodes
        .iter()
        .map(|n| {
            let a = standing(n.mac);
            Machine {
                mac: n.mac.to_string(),
                name: n
                    .hostname
                    .clone()
                    .or_else(|| a.and_then(|a| a.name.clone())),
                address: n.address.map(|a| a.to_string()),
                firmware: n.architecture_name.clone(),
                stage: n.stage.as_str().to_string(),
                stage_since: if n.stage_since > 0 {
                    n.stage_since
                } else {
                    n.last_seen
                },
                last_seen: n.last_seen,
                admission: a.map(|a| a.standing),
                waiting: a.is_some_and(|a| a.standing == Standing::Pending),
            }
        })
        .collect();
    // Machines that asked to join without netbooting from here.
    for a in &p.admission.machines {
        if p.nodes.iter().any(|n| n.mac == a.mac) {
            continue;
        }
        out.push(Machine {
            mac: a.mac.to_string(),
            name: a.name.clone(),
            address: a.address.map(|x| x.to_string()),
            firmware: None,
            stage: "admission".into(),
            stage_since: a.since,
            last_seen: a.since,
            admission: Some(a.standing),
            waiting: a.standing == Standing::Pending,
        });
    }
    let on_the_way = |m: &Machine| m.waiting || m.stage != BootStage::Agent.as_str();
    out.sort_by(|a, b| {
        on_the_way(b)
            .cmp(&on_the_way(a))
            .then_with(|| a.name.cmp(&b.name))
            .then_with(|| a.mac.cmp(&b.mac))
    });
    out
}

/// How many machines stand at each boot stage (for `/metrics`), every
/// stage listed.
pub fn stage_counts(machines: &[Machine]) -> Vec<(&'static str, usize)> {
    BootStage::ALL
        .iter()
        .map(|s| s.as_str())
        .chain(["admission"])
        .map(|s| (s, machines.iter().filter(|m| m.stage == s).count()))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use contracts::admit::Machine as Admitted;
    use contracts::mac::MacAddr;

    fn mac(last: u8) -> MacAddr {
        MacAddr::from([0x52, 0x54, 0, 0, 0, last])
    }

    fn record(last: u8, stage: BootStage, name: &str) -> NodeRecord {
        let mut r = NodeRecord::first(mac(last), stage, 100);
        r.hostname = Some(name.into());
        r.stage_since = 100 + u64::from(last);
        r
    }

    fn standing(last: u8, standing: Standing) -> Admitted {
        Admitted {
            mac: mac(last),
            name: Some(format!("m{last}")),
            address: None,
            public: contracts::admit::MachineKey::generate().public(),
            standing,
            since: 50,
            by: "admin".into(),
        }
    }

    #[test]
    fn machines_on_their_way_and_waiting_come_first() {
        let p = BootPicture {
            nodes: vec![
                record(1, BootStage::Agent, "a-up"),
                record(2, BootStage::Tftp, "b-stuck"),
                record(3, BootStage::Agent, "c-waits"),
            ],
            admission: AdmissionList {
                policy: "manual".into(),
                machines: vec![
                    standing(1, Standing::Admitted),
                    standing(3, Standing::Pending),
                    standing(9, Standing::Pending),
                ],
                refusals: vec![],
                tokens: vec![],
            },
        };
        let m = machines(&p);
        let names: Vec<_> = m.iter().map(|m| m.name.clone().unwrap()).collect();
        assert_eq!(names, ["b-stuck", "c-waits", "m9", "a-up"]);
        assert_eq!(m[0].stage, "tftp");
        assert_eq!(m[0].stage_since, 102);
        assert_eq!(m[0].admission, None);
        assert!(m[1].waiting && m[1].stage == "agent");
        assert_eq!(m[2].stage, "admission");
        assert_eq!(m[3].admission, Some(Standing::Admitted));
        assert!(!m[3].waiting);
        let counts = stage_counts(&m);
        assert!(counts.contains(&("agent", 2)));
        assert!(counts.contains(&("tftp", 1)));
        assert!(counts.contains(&("admission", 1)));
        assert!(counts.contains(&("kernel", 0)));
    }
}
