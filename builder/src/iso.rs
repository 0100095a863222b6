//! Hybrid ISO writer: one image that boots as a CD and as a USB disk, under
//! BIOS and UEFI, written in Rust without external tools.
//!
//! The caller hands over a [`BootMedia`] (the files of the image directory, the
//! boot loader binaries from Debian and the boot entries) and a seekable
//! output; [`write_hybrid_iso`] writes this layout (2048-byte blocks):
//!
//! ```text
//! block 0-15   system area: hybrid MBR (isohdpfx.bin, protective 0xEE entry)
//!              + primary GPT (512-byte LBA 1..33) with the ESP as partition 1
//! block 16     primary volume descriptor (ISO 9660, Rock Ridge RRIP_1991A)
//! block 17     El Torito boot record (El Torito wants it exactly here)
//! block 18     Joliet supplementary volume descriptor (UCS-2 level 3)
//! block 19     descriptor set terminator
//! block 20     Rock Ridge continuation area (the ER entry)
//! ...          path tables (L, M) and directories of the Rock Ridge tree,
//!              then of the Joliet tree, file data (shared) in sorted path
//!              order (with /isolinux/: boot.cat, boot.msg, isolinux.bin,
//!              isolinux.cfg, ldlinux.c32, added by the writer)
//! ...          the FAT EFI system partition image (systemd-boot, loader
//!              entries, kernel, initrd), after the files, inside the volume
//! last 9       backup GPT (entries + header in the last 512-byte sector)
//! ```
//!
//! The El Torito catalog has a BIOS no-emulation entry (ISOLINUX, boot-info
//! table patched) and a UEFI section (platform 0xEF) pointing at the ESP. The
//! ESP is bigger than El Torito's 16-bit count of 512-byte sectors can say
//! once it holds a 20-30 MB initrd, so the count is clamped to 65535: EDK2
//! (OVMF and most PC firmware) reads a no-emulation count in units of the
//! medium's 2048-byte blocks, which covers an ESP of up to 128 MiB, and the
//! FAT boot sector says the real size. USB boots don't use the catalog: BIOS
//! runs the MBR code that loads isolinux.bin through the isohybrid pointer,
//! UEFI finds the ESP through the GPT. See `ARCHITECTURE.md`.
//!
//! Submodules hold the pure layout code: [`iso9660`] (names, directory
//! records, path tables, volume descriptors, Rock Ridge), [`eltorito`] (boot
//! record, catalog, boot-info table), [`partition`] (MBR, GPT),
//! [`esp`] (FAT image and systemd-boot config), [`isolinux`] (its config).
//! This file holds the API and the thin writing shell.
//!
//! Reproducibility: every timestamp is `epoch`; the GPT GUIDs and the MBR disk
//! signature derive from a SHA-256 over the written volume; the FAT volume
//! serial derives from a SHA-256 over the ESP's inputs; files are laid out
//! sorted by path whatever order they are given in.
//!
//! Verified (tests in `builder/tests/iso*.rs`): xorriso, isoinfo, isovfy,
//! fdisk and mtools read back what was meant; qemu boots both entries from
//! CD and USB under SeaBIOS and OVMF with an ESP over 32 MiB, and the guest
//! kernel mounts the CD and sees the Rock Ridge names. Not covered: Secure
//! Boot (systemd-boot from Debian is unsigned, and no shim is added).

pub mod eltorito;
pub mod esp;
pub mod iso9660;
pub mod isolinux;
pub mod partition;

use std::io::{Seek, SeekFrom, Write};

use sha2::{Digest, Sha256};

/// ISO 9660 logical block size.
pub const BLOCK: u64 = 2048;

/// One file of the ISO 9660 tree.
#[derive(Debug, Clone)]
pub struct IsoFile<'a> {
    /// Path inside the image, `/`-separated, no leading `/` needed
    /// (e.g. `ipxe/undionly.kpxe`); parent directories are made implicitly.
    /// The name appears as-is through Rock Ridge and mangled to an ISO 9660
    /// level 2 name (`UNDIONLY.KPXE;1`) for readers without it.
    pub path: String,
    /// The contents.
    pub data: &'a [u8],
    /// Permission bits shown through Rock Ridge (e.g. `0o644`, `0o755`).
    pub mode: u32,
}

impl<'a> IsoFile<'a> {
    /// A regular file with mode 0644.
    pub fn new(path: impl Into<String>, data: &'a [u8]) -> Self {
        IsoFile {
            path: path.into(),
            data,
            mode: 0o644,
        }
    }
}

/// One boot menu entry; the same entries appear in ISOLINUX (BIOS) and
/// systemd-boot (UEFI). The first entry is the default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BootEntry {
    /// Short identifier: the ISOLINUX label (typed at its `boot:` prompt) and
    /// the systemd-boot entry file name (`loader/entries/<label>.conf`).
    /// Lowercase letters, digits, `-` and `_`.
    pub label: String,
    /// Human title shown in the menus, e.g. "omcluster compute node".
    pub title: String,
    /// Kernel command line, e.g. `console=ttyS0 om.role=head`.
    pub cmdline: String,
}

/// Everything the hybrid ISO is made of.
#[derive(Debug, Clone)]
pub struct BootMedia<'a> {
    /// ISO 9660 volume identifier: up to 32 of `A-Z 0-9 _` (lowercase is
    /// uppercased); also the FAT volume label (first 11 characters).
    pub volume_id: String,
    /// SOURCE_DATE_EPOCH: every timestamp in the image.
    pub epoch: u64,
    /// The ISO 9660 tree: the image directory's layout at the root
    /// (`vmlinuz`, `initrd.img`, `ipxe/...`, `manifest.json`). The writer adds
    /// `isolinux/` itself; a file there is an error.
    pub files: Vec<IsoFile<'a>>,
    /// Path in `files` of the kernel (usually `vmlinuz`); ISOLINUX loads it
    /// from ISO 9660 and it is copied into the ESP for systemd-boot.
    pub kernel: String,
    /// Path in `files` of the initramfs (usually `initrd.img`), like `kernel`.
    pub initrd: String,
    /// `/usr/lib/ISOLINUX/isolinux.bin` (Debian `isolinux`).
    pub isolinux_bin: &'a [u8],
    /// `/usr/lib/syslinux/modules/bios/ldlinux.c32` (Debian `syslinux-common`).
    pub ldlinux_c32: &'a [u8],
    /// `/usr/lib/ISOLINUX/isohdpfx.bin` (Debian `isolinux`): hybrid MBR code.
    pub isohdpfx: &'a [u8],
    /// `/usr/lib/systemd/boot/efi/systemd-bootx64.efi` (Debian `systemd-boot-efi`).
    pub systemd_boot_efi: &'a [u8],
    /// Boot entries, default first.
    pub entries: Vec<BootEntry>,
}

/// Where things went: for logs, the manifest and tests.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsoReport {
    /// Image size in bytes (a multiple of 2048).
    pub size: u64,
    /// LBA (2048-byte blocks) of the El Torito boot catalog.
    pub catalog_lba: u32,
    /// LBA of isolinux.bin.
    pub isolinux_lba: u32,
    /// LBA of the ESP image.
    pub esp_lba: u32,
    /// Size of the ESP image in bytes.
    pub esp_size: u64,
    /// El Torito sector count written for the UEFI entry.
    pub esp_sector_count: u16,
    /// GPT disk GUID, canonical text form.
    pub disk_guid: String,
    /// GPT unique GUID of the ESP partition.
    pub esp_guid: String,
    /// MBR disk signature (bytes 440-443).
    pub mbr_signature: u32,
    /// Every file of the ISO 9660 tree: (path, LBA, size), in layout order.
    pub files: Vec<(String, u32, u64)>,
}

/// What can go wrong writing the ISO.
#[derive(Debug, thiserror::Error)]
pub enum IsoError {
    /// The volume identifier is empty, too long or has a character outside `A-Z 0-9 _`.
    #[error("volume id {0:?} is not 1-32 characters of A-Z, 0-9 and _")]
    VolumeId(String),
    /// A file path is empty, absolute in a strange way, or has an empty, `.` or `..` component.
    #[error("file path {0:?} is not a clean relative path")]
    BadPath(String),
    /// Two files (or a file and a directory) have the same path.
    #[error("path {0:?} is given twice (or is both a file and a directory)")]
    DuplicatePath(String),
    /// A file name is too long to fit a directory record with its Rock Ridge name.
    #[error("file name {0:?} is too long for an ISO 9660 directory record")]
    NameTooLong(String),
    /// A file is 4 GiB or larger (ISO 9660 extents are 32-bit).
    #[error("file {path:?} is {size} bytes; ISO 9660 files must be under 4 GiB")]
    FileTooLarge {
        /// The file.
        path: String,
        /// Its size.
        size: u64,
    },
    /// The directory tree is deeper than ISO 9660 allows (8 levels).
    #[error("path {0:?} is nested deeper than the 8 directory levels ISO 9660 allows")]
    TooDeep(String),
    /// The image would exceed the 32-bit block addresses of ISO 9660.
    #[error("the image would be {0} blocks, more than ISO 9660 can address")]
    ImageTooLarge(u64),
    /// `kernel` or `initrd` names no file in `files`.
    #[error("{what} {path:?} is not among the image files")]
    MissingBootFile {
        /// "kernel" or "initrd".
        what: &'static str,
        /// The path asked for.
        path: String,
    },
    /// A file was put under `isolinux/`, which the writer owns.
    #[error("file {0:?} is inside isolinux/, which the ISO writer fills itself")]
    ReservedPath(String),
    /// No boot entries were given.
    #[error("no boot entries given")]
    NoEntries,
    /// A boot entry label is empty, repeated or has characters outside `a-z 0-9 - _`.
    #[error("boot entry label {0:?} is empty, repeated, or not made of a-z, 0-9, - and _")]
    BadLabel(String),
    /// A boot entry title or command line has a newline or other control character.
    #[error("boot entry {0:?} has a control character in its title or command line")]
    BadEntryText(String),
    /// isolinux.bin is too small or lacks the isohybrid signature at offset 64.
    #[error("isolinux.bin ({0} bytes) is not an isohybrid-capable ISOLINUX (signature 0x7078c0fb missing at offset 64)")]
    BadIsolinux(usize),
    /// isohdpfx.bin is not the 432-byte hybrid MBR code.
    #[error("isohdpfx.bin is {0} bytes, expected the 432-byte hybrid MBR code")]
    BadIsohdpfx(usize),
    /// A boot loader binary is empty.
    #[error("{0} is empty")]
    EmptyLoader(&'static str),
    /// Making the FAT EFI system partition failed.
    #[error("building the EFI system partition: {0}")]
    Esp(#[source] std::io::Error),
    /// Writing the output failed.
    #[error("writing the ISO image: {0}")]
    Write(#[source] std::io::Error),
}

/// Directory in the ISO tree that the writer fills with ISOLINUX.
pub const ISOLINUX_DIR: &str = "isolinux";

/// Writes the hybrid ISO described by `media` to `out` (from its start).
pub fn write_hybrid_iso<W: Write + Seek>(
    media: &BootMedia,
    mut out: W,
) -> Result<IsoReport, IsoError> {
    validate(media)?;
    let kernel = find_file(media, &media.kernel, "kernel")?;
    let initrd = find_file(media, &media.initrd, "initrd")?;

    let esp_image = esp::build(&esp::EspInput {
        volume_label: &media.volume_id,
        epoch: media.epoch,
        systemd_boot_efi: media.systemd_boot_efi,
        kernel,
        initrd,
        entries: &media.entries,
    })
    .map_err(IsoError::Esp)?;

    let cfg = isolinux::config(&media.entries, &media.kernel, &media.initrd);
    let isolinux_bin_path = format!("{ISOLINUX_DIR}/isolinux.bin");
    let catalog_path = format!("{ISOLINUX_DIR}/boot.cat");
    let mut inputs: Vec<iso9660::InputFile> = media
        .files
        .iter()
        .map(|f| iso9660::InputFile {
            path: f.path.clone(),
            size: f.data.len() as u64,
            mode: f.mode,
        })
        .collect();
    let message = isolinux::message(&media.entries);
    let boot_files: [(&str, u64); 5] = [
        (&catalog_path, BLOCK),
        (isolinux::MESSAGE, message.len() as u64),
        (&isolinux_bin_path, media.isolinux_bin.len() as u64),
        ("isolinux/isolinux.cfg", cfg.len() as u64),
        ("isolinux/ldlinux.c32", media.ldlinux_c32.len() as u64),
    ];
    for (path, size) in boot_files {
        inputs.push(iso9660::InputFile {
            path: path.to_string(),
            size,
            mode: 0o444,
        });
    }

    let tree = iso9660::Tree::build(&inputs)?;
    let joliet = iso9660::Tree::build_with(&inputs, iso9660::Names::Joliet)?;
    let layout = tree.layout(Some(&joliet), FIRST_FREE_LBA, esp_image.len() as u64)?;

    let lba_of = |path: &str| -> u32 {
        layout
            .file_lba(path)
            .expect("the writer added this file itself")
    };
    let catalog_lba = lba_of(&catalog_path);
    let isolinux_lba = lba_of(&isolinux_bin_path);
    let esp_sector_count = eltorito::efi_sector_count(esp_image.len() as u64);
    let catalog = eltorito::boot_catalog(&eltorito::Catalog {
        bios_lba: isolinux_lba,
        bios_sector_count: 4,
        efi_lba: layout.esp_lba,
        efi_sector_count: esp_sector_count,
    });
    let mut isolinux_bin = media.isolinux_bin.to_vec();
    eltorito::patch_boot_info_table(&mut isolinux_bin, 16, isolinux_lba);

    // File contents by tree path.
    let mut contents: std::collections::HashMap<&str, &[u8]> = media
        .files
        .iter()
        .map(|f| (normalise(&f.path), f.data))
        .collect();
    contents.insert(&catalog_path, &catalog);
    contents.insert(&isolinux_bin_path, &isolinux_bin);
    contents.insert("isolinux/isolinux.cfg", cfg.as_bytes());
    contents.insert(isolinux::MESSAGE, message.as_bytes());
    contents.insert("isolinux/ldlinux.c32", media.ldlinux_c32);

    let volume = iso9660::VolumeInfo {
        volume_id: media.volume_id.to_ascii_uppercase(),
        epoch: media.epoch,
    };
    let total_blocks = layout.total_blocks;

    // Stream the volume from block 16 on, hashing it for the GUIDs.
    let mut w = HashingWriter {
        inner: &mut out,
        hash: Sha256::new(),
        pos: 0,
    };
    w.seek_start()?;
    w.write_zeros(16 * BLOCK)?;
    w.hash = Sha256::new();
    w.put(&tree.primary_volume_descriptor(&layout, &volume))?;
    w.put(&eltorito::boot_record(catalog_lba))?;
    w.put(&joliet.primary_volume_descriptor(&layout, &volume))?;
    w.put(&iso9660::terminator())?;
    let mut metadata = tree.metadata_blocks(&layout, &volume);
    metadata.extend(joliet.metadata_blocks(&layout, &volume));
    for (lba, block) in metadata {
        w.pad_to(u64::from(lba) * BLOCK)?;
        w.put(&block)?;
    }
    let mut files_report = Vec::new();
    for (path, lba, size) in layout.files_in_order() {
        let data = contents.get(path.as_str()).copied().unwrap_or_default();
        debug_assert_eq!(data.len() as u64, size);
        w.pad_to(u64::from(lba) * BLOCK)?;
        w.put(data)?;
        files_report.push((path.clone(), lba, size));
    }
    w.pad_to(u64::from(layout.esp_lba) * BLOCK)?;
    w.put(&esp_image)?;
    let gpt_tail = u64::from(total_blocks) * BLOCK - partition::GPT_TAIL_BYTES;
    w.pad_to(gpt_tail)?;
    let seed: [u8; 32] = w.hash.clone().finalize().into();

    let disk = partition::Disk::new(
        u64::from(total_blocks) * BLOCK,
        u64::from(layout.esp_lba) * BLOCK,
        esp_image.len() as u64,
        &seed,
    );
    w.put(&disk.backup_gpt())?;
    let system_area = disk.system_area(media.isohdpfx, isolinux_lba);
    w.seek_start()?;
    w.put(&system_area)?;
    out.flush().map_err(IsoError::Write)?;

    tracing::info!(
        size = u64::from(total_blocks) * BLOCK,
        isolinux_lba,
        esp_lba = layout.esp_lba,
        esp_size = esp_image.len(),
        "wrote hybrid iso"
    );
    Ok(IsoReport {
        size: u64::from(total_blocks) * BLOCK,
        catalog_lba,
        isolinux_lba,
        esp_lba: layout.esp_lba,
        esp_size: esp_image.len() as u64,
        esp_sector_count,
        disk_guid: partition::guid_text(&disk.disk_guid),
        esp_guid: partition::guid_text(&disk.esp_guid),
        mbr_signature: disk.mbr_signature,
        files: files_report,
    })
}

/// Blocks 16-19 are the volume descriptors; layout starts after them.
const FIRST_FREE_LBA: u32 = 20;

fn normalise(path: &str) -> &str {
    path.trim_start_matches('/')
}

fn find_file<'a>(
    media: &BootMedia<'a>,
    path: &str,
    what: &'static str,
) -> Result<&'a [u8], IsoError> {
    media
        .files
        .iter()
        .find(|f| normalise(&f.path) == normalise(path))
        .map(|f| f.data)
        .ok_or_else(|| IsoError::MissingBootFile {
            what,
            path: path.to_string(),
        })
}

fn validate(media: &BootMedia) -> Result<(), IsoError> {
    let vid = &media.volume_id;
    if vid.is_empty()
        || vid.len() > 32
        || !vid.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
    {
        return Err(IsoError::VolumeId(vid.clone()));
    }
    for f in &media.files {
        let p = normalise(&f.path);
        if p == ISOLINUX_DIR || p.starts_with(&format!("{ISOLINUX_DIR}/")) {
            return Err(IsoError::ReservedPath(f.path.clone()));
        }
    }
    if media.entries.is_empty() {
        return Err(IsoError::NoEntries);
    }
    let mut seen = std::collections::HashSet::new();
    for e in &media.entries {
        let ok = !e.label.is_empty()
            && e.label
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok || !seen.insert(e.label.as_str()) {
            return Err(IsoError::BadLabel(e.label.clone()));
        }
        if e.title
            .chars()
            .chain(e.cmdline.chars())
            .any(char::is_control)
        {
            return Err(IsoError::BadEntryText(e.label.clone()));
        }
    }
    if media.isolinux_bin.len() < 2048
        || media.isolinux_bin[64..68] != eltorito::ISOHYBRID_MAGIC.to_le_bytes()
    {
        return Err(IsoError::BadIsolinux(media.isolinux_bin.len()));
    }
    if media.isohdpfx.len() != 432 {
        return Err(IsoError::BadIsohdpfx(media.isohdpfx.len()));
    }
    if media.ldlinux_c32.is_empty() {
        return Err(IsoError::EmptyLoader("ldlinux.c32"));
    }
    if media.systemd_boot_efi.is_empty() {
        return Err(IsoError::EmptyLoader("systemd-bootx64.efi"));
    }
    Ok(())
}

/// Sequential writer that hashes what it writes and tracks the position.
struct HashingWriter<'w, W: Write + Seek> {
    inner: &'w mut W,
    hash: Sha256,
    pos: u64,
}

impl<W: Write + Seek> HashingWriter<'_, W> {
    fn seek_start(&mut self) -> Result<(), IsoError> {
        self.inner
            .seek(SeekFrom::Start(0))
            .map_err(IsoError::Write)?;
        self.pos = 0;
        Ok(())
    }
    fn put(&mut self, data: &[u8]) -> Result<(), IsoError> {
        self.inner.write_all(data).map_err(IsoError::Write)?;
        self.hash.update(data);
        self.pos += data.len() as u64;
        Ok(())
    }
    fn write_zeros(&mut self, n: u64) -> Result<(), IsoError> {
        let zeros = [0u8; 64 * 1024];
        let mut left = n;
        while left > 0 {
            let k = left.min(zeros.len() as u64) as usize;
            self.put(&zeros[..k])?;
            left -= k as u64;
        }
        Ok(())
    }
    fn pad_to(&mut self, offset: u64) -> Result<(), IsoError> {
        debug_assert!(
            offset >= self.pos,
            "layout goes backwards: {offset} < {}",
            self.pos
        );
        self.write_zeros(offset.saturating_sub(self.pos))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    fn fake_isolinux() -> Vec<u8> {
        let mut b = vec![0x90u8; 4000];
        b[64..68].copy_from_slice(&eltorito::ISOHYBRID_MAGIC.to_le_bytes());
        b
    }

    fn le32(b: &[u8], at: usize) -> u32 {
        u32::from_le_bytes(b[at..at + 4].try_into().unwrap())
    }

    #[test]
    fn the_pieces_point_at_each_other() {
        let isolinux = fake_isolinux();
        let kernel = vec![1u8; 5000];
        let initrd = vec![2u8; 7000];
        let media = BootMedia {
            volume_id: "omtest".into(),
            epoch: 1_700_000_000,
            files: vec![
                IsoFile::new("/vmlinuz", &kernel),
                IsoFile::new("initrd.img", &initrd),
            ],
            kernel: "vmlinuz".into(),
            initrd: "/initrd.img".into(),
            isolinux_bin: &isolinux,
            ldlinux_c32: b"ldlinux",
            isohdpfx: &[0xAB; 432],
            systemd_boot_efi: b"MZ",
            entries: vec![BootEntry {
                label: "compute".into(),
                title: "c".into(),
                cmdline: "quiet".into(),
            }],
        };
        let mut out = Cursor::new(Vec::new());
        let r = write_hybrid_iso(&media, &mut out).unwrap();
        let img = out.into_inner();
        assert_eq!(img.len() as u64, r.size);
        let block = |lba: u32| &img[lba as usize * 2048..(lba as usize + 1) * 2048];

        // PVD: volume id uppercased, volume size both-endian = the whole image.
        let pvd = block(16);
        assert_eq!(&pvd[1..6], b"CD001");
        assert_eq!(&pvd[40..48], b"OMTEST  ");
        assert_eq!(&pvd[80..88], &iso9660::both32((r.size / 2048) as u32));
        // Boot record -> catalog -> isolinux and ESP.
        assert_eq!(le32(block(17), 0x47), r.catalog_lba);
        assert_eq!(&block(18)[..6], b"\x02CD001");
        assert_eq!(&block(18)[88..91], b"%/E");
        assert_eq!(block(19)[0], 255);
        let cat = block(r.catalog_lba);
        assert_eq!(le32(cat, 32 + 8), r.isolinux_lba);
        assert_eq!(le32(cat, 96 + 8), r.esp_lba);
        assert_eq!(
            u16::from_le_bytes([cat[96 + 6], cat[96 + 7]]),
            r.esp_sector_count
        );
        // Boot-info table inside the written isolinux.bin.
        let iso_bin = &img[r.isolinux_lba as usize * 2048..][..isolinux.len()];
        assert_eq!(le32(iso_bin, 8), 16);
        assert_eq!(le32(iso_bin, 12), r.isolinux_lba);
        assert_eq!(le32(iso_bin, 16), isolinux.len() as u32);
        // MBR: isohybrid pointer, signature, boot code kept.
        assert_eq!(&img[..432], &[0xAB; 432][..]);
        assert_eq!(le32(&img, 432), r.isolinux_lba * 4);
        assert_eq!(le32(&img, 440), r.mbr_signature);
        assert_eq!(&img[510..512], &[0x55, 0xAA]);
        // The ESP is a FAT volume with the kernel in it.
        let esp = &img[r.esp_lba as usize * 2048..][..r.esp_size as usize];
        assert_eq!(&esp[510..512], &[0x55, 0xAA]);
        let fs =
            fatfs::FileSystem::new(Cursor::new(esp.to_vec()), fatfs::FsOptions::new()).unwrap();
        let mut k = Vec::new();
        std::io::Read::read_to_end(&mut fs.root_dir().open_file("vmlinuz").unwrap(), &mut k)
            .unwrap();
        assert_eq!(k, kernel);
        // Files in the report are where the report says.
        for (path, lba, size) in &r.files {
            if path == "initrd.img" {
                assert_eq!(&img[*lba as usize * 2048..][..*size as usize], &initrd[..]);
            }
        }
        // GPT primary header at byte 512.
        assert_eq!(&img[512..520], b"EFI PART");
        assert_eq!(&img[img.len() - 512..img.len() - 504], b"EFI PART");
    }
}
