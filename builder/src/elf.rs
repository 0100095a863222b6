//! Just enough ELF reading for the builder: a section's bytes by name (a
//! kernel module's `.modinfo`), and what a program needs at run time (its
//! `PT_INTERP` interpreter, `DT_NEEDED` libraries and the `DT_RUNPATH` or
//! `DT_RPATH` directories it finds them in). 64- and 32-bit, both
//! byte orders; pure functions over byte slices.

/// Errors from reading an ELF file.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ElfError {
    /// The bytes do not start with the ELF magic.
    #[error("not an ELF file")]
    NotElf,
    /// A header or table points outside the file.
    #[error("truncated or malformed ELF file ({0})")]
    Malformed(&'static str),
}

/// (name offset, type, offset, size) of one section header.
type SectionHeader = (u64, u64, u64, u64);

struct Reader<'a> {
    data: &'a [u8],
    is64: bool,
    le: bool,
}

impl<'a> Reader<'a> {
    fn new(data: &'a [u8]) -> Result<Self, ElfError> {
        if data.len() < 52 || &data[..4] != b"\x7fELF" {
            return Err(ElfError::NotElf);
        }
        let is64 = match data[4] {
            1 => false,
            2 => true,
            _ => return Err(ElfError::Malformed("class")),
        };
        let le = match data[5] {
            1 => true,
            2 => false,
            _ => return Err(ElfError::Malformed("byte order")),
        };
        if is64 && data.len() < 64 {
            return Err(ElfError::NotElf);
        }
        Ok(Reader { data, is64, le })
    }

    fn bytes(&self, off: u64, len: u64, what: &'static str) -> Result<&'a [u8], ElfError> {
        let end = off.checked_add(len).ok_or(ElfError::Malformed(what))?;
        self.data
            .get(off as usize..end as usize)
            .ok_or(ElfError::Malformed(what))
    }

    fn u16(&self, off: u64) -> Result<u64, ElfError> {
        let b = self.bytes(off, 2, "header")?;
        let a = [b[0], b[1]];
        Ok(if self.le {
            u16::from_le_bytes(a)
        } else {
            u16::from_be_bytes(a)
        } as u64)
    }

    fn u32(&self, off: u64) -> Result<u64, ElfError> {
        let b: [u8; 4] = self.bytes(off, 4, "header")?.try_into().expect("4 bytes");
        Ok(if self.le {
            u32::from_le_bytes(b)
        } else {
            u32::from_be_bytes(b)
        } as u64)
    }

    fn u64(&self, off: u64) -> Result<u64, ElfError> {
        let b: [u8; 8] = self.bytes(off, 8, "header")?.try_into().expect("8 bytes");
        Ok(if self.le {
            u64::from_le_bytes(b)
        } else {
            u64::from_be_bytes(b)
        })
    }

    /// A word: 8 bytes on ELF64, 4 on ELF32.
    fn word(&self, off: u64) -> Result<u64, ElfError> {
        if self.is64 {
            self.u64(off)
        } else {
            self.u32(off)
        }
    }

    fn cstr(&self, off: u64) -> Result<&'a [u8], ElfError> {
        let rest = self
            .data
            .get(off as usize..)
            .ok_or(ElfError::Malformed("string"))?;
        let end = rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(ElfError::Malformed("string"))?;
        Ok(&rest[..end])
    }

    /// (type, offset, vaddr, filesz) of every program header.
    fn program_headers(&self) -> Result<Vec<(u64, u64, u64, u64)>, ElfError> {
        let (phoff, phentsize, phnum) = if self.is64 {
            (self.u64(32)?, self.u16(54)?, self.u16(56)?)
        } else {
            (self.u32(28)?, self.u16(42)?, self.u16(44)?)
        };
        let mut out = Vec::new();
        for i in 0..phnum {
            let h = phoff + i * phentsize;
            out.push(if self.is64 {
                (
                    self.u32(h)?,
                    self.u64(h + 8)?,
                    self.u64(h + 16)?,
                    self.u64(h + 32)?,
                )
            } else {
                (
                    self.u32(h)?,
                    self.u32(h + 4)?,
                    self.u32(h + 8)?,
                    self.u32(h + 16)?,
                )
            });
        }
        Ok(out)
    }

    /// (name offset, type, offset, size) of every section header plus the
    /// section-name string table's offset.
    fn section_headers(&self) -> Result<(Vec<SectionHeader>, u64), ElfError> {
        let (shoff, shentsize, shnum, shstrndx) = if self.is64 {
            (self.u64(40)?, self.u16(58)?, self.u16(60)?, self.u16(62)?)
        } else {
            (self.u32(32)?, self.u16(46)?, self.u16(48)?, self.u16(50)?)
        };
        let mut out = Vec::new();
        for i in 0..shnum {
            let h = shoff + i * shentsize;
            out.push(if self.is64 {
                (
                    self.u32(h)?,
                    self.u32(h + 4)?,
                    self.u64(h + 24)?,
                    self.u64(h + 32)?,
                )
            } else {
                (
                    self.u32(h)?,
                    self.u32(h + 4)?,
                    self.u32(h + 16)?,
                    self.u32(h + 20)?,
                )
            });
        }
        let strtab = out
            .get(shstrndx as usize)
            .map(|s| s.2)
            .ok_or(ElfError::Malformed("section names"))?;
        Ok((out, strtab))
    }
}

/// The bytes of the section called `name`, if the file has one.
pub fn section<'a>(data: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, ElfError> {
    let r = Reader::new(data)?;
    let (sections, strtab) = r.section_headers()?;
    for (name_off, kind, off, size) in sections {
        if r.cstr(strtab + name_off)? == name.as_bytes() {
            // SHT_NOBITS has no bytes in the file.
            if kind == 8 {
                return Ok(Some(&[]));
            }
            return Ok(Some(r.bytes(off, size, "section")?));
        }
    }
    Ok(None)
}

/// What a program needs from the system to run.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Needs {
    /// The `PT_INTERP` dynamic loader path, if dynamically linked.
    pub interpreter: Option<String>,
    /// The `DT_NEEDED` library sonames, in order.
    pub libraries: Vec<String>,
    /// The `DT_RUNPATH` (else `DT_RPATH`) directories, in order, as written
    /// (`$ORIGIN` unexpanded).
    pub runpath: Vec<String>,
}

/// Read the interpreter and needed libraries of an ELF executable or library.
pub fn needs(data: &[u8]) -> Result<Needs, ElfError> {
    const PT_LOAD: u64 = 1;
    const PT_DYNAMIC: u64 = 2;
    const PT_INTERP: u64 = 3;
    let r = Reader::new(data)?;
    let phs = r.program_headers()?;
    let mut needs = Needs::default();
    if let Some(&(_, off, _, size)) = phs.iter().find(|p| p.0 == PT_INTERP) {
        let b = r.bytes(off, size, "interpreter")?;
        let b = b.split(|&c| c == 0).next().unwrap_or_default();
        needs.interpreter = Some(String::from_utf8_lossy(b).into_owned());
    }
    let Some(&(_, dyn_off, _, dyn_size)) = phs.iter().find(|p| p.0 == PT_DYNAMIC) else {
        return Ok(needs);
    };
    let entsize = if r.is64 { 16 } else { 8 };
    let wsize = entsize / 2;
    let mut needed_offs = Vec::new();
    let (mut rpath_off, mut runpath_off) = (None, None);
    let mut strtab_vaddr = None;
    let mut i = 0;
    while i + entsize <= dyn_size {
        let tag = r.word(dyn_off + i)?;
        let val = r.word(dyn_off + i + wsize)?;
        match tag {
            0 => break,
            1 => needed_offs.push(val),
            5 => strtab_vaddr = Some(val),
            15 => rpath_off = Some(val),
            29 => runpath_off = Some(val),
            _ => {}
        }
        i += entsize;
    }
    if needed_offs.is_empty() {
        return Ok(needs);
    }
    let vaddr = strtab_vaddr.ok_or(ElfError::Malformed("DT_STRTAB missing"))?;
    let file_off = phs
        .iter()
        .filter(|p| p.0 == PT_LOAD && p.2 <= vaddr && vaddr < p.2 + p.3)
        .map(|p| vaddr - p.2 + p.1)
        .next()
        .ok_or(ElfError::Malformed("DT_STRTAB outside any PT_LOAD"))?;
    for off in needed_offs {
        needs
            .libraries
            .push(String::from_utf8_lossy(r.cstr(file_off + off)?).into_owned());
    }
    // DT_RUNPATH wins over DT_RPATH when a file has both, as in ld.so.
    if let Some(off) = runpath_off.or(rpath_off) {
        let dirs = String::from_utf8_lossy(r.cstr(file_off + off)?).into_owned();
        needs.runpath = dirs
            .split(':')
            .filter(|d| !d.is_empty())
            .map(str::to_string)
            .collect();
    }
    Ok(needs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn not_elf_is_an_error() {
        assert_eq!(
            needs(b"#!/bin/sh\n echo hi there, this is a script, not a program.........")
                .unwrap_err(),
            ElfError::NotElf
        );
        let mut truncated = b"\x7fELF\x02\x01\x01".to_vec();
        truncated.resize(64, 0xff);
        assert!(matches!(needs(&truncated), Err(ElfError::Malformed(_))));
    }
}
