//! ISO 9660 layout (ECMA-119) with Rock Ridge (RRIP 1991A over SUSP) and a
//! Joliet tree: name mangling, the directory trees, directory records, path
//! tables and volume descriptors. Pure: sizes in, blocks of bytes out.
//!
//! Names: in the Rock Ridge tree each component gets an ISO 9660 level 2
//! identifier (`A-Z 0-9 _`, at most 30 characters plus `;1` for files, 31 for
//! directories; clashes get a numeric tail) and a Rock Ridge `NM` entry with
//! the name as given, plus a `PX` entry with the mode. The root's `.` record
//! carries `SP` and a `CE` pointing at the continuation block that holds the
//! `ER` entry. The Joliet tree (for readers without Rock Ridge, e.g. Windows)
//! has the same directories with UCS-2 names and points at the same file
//! extents.
//!
//! Layout from block 20: the continuation block, the Rock Ridge tree's L and
//! M path tables and directories in path-table order (breadth first,
//! sorted), the same for the Joliet tree, the files sorted by path, then the
//! caller's trailing image (the ESP) and the tail reserved for the backup GPT.

use std::collections::{BTreeMap, HashSet, VecDeque};

use super::{IsoError, BLOCK};

/// A file to place in the tree.
#[derive(Debug, Clone)]
pub struct InputFile {
    /// Relative `/`-separated path.
    pub path: String,
    /// Size in bytes.
    pub size: u64,
    /// Permission bits for Rock Ridge.
    pub mode: u32,
}

/// Volume-wide fields of the primary volume descriptor.
#[derive(Debug, Clone)]
pub struct VolumeInfo {
    /// Volume identifier (already validated, uppercase).
    pub volume_id: String,
    /// Every timestamp.
    pub epoch: u64,
}

#[derive(Debug, Clone)]
enum Kind {
    Dir(usize),
    File(usize),
}

#[derive(Debug, Clone)]
struct Entry {
    kind: Kind,
    iso_id: Vec<u8>,
    rr_name: String,
}

#[derive(Debug, Clone)]
struct DirNode {
    /// ISO identifier (root: `[0]`).
    iso_id: Vec<u8>,
    /// 0-based index of the parent in `dirs` (root: 0).
    parent: usize,
    /// Children sorted by ISO identifier.
    entries: Vec<Entry>,
    /// Number of subdirectories (for the Rock Ridge link count).
    subdirs: u32,
}

#[derive(Debug, Clone)]
struct FileNode {
    path: String,
    size: u64,
    mode: u32,
}

/// Which name space a tree carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// ISO 9660 level 2 identifiers plus Rock Ridge `NM`/`PX` entries.
    RockRidge,
    /// Joliet: UCS-2 names (up to 64 characters, no `;1`), no system use entries.
    Joliet,
}

/// The directory tree with names assigned; `dirs` is in path-table order.
#[derive(Debug, Clone)]
pub struct Tree {
    names: Names,
    dirs: Vec<DirNode>,
    files: Vec<FileNode>,
}

/// Where the Joliet tree's metadata went.
#[derive(Debug, Clone)]
pub struct JolietLayout {
    /// Type L path table.
    pub l_path_lba: u32,
    /// Type M path table.
    pub m_path_lba: u32,
    /// Path table size in bytes.
    pub path_table_size: u32,
    dir_lba: Vec<u32>,
    dir_size: Vec<u32>,
}

/// Addresses a tree's records point at.
#[derive(Clone, Copy)]
struct Addrs<'a> {
    dir_lba: &'a [u32],
    dir_size: &'a [u32],
    file_lba: &'a [u32],
    ce_lba: u32,
}

/// Block addresses of everything in the volume.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Rock Ridge continuation block (holds `ER`).
    pub ce_lba: u32,
    /// Type L (little-endian) path table.
    pub l_path_lba: u32,
    /// Type M (big-endian) path table.
    pub m_path_lba: u32,
    /// Path table size in bytes.
    pub path_table_size: u32,
    dir_lba: Vec<u32>,
    dir_size: Vec<u32>,
    file_lba: Vec<u32>,
    /// File indices in layout order (sorted by path).
    file_order: Vec<usize>,
    files: Vec<FileNode>,
    /// First block of the trailing image (the ESP).
    pub esp_lba: u32,
    /// Volume space size: the whole image including the backup GPT tail.
    pub total_blocks: u32,
    /// The Joliet tree's metadata, when there is one.
    pub joliet: Option<JolietLayout>,
}

impl Layout {
    /// LBA of the file at `path`, if it is in the tree.
    pub fn file_lba(&self, path: &str) -> Option<u32> {
        self.files
            .iter()
            .position(|f| f.path == path)
            .map(|i| self.file_lba[i])
    }

    /// (path, LBA, size) of every file, in layout order.
    pub fn files_in_order(&self) -> Vec<(String, u32, u64)> {
        self.file_order
            .iter()
            .map(|&i| {
                (
                    self.files[i].path.clone(),
                    self.file_lba[i],
                    self.files[i].size,
                )
            })
            .collect()
    }
}

#[derive(Default)]
struct TmpDir {
    subdirs: BTreeMap<String, TmpDir>,
    files: BTreeMap<String, usize>,
}

const MAX_DEPTH: usize = 8;

impl Tree {
    /// Builds the Rock Ridge tree from file paths; parent directories are implicit.
    pub fn build(inputs: &[InputFile]) -> Result<Tree, IsoError> {
        Tree::build_with(inputs, Names::RockRidge)
    }

    /// Builds the tree in the given name space.
    pub fn build_with(inputs: &[InputFile], names: Names) -> Result<Tree, IsoError> {
        let mut root = TmpDir::default();
        let mut files = Vec::new();
        for f in inputs {
            let path = f.path.trim_start_matches('/');
            let parts: Vec<&str> = path.split('/').collect();
            if path.is_empty()
                || parts
                    .iter()
                    .any(|p| p.is_empty() || *p == "." || *p == ".." || p.contains('\0'))
            {
                return Err(IsoError::BadPath(f.path.clone()));
            }
            if f.size >= 1 << 32 {
                return Err(IsoError::FileTooLarge {
                    path: f.path.clone(),
                    size: f.size,
                });
            }
            if parts.len() > MAX_DEPTH {
                return Err(IsoError::TooDeep(f.path.clone()));
            }
            let (name, dirs) = parts.split_last().expect("split gives at least one part");
            let mut d = &mut root;
            for dir in dirs {
                if d.files.contains_key(*dir) {
                    return Err(IsoError::DuplicatePath(f.path.clone()));
                }
                d = d.subdirs.entry(dir.to_string()).or_default();
            }
            if d.subdirs.contains_key(*name) || d.files.contains_key(*name) {
                return Err(IsoError::DuplicatePath(f.path.clone()));
            }
            d.files.insert(name.to_string(), files.len());
            files.push(FileNode {
                path: path.to_string(),
                size: f.size,
                mode: f.mode & 0o7777,
            });
        }

        // Breadth first, children sorted by ISO identifier: path-table order.
        let mut dirs: Vec<DirNode> = Vec::new();
        let mut queue: VecDeque<(&TmpDir, usize, Vec<u8>)> = VecDeque::new();
        queue.push_back((&root, 0, vec![0]));
        while let Some((tmp, parent, iso_id)) = queue.pop_front() {
            let me = dirs.len();
            let mut used = HashSet::new();
            let mut entries = Vec::new();
            let mut subdir_entries = Vec::new();
            for (name, sub) in &tmp.subdirs {
                let id = unique_in(names, &mut used, name, true);
                subdir_entries.push((id.clone(), sub));
                entries.push(Entry {
                    kind: Kind::Dir(usize::MAX),
                    iso_id: id,
                    rr_name: name.clone(),
                });
            }
            for (name, &fi) in &tmp.files {
                let id = unique_in(names, &mut used, name, false);
                entries.push(Entry {
                    kind: Kind::File(fi),
                    iso_id: id,
                    rr_name: name.clone(),
                });
            }
            entries.sort_by_key(|e| key_in(names, &e.iso_id));
            subdir_entries.sort_by_key(|e| key_in(names, &e.0));
            let subdirs = subdir_entries.len() as u32;
            dirs.push(DirNode {
                iso_id,
                parent,
                entries,
                subdirs,
            });
            for (id, sub) in subdir_entries {
                queue.push_back((sub, me, id));
            }
        }
        // Link Dir entries to their index: children of each dir were queued in
        // sorted order, so walk the BFS order again.
        let mut next = 1;
        for dir in dirs.iter_mut() {
            let mut ids: Vec<Vec<u8>> = dir
                .entries
                .iter()
                .filter(|e| matches!(e.kind, Kind::Dir(_)))
                .map(|e| e.iso_id.clone())
                .collect();
            ids.sort_by_key(|id| key_in(names, id));
            for id in ids {
                let e = dir
                    .entries
                    .iter_mut()
                    .find(|e| e.iso_id == id)
                    .expect("entry exists");
                e.kind = Kind::Dir(next);
                next += 1;
            }
        }
        let tree = Tree { names, dirs, files };
        // Every record must fit in 255 bytes.
        for d in &tree.dirs {
            for e in &d.entries {
                let su = tree.entry_su(e);
                if 33 + e.iso_id.len() + 1 + su.len() > 255 {
                    return Err(IsoError::NameTooLong(e.rr_name.clone()));
                }
            }
        }
        Ok(tree)
    }

    /// Assigns block addresses starting at `first_lba`, with a trailing
    /// image of `esp_bytes` after the files.
    pub fn layout(
        &self,
        joliet: Option<&Tree>,
        first_lba: u32,
        esp_bytes: u64,
    ) -> Result<Layout, IsoError> {
        let mut lba = u64::from(first_lba);
        let ce_lba = lba;
        lba += 1;
        let path_table_size = self.path_table(&[], false).len() as u64;
        let pt_blocks = blocks(path_table_size);
        let l_path_lba = lba;
        lba += pt_blocks;
        let m_path_lba = lba;
        lba += pt_blocks;
        let mut dir_lba = Vec::new();
        let mut dir_size = Vec::new();
        for d in 0..self.dirs.len() {
            let size = self.dir_extent_size(d);
            dir_lba.push(lba as u32);
            dir_size.push(size);
            lba += blocks(u64::from(size));
        }
        let joliet = joliet.map(|j| {
            let path_table_size = j.path_table(&[], false).len() as u64;
            let pt_blocks = blocks(path_table_size);
            let l_path_lba = lba as u32;
            lba += pt_blocks;
            let m_path_lba = lba as u32;
            lba += pt_blocks;
            let mut dir_lba = Vec::new();
            let mut dir_size = Vec::new();
            for d in 0..j.dirs.len() {
                let size = j.dir_extent_size(d);
                dir_lba.push(lba as u32);
                dir_size.push(size);
                lba += blocks(u64::from(size));
            }
            JolietLayout {
                l_path_lba,
                m_path_lba,
                path_table_size: path_table_size as u32,
                dir_lba,
                dir_size,
            }
        });
        let mut file_order: Vec<usize> = (0..self.files.len()).collect();
        file_order.sort_by(|&a, &b| self.files[a].path.cmp(&self.files[b].path));
        let mut file_lba = vec![0u32; self.files.len()];
        for &i in &file_order {
            file_lba[i] = lba as u32;
            lba += blocks(self.files[i].size);
        }
        let esp_lba = lba;
        lba += blocks(esp_bytes);
        lba += super::partition::GPT_TAIL_BYTES / BLOCK;
        if lba > u64::from(u32::MAX) {
            return Err(IsoError::ImageTooLarge(lba));
        }
        Ok(Layout {
            ce_lba: ce_lba as u32,
            l_path_lba: l_path_lba as u32,
            m_path_lba: m_path_lba as u32,
            path_table_size: path_table_size as u32,
            dir_lba,
            dir_size,
            file_lba,
            file_order,
            files: self.files.clone(),
            esp_lba: esp_lba as u32,
            total_blocks: lba as u32,
            joliet,
        })
    }

    /// This tree's volume descriptor: the primary one (block 16) for the
    /// Rock Ridge tree, the Joliet supplementary one for the Joliet tree.
    pub fn primary_volume_descriptor(&self, layout: &Layout, vol: &VolumeInfo) -> Vec<u8> {
        if self.names == Names::Joliet {
            return self.joliet_volume_descriptor(layout, vol);
        }
        let mut b = vec![0u8; BLOCK as usize];
        b[0] = 1;
        b[1..6].copy_from_slice(b"CD001");
        b[6] = 1;
        put_str(&mut b[8..40], "LINUX");
        put_str(&mut b[40..72], &vol.volume_id);
        b[80..88].copy_from_slice(&both32(layout.total_blocks));
        b[120..124].copy_from_slice(&both16(1));
        b[124..128].copy_from_slice(&both16(1));
        b[128..132].copy_from_slice(&both16(BLOCK as u16));
        b[132..140].copy_from_slice(&both32(layout.path_table_size));
        b[140..144].copy_from_slice(&layout.l_path_lba.to_le_bytes());
        b[148..152].copy_from_slice(&layout.m_path_lba.to_be_bytes());
        let root = record(
            &[0],
            layout.dir_lba[0],
            layout.dir_size[0],
            true,
            vol.epoch,
            &[],
        );
        b[156..190].copy_from_slice(&root);
        put_str(&mut b[190..318], &vol.volume_id);
        put_str(&mut b[318..446], "");
        put_str(&mut b[446..574], "OMBUILD");
        put_str(&mut b[574..702], "OMBUILD");
        put_str(&mut b[702..739], "");
        put_str(&mut b[739..776], "");
        put_str(&mut b[776..813], "");
        let date = dec_datetime(vol.epoch);
        b[813..830].copy_from_slice(&date);
        b[830..847].copy_from_slice(&date);
        b[847..864].copy_from_slice(&dec_datetime_unset());
        b[864..881].copy_from_slice(&date);
        b[881] = 1;
        b
    }

    /// The Joliet supplementary volume descriptor (UCS-2 level 3).
    fn joliet_volume_descriptor(&self, layout: &Layout, vol: &VolumeInfo) -> Vec<u8> {
        let j = layout
            .joliet
            .as_ref()
            .expect("the layout was made with the Joliet tree");
        let mut b = vec![0u8; BLOCK as usize];
        b[0] = 2;
        b[1..6].copy_from_slice(b"CD001");
        b[6] = 1;
        put_ucs2(&mut b[8..40], "LINUX");
        put_ucs2(&mut b[40..72], &vol.volume_id);
        b[80..88].copy_from_slice(&both32(layout.total_blocks));
        b[88..91].copy_from_slice(b"%/E");
        b[120..124].copy_from_slice(&both16(1));
        b[124..128].copy_from_slice(&both16(1));
        b[128..132].copy_from_slice(&both16(BLOCK as u16));
        b[132..140].copy_from_slice(&both32(j.path_table_size));
        b[140..144].copy_from_slice(&j.l_path_lba.to_le_bytes());
        b[148..152].copy_from_slice(&j.m_path_lba.to_be_bytes());
        let root = record(&[0], j.dir_lba[0], j.dir_size[0], true, vol.epoch, &[]);
        b[156..190].copy_from_slice(&root);
        put_ucs2(&mut b[190..318], &vol.volume_id);
        put_ucs2(&mut b[318..446], "");
        put_ucs2(&mut b[446..574], "OMBUILD");
        put_ucs2(&mut b[574..702], "OMBUILD");
        put_ucs2(&mut b[702..738], "");
        put_ucs2(&mut b[739..775], "");
        put_ucs2(&mut b[776..812], "");
        let date = dec_datetime(vol.epoch);
        b[813..830].copy_from_slice(&date);
        b[830..847].copy_from_slice(&date);
        b[847..864].copy_from_slice(&dec_datetime_unset());
        b[864..881].copy_from_slice(&date);
        b[881] = 1;
        b
    }

    fn addrs<'a>(&self, layout: &'a Layout) -> Addrs<'a> {
        let (dir_lba, dir_size) = match (self.names, &layout.joliet) {
            (Names::Joliet, Some(j)) => (&j.dir_lba[..], &j.dir_size[..]),
            _ => (&layout.dir_lba[..], &layout.dir_size[..]),
        };
        Addrs {
            dir_lba,
            dir_size,
            file_lba: &layout.file_lba,
            ce_lba: layout.ce_lba,
        }
    }

    /// Metadata blocks after the descriptors: continuation area (Rock Ridge
    /// tree only), path tables and directories, each with its LBA.
    pub fn metadata_blocks(&self, layout: &Layout, vol: &VolumeInfo) -> Vec<(u32, Vec<u8>)> {
        let mut out = Vec::new();
        if self.names == Names::Joliet {
            let j = layout
                .joliet
                .as_ref()
                .expect("the layout was made with the Joliet tree");
            out.push((j.l_path_lba, self.path_table(&j.dir_lba, false)));
            out.push((j.m_path_lba, self.path_table(&j.dir_lba, true)));
            for d in 0..self.dirs.len() {
                out.push((j.dir_lba[d], self.dir_extent(d, layout, vol.epoch)));
            }
            return out;
        }
        let mut ce = er_entry();
        ce.resize(BLOCK as usize, 0);
        out.push((layout.ce_lba, ce));
        out.push((layout.l_path_lba, self.path_table(&layout.dir_lba, false)));
        out.push((layout.m_path_lba, self.path_table(&layout.dir_lba, true)));
        for d in 0..self.dirs.len() {
            out.push((layout.dir_lba[d], self.dir_extent(d, layout, vol.epoch)));
        }
        out
    }

    /// Path table (type L, or type M when `big_endian`); `dir_lba` may be
    /// empty when only the size matters.
    fn path_table(&self, dir_lba: &[u32], big_endian: bool) -> Vec<u8> {
        let mut t = Vec::new();
        for (i, d) in self.dirs.iter().enumerate() {
            let lba = dir_lba.get(i).copied().unwrap_or(0);
            let parent = (d.parent + 1) as u16;
            t.push(d.iso_id.len() as u8);
            t.push(0);
            if big_endian {
                t.extend_from_slice(&lba.to_be_bytes());
                t.extend_from_slice(&parent.to_be_bytes());
            } else {
                t.extend_from_slice(&lba.to_le_bytes());
                t.extend_from_slice(&parent.to_le_bytes());
            }
            t.extend_from_slice(&d.iso_id);
            if d.iso_id.len() % 2 == 1 {
                t.push(0);
            }
        }
        t
    }

    fn entry_su(&self, e: &Entry) -> Vec<u8> {
        if self.names == Names::Joliet {
            return Vec::new();
        }
        let mut su = match e.kind {
            Kind::Dir(i) => px(0o040755, 2 + self.dirs.get(i).map_or(0, |d| d.subdirs)),
            Kind::File(i) => px(0o100000 | self.files[i].mode, 1),
        };
        su.extend_from_slice(&nm(&e.rr_name));
        su
    }

    /// Records of directory `d`: `.`, `..`, then the entries.
    fn dir_records(&self, d: usize, layout: Option<&Layout>, epoch: u64) -> Vec<Vec<u8>> {
        let dir = &self.dirs[d];
        let addrs = layout.map(|l| self.addrs(l));
        let at = |i: usize| addrs.map_or((0, 0), |a| (a.dir_lba[i], a.dir_size[i]));
        let rr = self.names == Names::RockRidge;
        let mut recs = Vec::new();
        let (lba, size) = at(d);
        let mut dot_su = Vec::new();
        if rr {
            if d == 0 {
                dot_su.extend_from_slice(&[b'S', b'P', 7, 1, 0xBE, 0xEF, 0]);
            }
            dot_su.extend_from_slice(&px(0o040755, 2 + dir.subdirs));
            if d == 0 {
                let ce_lba = addrs.map_or(0, |a| a.ce_lba);
                dot_su.extend_from_slice(&ce_entry(ce_lba, 0, er_entry().len() as u32));
            }
        }
        recs.push(record(&[0], lba, size, true, epoch, &dot_su));
        let (plba, psize) = at(dir.parent);
        let parent_su = if rr {
            px(0o040755, 2 + self.dirs[dir.parent].subdirs)
        } else {
            Vec::new()
        };
        recs.push(record(&[1], plba, psize, true, epoch, &parent_su));
        for e in &dir.entries {
            let su = self.entry_su(e);
            let rec = match e.kind {
                Kind::Dir(i) => {
                    let (l, s) = at(i);
                    record(&e.iso_id, l, s, true, epoch, &su)
                }
                Kind::File(i) => {
                    let l = addrs.map_or(0, |a| a.file_lba[i]);
                    record(&e.iso_id, l, self.files[i].size as u32, false, epoch, &su)
                }
            };
            recs.push(rec);
        }
        recs
    }

    fn dir_extent_size(&self, d: usize) -> u32 {
        let recs = self.dir_records(d, None, 0);
        pack(&recs).len() as u32
    }

    fn dir_extent(&self, d: usize, layout: &Layout, epoch: u64) -> Vec<u8> {
        pack(&self.dir_records(d, Some(layout), epoch))
    }
}

/// Packs records into blocks; a record never crosses a block boundary.
fn pack(recs: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    let mut used = 0usize;
    for r in recs {
        if used + r.len() > BLOCK as usize {
            out.resize(out.len() + BLOCK as usize - used, 0);
            used = 0;
        }
        out.extend_from_slice(r);
        used += r.len();
    }
    let rem = out.len() % BLOCK as usize;
    if rem != 0 || out.is_empty() {
        out.resize(out.len() + BLOCK as usize - rem, 0);
    }
    out
}

fn blocks(bytes: u64) -> u64 {
    bytes.div_ceil(BLOCK)
}

/// A directory record (ECMA-119 9.1) with system use field `su`.
pub fn record(id: &[u8], lba: u32, size: u32, dir: bool, epoch: u64, su: &[u8]) -> Vec<u8> {
    let pad = usize::from(id.len().is_multiple_of(2));
    let mut len = 33 + id.len() + pad + su.len();
    len += len % 2;
    let mut r = vec![0u8; len];
    r[0] = len as u8;
    r[2..10].copy_from_slice(&both32(lba));
    r[10..18].copy_from_slice(&both32(size));
    r[18..25].copy_from_slice(&dir_datetime(epoch));
    r[25] = if dir { 2 } else { 0 };
    r[28..32].copy_from_slice(&both16(1));
    r[32] = id.len() as u8;
    r[33..33 + id.len()].copy_from_slice(id);
    let su_at = 33 + id.len() + pad;
    r[su_at..su_at + su.len()].copy_from_slice(su);
    r
}

/// Rock Ridge `PX` (RRIP 1991A, 36 bytes): mode, links, uid 0, gid 0.
fn px(mode: u32, nlink: u32) -> Vec<u8> {
    let mut e = vec![b'P', b'X', 36, 1];
    e.extend_from_slice(&both32(mode));
    e.extend_from_slice(&both32(nlink));
    e.extend_from_slice(&both32(0));
    e.extend_from_slice(&both32(0));
    e
}

/// Rock Ridge `NM`: the real name.
fn nm(name: &str) -> Vec<u8> {
    let mut e = vec![b'N', b'M', (5 + name.len()).min(255) as u8, 1, 0];
    e.extend_from_slice(name.as_bytes());
    e
}

/// SUSP `CE`: continuation area at block `lba`, `offset`, `len` bytes.
fn ce_entry(lba: u32, offset: u32, len: u32) -> Vec<u8> {
    let mut e = vec![b'C', b'E', 28, 1];
    e.extend_from_slice(&both32(lba));
    e.extend_from_slice(&both32(offset));
    e.extend_from_slice(&both32(len));
    e
}

/// SUSP `ER` announcing RRIP 1991A.
fn er_entry() -> Vec<u8> {
    const ID: &str = "RRIP_1991A";
    const DES: &str =
        "THE ROCK RIDGE INTERCHANGE PROTOCOL PROVIDES SUPPORT FOR POSIX FILE SYSTEM SEMANTICS";
    const SRC: &str = "PLEASE CONTACT DISC PUBLISHER FOR SPECIFICATION SOURCE.  SEE PUBLISHER IDENTIFIER IN PRIMARY VOLUME DESCRIPTOR FOR CONTACT INFORMATION.";
    let len = 8 + ID.len() + DES.len() + SRC.len();
    let mut e = vec![
        b'E',
        b'R',
        len as u8,
        1,
        ID.len() as u8,
        DES.len() as u8,
        SRC.len() as u8,
        1,
    ];
    e.extend_from_slice(ID.as_bytes());
    e.extend_from_slice(DES.as_bytes());
    e.extend_from_slice(SRC.as_bytes());
    e
}

/// The volume descriptor set terminator.
pub fn terminator() -> Vec<u8> {
    let mut b = vec![0u8; BLOCK as usize];
    b[0] = 255;
    b[1..6].copy_from_slice(b"CD001");
    b[6] = 1;
    b
}

/// Both-endian 16-bit field (ECMA-119 7.2.3).
pub fn both16(v: u16) -> [u8; 4] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], b[0], b[1]]
}

/// Both-endian 32-bit field (ECMA-119 7.3.3).
pub fn both32(v: u32) -> [u8; 8] {
    let (l, b) = (v.to_le_bytes(), v.to_be_bytes());
    [l[0], l[1], l[2], l[3], b[0], b[1], b[2], b[3]]
}

fn put_str(field: &mut [u8], s: &str) {
    field.fill(b' ');
    let n = s.len().min(field.len());
    field[..n].copy_from_slice(&s.as_bytes()[..n]);
}

/// ISO 9660 identifier for one name: level 2 d-characters, files get `.EXT;1`.
pub fn iso_name(name: &str, dir: bool) -> String {
    let map = |s: &str| -> String {
        s.chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' {
                    c.to_ascii_uppercase()
                } else {
                    '_'
                }
            })
            .collect()
    };
    if dir {
        let mut n = map(name);
        n.truncate(31);
        return n;
    }
    let (base, ext) = match name.rfind('.') {
        Some(i) if i > 0 => (&name[..i], &name[i + 1..]),
        _ => (name, ""),
    };
    let mut ext = map(ext);
    ext.truncate(8);
    let mut base = map(base);
    base.truncate(30 - 1 - ext.len());
    format!("{base}.{ext};1")
}

/// Makes the ISO identifier of `name` unique among `used` with a numeric tail.
fn unique_id(used: &mut HashSet<Vec<u8>>, name: &str, dir: bool) -> Vec<u8> {
    let first = iso_name(name, dir);
    if used.insert(first.as_bytes().to_vec()) {
        return first.into_bytes();
    }
    for n in 1u32.. {
        let tail = n.to_string();
        let candidate = if dir {
            let keep = first.len().min(31 - tail.len());
            format!("{}{tail}", &first[..keep])
        } else {
            let dot = first.find('.').expect("file ids have a dot");
            let (base, rest) = first.split_at(dot);
            let keep = base.len().min(30 - (rest.len() - 2) - tail.len());
            format!("{}{tail}{rest}", &base[..keep])
        };
        if used.insert(candidate.as_bytes().to_vec()) {
            return candidate.into_bytes();
        }
    }
    unreachable!("u32 tails run out only after 4 billion clashes")
}

/// Unique identifier for `name` in the tree's name space.
fn unique_in(names: Names, used: &mut HashSet<Vec<u8>>, name: &str, dir: bool) -> Vec<u8> {
    match names {
        Names::RockRidge => unique_id(used, name, dir),
        Names::Joliet => joliet_unique(used, name),
    }
}

/// Sort key in the tree's name space (Joliet: UCS-2 code order).
fn key_in(names: Names, id: &[u8]) -> (Vec<u8>, Vec<u8>) {
    match names {
        Names::RockRidge => sort_key(id),
        Names::Joliet => (id.to_vec(), Vec::new()),
    }
}

/// Joliet limits identifiers to 64 UCS-2 characters.
const JOLIET_MAX: usize = 64;

/// Joliet identifier: the name in UCS-2, characters Joliet forbids (and
/// those outside UCS-2) as `_`, at most 64 of them. No `;1` version: every
/// reader shows the name as is.
pub fn joliet_name(name: &str) -> Vec<u16> {
    let mut units: Vec<u16> = name
        .chars()
        .map(|c| {
            let bad = c.is_control() || "*/:;?\\".contains(c) || (c as u32) > 0xFFFF;
            if bad {
                '_' as u16
            } else {
                c as u16
            }
        })
        .collect();
    units.truncate(JOLIET_MAX);
    units
}

fn ucs2_bytes(units: &[u16]) -> Vec<u8> {
    units.iter().flat_map(|u| u.to_be_bytes()).collect()
}

fn joliet_unique(used: &mut HashSet<Vec<u8>>, name: &str) -> Vec<u8> {
    let first = joliet_name(name);
    if used.insert(ucs2_bytes(&first)) {
        return ucs2_bytes(&first);
    }
    for n in 1u32.. {
        let tail: Vec<u16> = n.to_string().bytes().map(u16::from).collect();
        let mut c: Vec<u16> = first[..first.len().min(JOLIET_MAX - tail.len())].to_vec();
        c.extend(&tail);
        if used.insert(ucs2_bytes(&c)) {
            return ucs2_bytes(&c);
        }
    }
    unreachable!("u32 tails run out only after 4 billion clashes")
}

/// UCS-2 big-endian text field padded with UCS-2 spaces.
fn put_ucs2(field: &mut [u8], s: &str) {
    for pair in field.chunks_mut(2) {
        pair.copy_from_slice(&[0, b' '][..pair.len()]);
    }
    for (i, u) in s.encode_utf16().take(field.len() / 2).enumerate() {
        field[2 * i..2 * i + 2].copy_from_slice(&u.to_be_bytes());
    }
}

/// ECMA-119 9.3 ordering: name then extension, each padded with spaces;
/// all d-characters sort above the space, so plain tuple order matches.
fn sort_key(id: &[u8]) -> (Vec<u8>, Vec<u8>) {
    let id = id.split(|&c| c == b';').next().unwrap_or_default();
    match id.iter().position(|&c| c == b'.') {
        Some(i) => (id[..i].to_vec(), id[i + 1..].to_vec()),
        None => (id.to_vec(), Vec::new()),
    }
}

/// (year, month, day, hour, minute, second) in UTC of a Unix time.
pub fn civil(epoch: u64) -> (i64, u32, u32, u32, u32, u32) {
    let days = (epoch / 86400) as i64;
    let secs = epoch % 86400;
    // Howard Hinnant's days-to-civil.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (
        y,
        m,
        d,
        (secs / 3600) as u32,
        (secs / 60 % 60) as u32,
        (secs % 60) as u32,
    )
}

/// 7-byte directory record date (ECMA-119 9.1.5), UTC.
pub fn dir_datetime(epoch: u64) -> [u8; 7] {
    let (y, mo, d, h, mi, s) = civil(epoch);
    let y = (y - 1900).clamp(0, 255) as u8;
    [y, mo as u8, d as u8, h as u8, mi as u8, s as u8, 0]
}

/// 17-byte volume descriptor date (ECMA-119 8.4.26.1), UTC.
pub fn dec_datetime(epoch: u64) -> [u8; 17] {
    let (y, mo, d, h, mi, s) = civil(epoch);
    let text = format!(
        "{:04}{:02}{:02}{:02}{:02}{:02}00",
        y.clamp(0, 9999),
        mo,
        d,
        h,
        mi,
        s
    );
    let mut out = [0u8; 17];
    out[..16].copy_from_slice(text.as_bytes());
    out
}

fn dec_datetime_unset() -> [u8; 17] {
    let mut out = [b'0'; 17];
    out[16] = 0;
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn hexdump(b: &[u8]) -> String {
        b.chunks(16).map(hex::encode).collect::<Vec<_>>().join("\n")
    }

    #[test]
    fn both_endian_fields() {
        assert_eq!(both16(0x0102), [2, 1, 1, 2]);
        assert_eq!(both32(0x01020304), [4, 3, 2, 1, 1, 2, 3, 4]);
    }

    #[test]
    fn dates() {
        // 2023-11-14 22:13:20 UTC
        assert_eq!(civil(1_700_000_000), (2023, 11, 14, 22, 13, 20));
        assert_eq!(civil(0), (1970, 1, 1, 0, 0, 0));
        assert_eq!(civil(951_782_400), (2000, 2, 29, 0, 0, 0));
        assert_eq!(dir_datetime(1_700_000_000), [123, 11, 14, 22, 13, 20, 0]);
        assert_eq!(&dec_datetime(1_700_000_000)[..16], b"2023111422132000");
    }

    #[test]
    fn names() {
        assert_eq!(iso_name("initrd.img", false), "INITRD.IMG;1");
        assert_eq!(iso_name("undionly.kpxe", false), "UNDIONLY.KPXE;1");
        assert_eq!(iso_name("vmlinuz", false), "VMLINUZ.;1");
        assert_eq!(iso_name("manifest.json", false), "MANIFEST.JSON;1");
        assert_eq!(iso_name("a-b.c.d", false), "A_B_C.D;1");
        assert_eq!(iso_name("ipxe", true), "IPXE");
        assert_eq!(iso_name("x.y", true), "X_Y");
        let long = "a".repeat(40) + ".txt";
        assert_eq!(iso_name(&long, false).len(), 30 + 2);
        let mut used = HashSet::new();
        assert_eq!(unique_id(&mut used, "a-b", false), b"A_B.;1");
        assert_eq!(unique_id(&mut used, "a_b", false), b"A_B1.;1");
        assert_eq!(unique_id(&mut used, "A_B", false), b"A_B2.;1");
    }

    #[test]
    fn joliet_names() {
        let text = |u: Vec<u16>| String::from_utf16(&u).unwrap();
        assert_eq!(text(joliet_name("undionly.kpxe")), "undionly.kpxe");
        assert_eq!(text(joliet_name("a:b;c*d")), "a_b_c_d");
        assert_eq!(joliet_name(&"x".repeat(100)).len(), 64);
        let mut used = HashSet::new();
        let long = "y".repeat(70);
        assert_eq!(joliet_unique(&mut used, &long).len(), 128);
        let second = joliet_unique(&mut used, &(long.clone() + "z"));
        assert_eq!(
            text(
                second
                    .chunks(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect()
            ),
            "y".repeat(63) + "1"
        );
        let mut field = [0u8; 8];
        put_ucs2(&mut field, "AB");
        assert_eq!(field, [0, b'A', 0, b'B', 0, b' ', 0, b' ']);
    }

    #[test]
    fn directory_record_bytes() {
        let su = px(0o100644, 1);
        let r = record(b"VMLINUZ.;1", 0x1234, 1000, false, 1_700_000_000, &su);
        // 33 + 10 + 1 pad + 36 = 80
        expect![[r#"
            50003412000000001234e8030000000003e87b0b0e160d1400000000010000010a
            564d4c494e555a2e3b310050582401a4810000000081a4010000000000000100
            000000000000000000000000000000
        "#]]
        .assert_eq(
            &(hex::encode(&r[..33])
                + "\n"
                + &hex::encode(&r[33..65])
                + "\n"
                + &hex::encode(&r[65..])
                + "\n"),
        );
        assert_eq!(r.len(), 80);
    }

    #[test]
    fn path_table_and_order() {
        let files = [
            InputFile {
                path: "vmlinuz".into(),
                size: 10,
                mode: 0o644,
            },
            InputFile {
                path: "ipxe/undionly.kpxe".into(),
                size: 3000,
                mode: 0o644,
            },
            InputFile {
                path: "b/c/d.txt".into(),
                size: 1,
                mode: 0o644,
            },
            InputFile {
                path: "a/z".into(),
                size: 0,
                mode: 0o644,
            },
        ];
        let tree = Tree::build(&files).unwrap();
        let layout = tree.layout(None, 19, 4096).unwrap();
        let lt = tree.path_table(&layout.dir_lba, false);
        let mt = tree.path_table(&layout.dir_lba, true);
        expect![[r#"
            01001600000001000000010017000000
            01004100010018000000010042000400
            1900000001004950584501001a000000
            03004300
        "#]]
        .assert_eq(&(hexdump(&lt) + "\n"));
        assert_eq!(mt.len(), lt.len());
        assert_eq!(&mt[2..6], &0x16u32.to_be_bytes());
        expect![[r#"
            [
                (
                    "a/z",
                    27,
                    0,
                ),
                (
                    "b/c/d.txt",
                    27,
                    1,
                ),
                (
                    "ipxe/undionly.kpxe",
                    28,
                    3000,
                ),
                (
                    "vmlinuz",
                    30,
                    10,
                ),
            ]
        "#]]
        .assert_debug_eq(&layout.files_in_order());
        assert_eq!(layout.esp_lba, 31);
        assert_eq!(layout.total_blocks, 31 + 2 + 9);
    }

    #[test]
    fn bad_paths_are_refused() {
        let one = |p: &str| {
            Tree::build(&[InputFile {
                path: p.into(),
                size: 1,
                mode: 0o644,
            }])
            .unwrap_err()
            .to_string()
        };
        assert_eq!(
            one("a//b"),
            "file path \"a//b\" is not a clean relative path"
        );
        assert_eq!(
            one("a/../b"),
            "file path \"a/../b\" is not a clean relative path"
        );
        assert!(one("1/2/3/4/5/6/7/8/9").contains("deeper than the 8 directory levels"));
        let name = "n".repeat(200);
        assert!(one(&name).contains("too long"));
        let dup = Tree::build(&[
            InputFile {
                path: "a".into(),
                size: 1,
                mode: 0o644,
            },
            InputFile {
                path: "a/b".into(),
                size: 1,
                mode: 0o644,
            },
        ]);
        assert!(matches!(dup, Err(IsoError::DuplicatePath(_))));
    }

    #[test]
    fn a_system_layer_over_4_gib_does_not_fit() {
        let layer = |size: u64| {
            Tree::build(&[InputFile {
                path: "system.squashfs".into(),
                size,
                mode: 0o644,
            }])
        };
        assert!(layer((1 << 32) - 1).is_ok());
        assert_eq!(
            layer(5 << 30).unwrap_err().to_string(),
            "file \"system.squashfs\" is 5368709120 bytes; ISO 9660 files must be under 4 GiB"
        );
    }

    #[test]
    fn many_records_do_not_cross_blocks() {
        let files: Vec<InputFile> = (0..100)
            .map(|i| InputFile {
                path: format!("dir/file-number-{i:03}.bin"),
                size: 1,
                mode: 0o644,
            })
            .collect();
        let tree = Tree::build(&files).unwrap();
        let d = tree.dir_extent_size(1);
        assert!(
            d > 2048 * 3,
            "100 records of ~100 bytes take several blocks: {d}"
        );
        let recs = tree.dir_records(1, None, 0);
        let packed = pack(&recs);
        // Walk the extent like a reader does: a zero length byte means "next block".
        let mut off = 0;
        let mut seen = 0;
        while off < packed.len() {
            let len = packed[off] as usize;
            if len == 0 {
                off = (off / 2048 + 1) * 2048;
                continue;
            }
            assert_eq!(
                off / 2048,
                (off + len - 1) / 2048,
                "record at {off} crosses a block"
            );
            seen += 1;
            off += len;
        }
        assert_eq!(seen, 102);
    }
}
