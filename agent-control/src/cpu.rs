//! The instruction-set features a running job may rely on, so that a job
//! moves only to a CPU that has all of its node's.
//!
//! A process picks its code paths for the CPU it starts on: glibc resolves
//! `memcpy` and friends to AVX2 or AVX-512 versions at start, numeric
//! libraries and `-march=native` builds use what `cpuid` offered. Restored
//! on a CPU without one of those, it dies of SIGILL later, at a place no
//! check can foresee. CRIU's own check at restore (`--cpu-cap`, `fpu` by
//! default) compares only the FPU state; `criu cpuinfo check` compares the
//! whole `cpuid`, stricter than needed (a newer CPU of another model is
//! fine). So each agent gossips the features of [`FEATURES`] its CPU has,
//! as bits ([`Features`]), and a node is a target for a job only if it has
//! every feature of the job's current node ([`Features::missing`]).
//!
//! Pure: [`Features::from_cpuinfo`] reads the text of `/proc/cpuinfo`.

use serde::{Deserialize, Serialize};

/// The features compared, by their `/proc/cpuinfo` names: those compilers
/// and libraries select code by (x86-64 levels v2 to v4, crypto, AVX-512
/// and AMX extensions, AMD's own). A bit's position is its index here:
/// append only, never reorder.
pub const FEATURES: [&str; 48] = [
    "pni",
    "ssse3",
    "sse4_1",
    "sse4_2",
    "popcnt",
    "cx16",
    "lahf_lm",
    "avx",
    "avx2",
    "fma",
    "f16c",
    "bmi1",
    "bmi2",
    "abm",
    "movbe",
    "xsave",
    "aes",
    "pclmulqdq",
    "sha_ni",
    "adx",
    "rdrand",
    "rdseed",
    "avx512f",
    "avx512dq",
    "avx512cd",
    "avx512bw",
    "avx512vl",
    "avx512ifma",
    "avx512vbmi",
    "avx512_vbmi2",
    "avx512_vnni",
    "avx512_bitalg",
    "avx512_vpopcntdq",
    "avx512_bf16",
    "avx512_fp16",
    "avx_vnni",
    "vaes",
    "vpclmulqdq",
    "gfni",
    "amx_tile",
    "amx_bf16",
    "amx_int8",
    "clflushopt",
    "clwb",
    "movdiri",
    "movdir64b",
    "sse4a",
    "fma4",
];

/// A set of [`FEATURES`], one bit each. `Features::default()` (no bit) is
/// what an agent that does not report them sends: unknown, taken as
/// compatible either way rather than as a CPU without SSE3.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Features(pub u64);

impl Features {
    /// The features every processor listed in `cpuinfo` (the text of
    /// `/proc/cpuinfo`) has.
    pub fn from_cpuinfo(cpuinfo: &str) -> Self {
        let mut all: Option<u64> = None;
        for line in cpuinfo.lines() {
            let Some((key, value)) = line.split_once(':') else {
                continue;
            };
            if key.trim() != "flags" {
                continue;
            }
            let have: Vec<&str> = value.split_whitespace().collect();
            let bits = FEATURES
                .iter()
                .enumerate()
                .filter(|(_, f)| have.contains(f))
                .fold(0u64, |acc, (i, _)| acc | 1 << i);
            all = Some(all.map_or(bits, |a| a & bits));
        }
        Features(all.unwrap_or(0))
    }

    /// Whether anything is known.
    pub fn known(self) -> bool {
        self.0 != 0
    }

    /// The features of `self` (a job's node) that `target` lacks; none when
    /// either side is unknown.
    pub fn missing(self, target: Features) -> Vec<&'static str> {
        if !self.known() || !target.known() {
            return Vec::new();
        }
        let lacking = self.0 & !target.0;
        FEATURES
            .iter()
            .enumerate()
            .filter(|(i, _)| lacking & (1 << i) != 0)
            .map(|(_, f)| *f)
            .collect()
    }

    /// Whether a job running on a CPU with `self` may move to `target`.
    pub fn fits(self, target: Features) -> bool {
        self.missing(target).is_empty()
    }
}

/// Why a job on `source` (features `from`) cannot move to `target`
/// (features `to`), if it cannot.
pub fn refusal(source: &str, from: Features, target: &str, to: Features) -> Option<String> {
    let missing = from.missing(to);
    if missing.is_empty() {
        return None;
    }
    Some(format!(
        "node {target}'s CPU lacks {} that node {source}'s has; the job may use {} and would die there of an illegal instruction",
        missing.join(", "),
        if missing.len() == 1 { "it" } else { "them" }
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    const NEW: &str = "processor\t: 0\nflags\t\t: fpu sse sse2 pni ssse3 sse4_1 sse4_2 popcnt avx avx2 fma bmi1 bmi2 aes\n\nprocessor\t: 1\nflags\t\t: fpu sse sse2 pni ssse3 sse4_1 sse4_2 popcnt avx avx2 fma bmi1 bmi2 aes avx512f\n";
    const OLD: &str =
        "processor\t: 0\nflags\t\t: fpu sse sse2 pni ssse3 sse4_1 sse4_2 popcnt aes\n";

    #[test]
    fn features_are_what_every_processor_has() {
        let new = Features::from_cpuinfo(NEW);
        let names: Vec<&str> = FEATURES
            .iter()
            .enumerate()
            .filter(|(i, _)| new.0 & (1 << i) != 0)
            .map(|(_, f)| *f)
            .collect();
        // avx512f is on one processor only: not counted.
        assert_eq!(
            names,
            [
                "pni", "ssse3", "sse4_1", "sse4_2", "popcnt", "avx", "avx2", "fma", "bmi1", "bmi2",
                "aes"
            ]
        );
        assert!(!Features::from_cpuinfo("processor : 0\n").known());
    }

    #[test]
    fn a_job_moves_only_to_a_cpu_with_all_its_nodes_features() {
        let (new, old) = (Features::from_cpuinfo(NEW), Features::from_cpuinfo(OLD));
        assert!(old.fits(new));
        assert!(new.fits(new));
        assert_eq!(new.missing(old), ["avx", "avx2", "fma", "bmi1", "bmi2"]);
        assert!(!new.fits(old));
        assert!(new.fits(Features::default()));
        assert!(Features::default().fits(old));
        let why = refusal("a", new, "b", old).unwrap();
        assert!(
            why.starts_with("node b's CPU lacks avx, avx2, fma, bmi1, bmi2 that node a's has"),
            "{why}"
        );
        assert_eq!(refusal("b", old, "a", new), None);
    }

    #[test]
    fn every_feature_has_a_bit() {
        assert!(FEATURES.len() <= 64);
        let mut sorted = FEATURES.to_vec();
        sorted.sort();
        sorted.dedup();
        assert_eq!(sorted.len(), FEATURES.len(), "a feature is listed twice");
    }
}
