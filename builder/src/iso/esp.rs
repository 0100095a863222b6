//! The EFI system partition image: a FAT file system made with `fatfs`
//! holding systemd-boot as the removable-media loader, its configuration and
//! one entry per boot entry, and the kernel and initrd (systemd-boot reads
//! only FAT, so they must be in here).
//!
//! ```text
//! /EFI/BOOT/BOOTX64.EFI        systemd-boot
//! /loader/loader.conf          default entry, timeout
//! /loader/entries/<label>.conf one per BootEntry
//! /vmlinuz  /initrd.img
//! ```
//!
//! Reproducible: every FAT timestamp is the epoch (clamped to FAT's 1980-2107
//! range), the volume serial is the first 4 bytes of a SHA-256 over the inputs.

use std::io::{self, Cursor, Write};

use sha2::{Digest, Sha256};

use super::BootEntry;

/// What goes into the ESP.
#[derive(Debug, Clone)]
pub struct EspInput<'a> {
    /// The ISO volume id; its first 11 characters become the FAT label.
    pub volume_label: &'a str,
    /// Timestamp for every entry.
    pub epoch: u64,
    /// systemd-bootx64.efi.
    pub systemd_boot_efi: &'a [u8],
    /// The kernel.
    pub kernel: &'a [u8],
    /// The initramfs.
    pub initrd: &'a [u8],
    /// Boot entries, default first.
    pub entries: &'a [BootEntry],
}

/// Kernel path inside the ESP (the image directory's name for it).
pub const KERNEL: &str = contracts::image::VMLINUZ;
/// Initrd path inside the ESP (the image directory's name for it).
pub const INITRD: &str = contracts::image::INITRD;

/// `loader/loader.conf`. The command line editor (`e` on an entry) is on:
/// it is how a head gets `om.ip=` or `om.pxe=` on UEFI, as typing after the
/// label does at ISOLINUX's prompt; the medium holds no secret to protect.
pub fn loader_conf(entries: &[BootEntry]) -> String {
    let default = entries.first().map_or("", |e| e.label.as_str());
    format!("default {default}.conf\ntimeout 3\neditor yes\n")
}

/// `loader/entries/<label>.conf` for the entry at `index`.
pub fn entry_conf(index: usize, e: &BootEntry) -> String {
    format!(
        "title {}\nsort-key omcluster-{index:02}\nlinux /{KERNEL}\ninitrd /{INITRD}\noptions {}\n",
        e.title, e.cmdline
    )
}

/// Every file of the ESP, in the order they are written.
fn contents<'a>(input: &EspInput<'a>) -> Vec<(String, std::borrow::Cow<'a, [u8]>)> {
    let mut files: Vec<(String, std::borrow::Cow<'a, [u8]>)> = vec![
        ("EFI/BOOT/BOOTX64.EFI".into(), input.systemd_boot_efi.into()),
        (
            "loader/loader.conf".into(),
            loader_conf(input.entries).into_bytes().into(),
        ),
    ];
    for (i, e) in input.entries.iter().enumerate() {
        files.push((
            format!("loader/entries/{}.conf", e.label),
            entry_conf(i, e).into_bytes().into(),
        ));
    }
    files.push((KERNEL.into(), input.kernel.into()));
    files.push((INITRD.into(), input.initrd.into()));
    files
}

/// Builds the ESP image.
pub fn build(input: &EspInput) -> io::Result<Vec<u8>> {
    let files = contents(input);
    let mut h = Sha256::new();
    h.update(input.volume_label.as_bytes());
    h.update(input.epoch.to_le_bytes());
    for (path, data) in &files {
        h.update((path.len() as u64).to_le_bytes());
        h.update(path.as_bytes());
        h.update((data.len() as u64).to_le_bytes());
        h.update(data);
    }
    let digest = h.finalize();
    let serial = u32::from_le_bytes([digest[0], digest[1], digest[2], digest[3]]);

    let payload: u64 = files
        .iter()
        .map(|(_, d)| (d.len() as u64).div_ceil(4096) * 4096)
        .sum();
    // Room for directories, the FATs and the reserved area, in whole MiB.
    let mut size = (payload + payload / 32 + (1 << 20)).div_ceil(1 << 20) << 20;
    loop {
        match try_build(input, &files, serial, size) {
            Ok(img) => return Ok(img),
            // A bigger cluster size than the estimate assumed can run out
            // of room: grow and try again.
            Err(e) if size < (4u64 << 30) && is_full(&e) => size *= 2,
            Err(e) => return Err(e),
        }
    }
}

/// fatfs says "No space left on device" when files don't fit, and refuses
/// sizes whose cluster count fits no FAT type; both are cured by growing.
fn is_full(e: &io::Error) -> bool {
    let text = e.to_string();
    e.kind() == io::ErrorKind::Other
        && (text.contains("No space") || text.contains("unfortunate disk size"))
        || e.kind() == io::ErrorKind::WriteZero
        || e.kind() == io::ErrorKind::UnexpectedEof
}

fn label(volume: &str) -> [u8; 11] {
    let mut l = [b' '; 11];
    for (i, b) in volume.bytes().take(11).enumerate() {
        l[i] = b.to_ascii_uppercase();
    }
    l
}

fn try_build(
    input: &EspInput,
    files: &[(String, std::borrow::Cow<[u8]>)],
    serial: u32,
    size: u64,
) -> io::Result<Vec<u8>> {
    let mut img = vec![0u8; size as usize];
    fatfs::format_volume(
        Cursor::new(&mut img[..]),
        fatfs::FormatVolumeOptions::new()
            .volume_id(serial)
            .volume_label(label(input.volume_label)),
    )?;
    {
        let time: &'static EpochTime = Box::leak(Box::new(EpochTime::new(input.epoch)));
        let fs = fatfs::FileSystem::new(
            Cursor::new(&mut img[..]),
            fatfs::FsOptions::new().time_provider(time),
        )?;
        for (path, data) in files {
            let root = fs.root_dir();
            let mut dir = root;
            let parts: Vec<&str> = path.split('/').collect();
            let (name, parents) = parts.split_last().expect("paths are non-empty");
            for p in parents {
                dir = match dir.open_dir(p) {
                    Ok(d) => d,
                    Err(_) => dir.create_dir(p)?,
                };
            }
            let mut f = dir.create_file(name)?;
            f.truncate()?;
            f.write_all(data)?;
            f.flush()?;
        }
        fs.unmount()?;
    }
    Ok(img)
}

/// fatfs time provider that always answers the build epoch.
#[derive(Debug)]
struct EpochTime(fatfs::DateTime);

impl EpochTime {
    fn new(epoch: u64) -> EpochTime {
        // FAT dates run from 1980 to 2107.
        let clamped = epoch.clamp(315_532_800, 4_354_819_199);
        let (y, mo, d, h, mi, s) = super::iso9660::civil(clamped);
        EpochTime(fatfs::DateTime {
            date: fatfs::Date {
                year: y as u16,
                month: mo as u16,
                day: d as u16,
            },
            time: fatfs::Time {
                hour: h as u16,
                min: mi as u16,
                sec: s as u16,
                millis: 0,
            },
        })
    }
}

impl fatfs::TimeProvider for EpochTime {
    fn get_current_date(&self) -> fatfs::Date {
        self.0.date
    }
    fn get_current_date_time(&self) -> fatfs::DateTime {
        self.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Seek};

    fn entries() -> Vec<BootEntry> {
        vec![
            BootEntry {
                label: "compute".into(),
                title: "compute node".into(),
                cmdline: "console=ttyS0".into(),
            },
            BootEntry {
                label: "head".into(),
                title: "head node".into(),
                cmdline: "console=ttyS0 om.role=head".into(),
            },
        ]
    }

    #[test]
    fn esp_reads_back_with_fatfs() {
        let e = entries();
        let kernel = vec![7u8; 300_000];
        let input = EspInput {
            volume_label: "OMCLUSTER",
            epoch: 1_700_000_000,
            systemd_boot_efi: b"MZ fake",
            kernel: &kernel,
            initrd: b"initrd",
            entries: &e,
        };
        let img = build(&input).unwrap();
        assert_eq!(img.len() % (1 << 20), 0);
        assert_eq!(build(&input).unwrap(), img, "two builds are identical");
        let fs = fatfs::FileSystem::new(Cursor::new(img), fatfs::FsOptions::new()).unwrap();
        let mut s = String::new();
        fs.root_dir()
            .open_file("loader/entries/head.conf")
            .unwrap()
            .read_to_string(&mut s)
            .unwrap();
        assert_eq!(s, "title head node\nsort-key omcluster-01\nlinux /vmlinuz\ninitrd /initrd.img\noptions console=ttyS0 om.role=head\n");
        let mut k = Vec::new();
        fs.root_dir()
            .open_file("vmlinuz")
            .unwrap()
            .read_to_end(&mut k)
            .unwrap();
        assert_eq!(k, kernel);
        let f = fs
            .root_dir()
            .iter()
            .map(|e| e.unwrap())
            .find(|e| e.file_name() == "vmlinuz")
            .unwrap();
        assert_eq!(
            f.modified().date,
            fatfs::Date {
                year: 2023,
                month: 11,
                day: 14
            }
        );
        assert_eq!(fs.volume_label(), "OMCLUSTER");
    }

    #[test]
    fn every_size_formats() {
        // Sizes cross the FAT12/FAT16 boundary, where some volume sizes fit
        // no FAT type; the builder must step over them.
        let e = entries();
        for kib in (0..12 * 1024).step_by(256) {
            let kernel = vec![9u8; kib * 1024];
            let input = EspInput {
                volume_label: "OMCLUSTER",
                epoch: 0,
                systemd_boot_efi: b"MZ",
                kernel: &kernel,
                initrd: b"i",
                entries: &e,
            };
            let img = build(&input).unwrap_or_else(|err| panic!("kernel of {kib} KiB: {err}"));
            let fs = fatfs::FileSystem::new(Cursor::new(img), fatfs::FsOptions::new()).unwrap();
            assert_eq!(
                fs.root_dir()
                    .open_file("vmlinuz")
                    .unwrap()
                    .seek(std::io::SeekFrom::End(0))
                    .unwrap(),
                kernel.len() as u64
            );
        }
    }

    #[test]
    fn loader_conf_names_the_first_entry() {
        assert_eq!(
            loader_conf(&entries()),
            "default compute.conf\ntimeout 3\neditor yes\n"
        );
    }
}
