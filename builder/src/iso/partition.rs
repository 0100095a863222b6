//! The disk view of the hybrid image: an MBR carrying isohdpfx.bin's boot
//! code (patched with isolinux.bin's address, as isohybrid does) and a
//! protective 0xEE entry, and a GPT (512-byte sectors) whose one partition
//! is the ESP. Pure: sizes and a seed in, bytes out.
//!
//! Why protective rather than hybrid: EDK2 only takes a GPT whose MBR has a
//! 0xEE entry starting at LBA 1, and skips GPT entries that overlap, so the
//! ESP is the only GPT partition and the ISO 9660 area stays unpartitioned
//! (Linux finds ISO 9660 on the whole disk). The 0xEE entry is marked active
//! because some BIOSes boot only disks with an active entry.

use sha2::{Digest, Sha256};

/// Bytes reserved at the end of the image for the backup GPT (entries +
/// header), rounded up to whole 2048-byte blocks.
pub const GPT_TAIL_BYTES: u64 = 9 * 2048;

const SECTOR: u64 = 512;
const ENTRIES: u32 = 128;
const ENTRY_SIZE: u32 = 128;
const ENTRY_SECTORS: u64 = (ENTRIES as u64 * ENTRY_SIZE as u64) / SECTOR;

/// EFI System Partition type GUID C12A7328-F81F-11D2-BA4B-00A0C93EC93B, on-disk order.
pub const ESP_TYPE: [u8; 16] = guid_bytes(
    0xC12A7328,
    0xF81F,
    0x11D2,
    [0xBA, 0x4B, 0x00, 0xA0, 0xC9, 0x3E, 0xC9, 0x3B],
);

const fn guid_bytes(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
    let a = a.to_le_bytes();
    let b = b.to_le_bytes();
    let c = c.to_le_bytes();
    [
        a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6],
        d[7],
    ]
}

/// Canonical text of an on-disk (mixed-endian) GUID.
pub fn guid_text(g: &[u8; 16]) -> String {
    format!(
        "{:08X}-{:04X}-{:04X}-{}-{}",
        u32::from_le_bytes([g[0], g[1], g[2], g[3]]),
        u16::from_le_bytes([g[4], g[5]]),
        u16::from_le_bytes([g[6], g[7]]),
        hex::encode_upper(&g[8..10]),
        hex::encode_upper(&g[10..16])
    )
}

/// A version-4-shaped GUID derived from `seed` and a purpose string.
fn derived_guid(seed: &[u8], what: &str) -> [u8; 16] {
    let h = Sha256::new()
        .chain_update(seed)
        .chain_update(what.as_bytes())
        .finalize();
    let mut g = [0u8; 16];
    g.copy_from_slice(&h[..16]);
    g[7] = (g[7] & 0x0f) | 0x40; // version 4 (time_hi_and_version is little-endian on disk)
    g[8] = (g[8] & 0x3f) | 0x80; // RFC 4122 variant
    g
}

/// Geometry and identities of the disk view.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Disk {
    /// Whole image size in bytes (multiple of 2048).
    pub size: u64,
    /// Byte offset of the ESP.
    pub esp_offset: u64,
    /// ESP size in bytes.
    pub esp_size: u64,
    /// GPT disk GUID.
    pub disk_guid: [u8; 16],
    /// GPT unique partition GUID of the ESP.
    pub esp_guid: [u8; 16],
    /// MBR disk signature.
    pub mbr_signature: u32,
}

impl Disk {
    /// Derives the identities from `seed` (a hash of the image contents).
    pub fn new(size: u64, esp_offset: u64, esp_size: u64, seed: &[u8]) -> Disk {
        let sig = Sha256::new()
            .chain_update(seed)
            .chain_update(b"mbr signature")
            .finalize();
        Disk {
            size,
            esp_offset,
            esp_size,
            disk_guid: derived_guid(seed, "gpt disk"),
            esp_guid: derived_guid(seed, "gpt esp"),
            mbr_signature: u32::from_le_bytes([sig[0], sig[1], sig[2], sig[3]]),
        }
    }

    fn last_lba(&self) -> u64 {
        self.size / SECTOR - 1
    }

    fn entries(&self) -> Vec<u8> {
        let mut t = vec![0u8; (ENTRIES * ENTRY_SIZE) as usize];
        let e = &mut t[..ENTRY_SIZE as usize];
        e[0..16].copy_from_slice(&ESP_TYPE);
        e[16..32].copy_from_slice(&self.esp_guid);
        let first = self.esp_offset / SECTOR;
        let last = first + self.esp_size.div_ceil(SECTOR) - 1;
        e[32..40].copy_from_slice(&first.to_le_bytes());
        e[40..48].copy_from_slice(&last.to_le_bytes());
        for (i, u) in "EFI system partition".encode_utf16().enumerate() {
            e[56 + 2 * i..58 + 2 * i].copy_from_slice(&u.to_le_bytes());
        }
        t
    }

    /// A GPT header sector; `primary` selects which copy.
    fn header(&self, primary: bool, entries_crc: u32) -> Vec<u8> {
        let last = self.last_lba();
        let (my, alt, entries_lba) = if primary {
            (1, last, 2)
        } else {
            (last, 1, last - ENTRY_SECTORS)
        };
        let mut h = vec![0u8; SECTOR as usize];
        h[0..8].copy_from_slice(b"EFI PART");
        h[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
        h[12..16].copy_from_slice(&92u32.to_le_bytes());
        h[24..32].copy_from_slice(&my.to_le_bytes());
        h[32..40].copy_from_slice(&alt.to_le_bytes());
        h[40..48].copy_from_slice(&(2 + ENTRY_SECTORS).to_le_bytes());
        h[48..56].copy_from_slice(&(last - ENTRY_SECTORS - 1).to_le_bytes());
        h[56..72].copy_from_slice(&self.disk_guid);
        h[72..80].copy_from_slice(&entries_lba.to_le_bytes());
        h[80..84].copy_from_slice(&ENTRIES.to_le_bytes());
        h[84..88].copy_from_slice(&ENTRY_SIZE.to_le_bytes());
        h[88..92].copy_from_slice(&entries_crc.to_le_bytes());
        let crc = crc32fast::hash(&h[..92]);
        h[16..20].copy_from_slice(&crc.to_le_bytes());
        h
    }

    /// The first 32 KiB... precisely: MBR + primary GPT header + entries
    /// (17 KiB), to be written at offset 0 inside the ISO system area.
    pub fn system_area(&self, isohdpfx: &[u8], isolinux_lba: u32) -> Vec<u8> {
        let mut a = self.mbr(isohdpfx, isolinux_lba);
        let entries = self.entries();
        a.extend_from_slice(&self.header(true, crc32fast::hash(&entries)));
        a.extend_from_slice(&entries);
        a
    }

    /// The MBR sector.
    pub fn mbr(&self, isohdpfx: &[u8], isolinux_lba: u32) -> Vec<u8> {
        let mut m = vec![0u8; SECTOR as usize];
        let code = isohdpfx.len().min(432);
        m[..code].copy_from_slice(&isohdpfx[..code]);
        // isohybrid: 512-byte sector address of isolinux.bin at 432 (64-bit).
        m[432..440].copy_from_slice(&(u64::from(isolinux_lba) * 4).to_le_bytes());
        m[440..444].copy_from_slice(&self.mbr_signature.to_le_bytes());
        let p = &mut m[446..462];
        p[0] = 0x80;
        p[1..4].copy_from_slice(&[0x00, 0x02, 0x00]); // CHS of LBA 1
        p[4] = 0xEE;
        p[5..8].copy_from_slice(&[0xFE, 0xFF, 0xFF]);
        p[8..12].copy_from_slice(&1u32.to_le_bytes());
        let count = (self.size / SECTOR - 1).min(u64::from(u32::MAX)) as u32;
        p[12..16].copy_from_slice(&count.to_le_bytes());
        m[510] = 0x55;
        m[511] = 0xAA;
        m
    }

    /// Backup GPT: entries then header, filling [`GPT_TAIL_BYTES`] at the end.
    pub fn backup_gpt(&self) -> Vec<u8> {
        let entries = self.entries();
        let mut t = vec![0u8; (GPT_TAIL_BYTES - ENTRY_SECTORS * SECTOR - SECTOR) as usize];
        t.extend_from_slice(&entries);
        t.extend_from_slice(&self.header(false, crc32fast::hash(&entries)));
        t
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    fn disk() -> Disk {
        Disk::new(100 * 2048, 80 * 2048, 10 * 2048 + 100, b"seed")
    }

    #[test]
    fn esp_type_guid_text() {
        assert_eq!(guid_text(&ESP_TYPE), "C12A7328-F81F-11D2-BA4B-00A0C93EC93B");
    }

    #[test]
    fn derived_identities_are_stable() {
        let d = disk();
        expect![[r#"
            (
                "13BB833D-25C3-4D49-949A-A3B9EA8DED71",
                "5439C274-3EEC-4179-B020-4EB15799423B",
                "120fc563",
            )
        "#]]
        .assert_debug_eq(&(
            guid_text(&d.disk_guid),
            guid_text(&d.esp_guid),
            format!("{:08x}", d.mbr_signature),
        ));
        assert_eq!(disk(), d);
        assert_ne!(
            Disk::new(100 * 2048, 80 * 2048, 100, b"other").disk_guid,
            d.disk_guid
        );
    }

    #[test]
    fn gpt_headers_and_crcs() {
        let d = disk();
        let area = d.system_area(&[0x90; 432], 33);
        assert_eq!(area.len(), 512 + 512 + 16384);
        let mbr = &area[..512];
        assert_eq!(&mbr[432..440], &(33u64 * 4).to_le_bytes());
        assert_eq!(&mbr[510..], &[0x55, 0xAA]);
        assert_eq!(mbr[446 + 4], 0xEE);
        assert_eq!(
            u32::from_le_bytes(mbr[446 + 12..446 + 16].try_into().unwrap()),
            100 * 4 - 1
        );
        let h = &area[512..1024];
        assert_eq!(&h[..8], b"EFI PART");
        // Header CRC recomputed with its own field zeroed.
        let mut z = h[..92].to_vec();
        z[16..20].fill(0);
        assert_eq!(crc32fast::hash(&z).to_le_bytes(), h[16..20]);
        assert_eq!(crc32fast::hash(&area[1024..]).to_le_bytes(), h[88..92]);
        // The ESP entry: sectors 320 .. 320+41-1.
        let e = &area[1024..1024 + 128];
        assert_eq!(u64::from_le_bytes(e[32..40].try_into().unwrap()), 320);
        assert_eq!(
            u64::from_le_bytes(e[40..48].try_into().unwrap()),
            320 + 41 - 1
        );
        // Backup: header in the last sector, alternate pointing back at 1.
        let tail = d.backup_gpt();
        assert_eq!(tail.len() as u64, GPT_TAIL_BYTES);
        let bh = &tail[tail.len() - 512..];
        assert_eq!(u64::from_le_bytes(bh[24..32].try_into().unwrap()), 399);
        assert_eq!(u64::from_le_bytes(bh[32..40].try_into().unwrap()), 1);
        assert_eq!(u64::from_le_bytes(bh[72..80].try_into().unwrap()), 399 - 32);
        assert_eq!(
            &tail[tail.len() - 512 - 16384..tail.len() - 512],
            &area[1024..]
        );
    }
}
