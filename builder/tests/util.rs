//! Shared fixtures for the builder's integration tests (the gates, host
//! tools and the workspace root come from the `lab` crate).
#![allow(dead_code)]

pub use lab::build::workspace;
pub use lab::gate::tool;

/// A minimal ELF64 relocatable file with a `.modinfo` section holding the
/// given `key=value` strings: enough for the module reader.
pub fn fake_module(modinfo: &[&str]) -> Vec<u8> {
    let mut info = Vec::new();
    for kv in modinfo {
        info.extend_from_slice(kv.as_bytes());
        info.push(0);
    }
    let shstrtab = b"\0.modinfo\0.shstrtab\0".to_vec();
    let info_off = 64u64;
    let str_off = info_off + info.len() as u64;
    let sh_off = (str_off + shstrtab.len() as u64 + 7) & !7;
    let mut out = vec![0u8; 64];
    out[..4].copy_from_slice(b"\x7fELF");
    out[4] = 2; // ELFCLASS64
    out[5] = 1; // little endian
    out[6] = 1;
    out[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
    out[18..20].copy_from_slice(&62u16.to_le_bytes()); // x86-64
    out[20..24].copy_from_slice(&1u32.to_le_bytes());
    out[40..48].copy_from_slice(&sh_off.to_le_bytes());
    out[52..54].copy_from_slice(&64u16.to_le_bytes()); // ehsize
    out[58..60].copy_from_slice(&64u16.to_le_bytes()); // shentsize
    out[60..62].copy_from_slice(&3u16.to_le_bytes()); // shnum
    out[62..64].copy_from_slice(&2u16.to_le_bytes()); // shstrndx
    out.extend_from_slice(&info);
    out.extend_from_slice(&shstrtab);
    out.resize(sh_off as usize, 0);
    let sh = |name: u32, kind: u32, off: u64, size: u64| {
        let mut h = vec![0u8; 64];
        h[0..4].copy_from_slice(&name.to_le_bytes());
        h[4..8].copy_from_slice(&kind.to_le_bytes());
        h[24..32].copy_from_slice(&off.to_le_bytes());
        h[32..40].copy_from_slice(&size.to_le_bytes());
        h
    };
    out.extend(sh(0, 0, 0, 0));
    out.extend(sh(1, 1, info_off, info.len() as u64)); // .modinfo, PROGBITS
    out.extend(sh(10, 3, str_off, shstrtab.len() as u64)); // .shstrtab, STRTAB
    out
}
