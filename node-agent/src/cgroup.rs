//! The CPU cap on cluster jobs (`--cpu-quota PERCENT`, percent of all the
//! node's CPUs). Jobs run in a per-agent cgroup:
//!
//! - cgroup v2 (a netbooted node, or a unified host): `<root>/omcluster.slice/<agent>/`
//!   with `cpu.max = "<quota> 100000"`; `+cpu` is enabled in the parents'
//!   `cgroup.subtree_control` on the way down.
//! - cgroup v1 (a host that mounts the cpu controller as v1, like
//!   `/sys/fs/cgroup/cpu`): `<cpu mount>/omcluster/<agent>/` with
//!   `cpu.cfs_period_us = 100000` and `cpu.cfs_quota_us`.
//!
//! Either way `omcluster.slice` (v1: `omcluster`) gets a low CPU weight
//! ([`JOBS_WEIGHT`]).
//! The hierarchies are found in `/proc/self/mountinfo`, not at fixed paths.
//! A v2 hierarchy without the cpu controller (the hybrid layout's
//! `/sys/fs/cgroup/unified`) cannot cap CPU, so v1 is used there.
//! Each job has a cgroup of its own below the agent's ([`JobCgroup::job`]),
//! which its job init enters before it starts the program (see
//! [`crate::job::holder`]); a moved job's restored processes enter the
//! target's.

use std::fs;
use std::path::{Path, PathBuf};

/// CFS period used for the quota.
pub const PERIOD_US: u64 = 100_000;
/// The CPU weight of all the agent's jobs together (`cpu.weight`; 100 is
/// the default of everything else): when the CPUs are crowded, the agent
/// and the node's own processes come first, so a node running a crowd of
/// jobs still answers membership probes in time and is not taken for dead.
pub const JOBS_WEIGHT: u32 = 25;

/// Errors setting up the job cgroup.
#[derive(Debug, thiserror::Error)]
pub enum CgroupError {
    /// No cgroup hierarchy with a cpu controller is mounted.
    #[error("no cgroup hierarchy with the cpu controller among the mounts: {0}")]
    NoCpuController(String),
    /// A cgroup file could not be written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: String,
        /// Cause.
        source: std::io::Error,
    },
    /// The quota is out of range.
    #[error("cpu quota {0}% is out of range (1-100)")]
    BadQuota(u32),
}

/// Which cgroup interface a job cgroup uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Version {
    /// Unified hierarchy.
    V2,
    /// Legacy cpu controller hierarchy.
    V1,
}

/// The cgroup cluster jobs of one agent run in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCgroup {
    /// Its directory.
    pub dir: PathBuf,
    /// v1 or v2.
    pub version: Version,
}

/// The quota value in µs per [`PERIOD_US`] for `percent` of `cpus` CPUs, or
/// `None` for no cap.
pub fn quota_us(percent: u32, cpus: u32) -> Option<u64> {
    (percent < 100)
        .then(|| (PERIOD_US * u64::from(cpus.max(1)) * u64::from(percent) / 100).max(1000))
}

fn has_cpu_v2(root: &Path) -> bool {
    fs::read_to_string(root.join("cgroup.controllers"))
        .map(|c| c.split_whitespace().any(|x| x == "cpu"))
        .unwrap_or(false)
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.display().to_string(),
        source,
    })
}

fn sanitize(name: &str) -> String {
    name.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.' {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// Where the cgroup hierarchies are mounted, from `/proc/self/mountinfo`
/// text: (cgroup2 mount points, the v1 mount point holding the cpu controller).
pub fn find_mounts(mountinfo: &str) -> (Vec<PathBuf>, Option<PathBuf>) {
    let mut v2 = Vec::new();
    let mut v1 = None;
    for line in mountinfo.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let Some(point) = left.split(' ').nth(4) else {
            continue;
        };
        let mut r = right.split(' ');
        let (fstype, _source, opts) = (r.next(), r.next(), r.next().unwrap_or(""));
        match fstype {
            Some("cgroup2") => v2.push(PathBuf::from(point)),
            Some("cgroup") if opts.split(',').any(|o| o == "cpu") => {
                v1.get_or_insert_with(|| PathBuf::from(point));
            }
            _ => {}
        }
    }
    (v2, v1)
}

/// `cpu.max` for a quota of `quota` µs per period (`None`: uncapped).
fn v2_max(quota: Option<u64>) -> String {
    match quota {
        Some(q) => format!("{q} {PERIOD_US}"),
        None => format!("max {PERIOD_US}"),
    }
}

/// `cpu.cfs_quota_us` for a quota of `quota` µs per period.
fn v1_quota(quota: Option<u64>) -> String {
    quota.map_or("-1".to_string(), |q| q.to_string())
}

/// Creates (or reuses) the job cgroup of agent `agent` in the hierarchies
/// this process sees mounted, and applies the quota.
pub fn setup(agent: &str, percent: u32, cpus: u32) -> Result<JobCgroup, CgroupError> {
    let info = fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let (v2, v1) = find_mounts(&info);
    setup_at(&v2, v1.as_deref(), agent, percent, cpus)
}

/// [`setup`] with the hierarchies given: the first cgroup2 mount in `v2`
/// that offers the cpu controller, else the v1 cpu hierarchy at `v1`.
pub fn setup_at(
    v2: &[PathBuf],
    v1: Option<&Path>,
    agent: &str,
    percent: u32,
    cpus: u32,
) -> Result<JobCgroup, CgroupError> {
    if percent == 0 || percent > 100 {
        return Err(CgroupError::BadQuota(percent));
    }
    let leaf = sanitize(agent);
    let quota = quota_us(percent, cpus);
    for v2root in v2 {
        if !has_cpu_v2(v2root) {
            continue;
        }
        let slice = v2root.join("omcluster.slice");
        let dir = slice.join(&leaf);
        let _ = write(&v2root.join("cgroup.subtree_control"), "+cpu");
        fs::create_dir_all(&dir).map_err(|source| CgroupError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        write(&slice.join("cgroup.subtree_control"), "+cpu")?;
        write(&dir.join("cpu.max"), &v2_max(quota))?;
        // On the slice, beside the agent and the node's own processes in
        // the parent; best effort: a kernel without weights still runs jobs.
        let _ = write(&slice.join("cpu.weight"), &JOBS_WEIGHT.to_string());
        return Ok(JobCgroup {
            dir,
            version: Version::V2,
        });
    }
    if let Some(mount) = v1.filter(|m| m.join("cpu.cfs_quota_us").exists()) {
        let dir = mount.join("omcluster").join(&leaf);
        fs::create_dir_all(&dir).map_err(|source| CgroupError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        write(&dir.join("cpu.cfs_period_us"), &PERIOD_US.to_string())?;
        write(&dir.join("cpu.cfs_quota_us"), &v1_quota(quota))?;
        let shares = (JOBS_WEIGHT * 1024 / 100).to_string();
        let _ = write(&mount.join("omcluster").join("cpu.shares"), &shares);
        return Ok(JobCgroup {
            dir,
            version: Version::V1,
        });
    }
    let seen: Vec<String> = v2
        .iter()
        .map(|p| p.display().to_string())
        .chain(v1.map(|p| p.display().to_string()))
        .collect();
    Err(CgroupError::NoCpuController(if seen.is_empty() {
        "(no cgroup mounts)".into()
    } else {
        seen.join(", ")
    }))
}

impl JobCgroup {
    /// The file a process writes `0` to in order to join.
    pub fn procs_file(&self) -> PathBuf {
        self.dir.join("cgroup.procs")
    }

    /// Caps the jobs at `percent` of `cpus` CPUs from now on.
    pub fn set_quota(&self, percent: u32, cpus: u32) -> Result<(), CgroupError> {
        if percent == 0 || percent > 100 {
            return Err(CgroupError::BadQuota(percent));
        }
        let quota = quota_us(percent, cpus);
        match self.version {
            Version::V2 => write(&self.dir.join("cpu.max"), &v2_max(quota)),
            Version::V1 => write(&self.dir.join("cpu.cfs_quota_us"), &v1_quota(quota)),
        }
    }

    /// The quota as configured, read back (µs per period, `None` if uncapped).
    pub fn read_quota(&self) -> Option<u64> {
        let text = match self.version {
            Version::V2 => fs::read_to_string(self.dir.join("cpu.max")).ok()?,
            Version::V1 => fs::read_to_string(self.dir.join("cpu.cfs_quota_us")).ok()?,
        };
        text.split_whitespace().next()?.parse().ok()
    }

    /// The cgroup of one job, below this one (made if missing): where its
    /// processes run, so they are counted and capped together.
    pub fn job(&self, job: &str) -> Result<PathBuf, CgroupError> {
        let dir = self.dir.join(sanitize(job));
        fs::create_dir_all(&dir).map_err(|source| CgroupError::Write {
            path: dir.display().to_string(),
            source,
        })?;
        Ok(dir)
    }

    /// The processes in job `job`'s cgroup (every process of the job: they
    /// inherit it from the holder); `None` if it cannot be read.
    pub fn job_processes(&self, job: &str) -> Option<Vec<u32>> {
        let text = fs::read_to_string(self.dir.join(sanitize(job)).join("cgroup.procs")).ok()?;
        Some(text.lines().filter_map(|l| l.trim().parse().ok()).collect())
    }

    /// Removes a job's cgroup once its processes are gone.
    pub fn remove_job(&self, job: &str) {
        let _ = fs::remove_dir(self.dir.join(sanitize(job)));
    }

    /// Removes the cgroup (when the agent stops; fails harmlessly while
    /// processes remain in it).
    pub fn remove(&self) {
        let _ = fs::remove_dir(&self.dir);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quota_values() {
        assert_eq!(quota_us(50, 2), Some(100_000));
        assert_eq!(quota_us(10, 1), Some(10_000));
        assert_eq!(quota_us(100, 4), None);
        assert_eq!(quota_us(0, 1), Some(1000));
    }

    #[test]
    fn v2_layout_in_a_fake_tree() {
        let root = tempfile::tempdir().unwrap();
        fs::write(
            root.path().join("cgroup.controllers"),
            "cpuset cpu io memory\n",
        )
        .unwrap();
        let cg = setup_at(&[root.path().to_path_buf()], None, "node/1", 25, 2).unwrap();
        assert_eq!(cg.version, Version::V2);
        assert_eq!(cg.dir, root.path().join("omcluster.slice/node_1"));
        assert_eq!(
            fs::read_to_string(cg.dir.join("cpu.max")).unwrap(),
            "50000 100000"
        );
        assert_eq!(cg.read_quota(), Some(50_000));
        assert_eq!(
            fs::read_to_string(root.path().join("omcluster.slice/cpu.weight")).unwrap(),
            "25"
        );
    }

    #[test]
    fn v1_layout_in_a_fake_tree() {
        let root = tempfile::tempdir().unwrap();
        fs::create_dir_all(root.path().join("unified")).unwrap();
        fs::write(root.path().join("unified/cgroup.controllers"), "").unwrap();
        fs::create_dir_all(root.path().join("cpu")).unwrap();
        fs::write(root.path().join("cpu/cpu.cfs_quota_us"), "-1").unwrap();
        let cg = setup_at(
            &[root.path().join("unified")],
            Some(&root.path().join("cpu")),
            "n1",
            10,
            2,
        )
        .unwrap();
        assert_eq!(cg.version, Version::V1);
        assert_eq!(
            fs::read_to_string(cg.dir.join("cpu.cfs_quota_us")).unwrap(),
            "20000"
        );
    }

    #[test]
    fn bad_quota_and_missing_controller() {
        let root = tempfile::tempdir().unwrap();
        let v2 = [root.path().to_path_buf()];
        assert!(matches!(
            setup_at(&v2, None, "n", 0, 1),
            Err(CgroupError::BadQuota(0))
        ));
        assert!(matches!(
            setup_at(&v2, None, "n", 50, 1),
            Err(CgroupError::NoCpuController(_))
        ));
    }

    #[test]
    fn mountinfo_hybrid_host() {
        let info = "\
35 24 0:30 / /sys/fs/cgroup/unified rw,nosuid - cgroup2 cgroup2 rw,nsdelegate
36 24 0:31 / /sys/fs/cgroup/systemd rw - cgroup cgroup rw,xattr,name=systemd
40 24 0:35 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct
41 24 0:36 / /sys/fs/cgroup/cpuset rw - cgroup cgroup rw,cpuset
";
        let (v2, v1) = find_mounts(info);
        assert_eq!(v2, vec![PathBuf::from("/sys/fs/cgroup/unified")]);
        assert_eq!(v1, Some(PathBuf::from("/sys/fs/cgroup/cpu,cpuacct")));
    }
}
