//! El Torito: the boot record volume descriptor, the boot catalog (a BIOS
//! no-emulation default entry and a UEFI section), and the ISOLINUX boot-info
//! table. Pure byte layout.

use super::BLOCK;

/// isolinux.bin's isohybrid signature at offset 64, checked by the MBR code.
pub const ISOHYBRID_MAGIC: u32 = 0x7078_c0fb;

/// Where the two boot images are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Catalog {
    /// LBA of isolinux.bin.
    pub bios_lba: u32,
    /// 512-byte sectors the BIOS loads (4: one CD block, as mkisofs does).
    pub bios_sector_count: u16,
    /// LBA of the ESP image.
    pub efi_lba: u32,
    /// Sector count of the EFI entry, see [`efi_sector_count`].
    pub efi_sector_count: u16,
}

/// The boot record volume descriptor (block 17) pointing at the catalog.
pub fn boot_record(catalog_lba: u32) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK as usize];
    b[0] = 0;
    b[1..6].copy_from_slice(b"CD001");
    b[6] = 1;
    let id = b"EL TORITO SPECIFICATION";
    b[7..7 + id.len()].copy_from_slice(id);
    b[0x47..0x4b].copy_from_slice(&catalog_lba.to_le_bytes());
    b
}

/// El Torito sector count for an EFI image of `bytes`: 512-byte sectors,
/// clamped to the 16-bit field. EDK2 reads a no-emulation count in units of
/// the medium's block size (2048 on a CD), so the clamp still covers an ESP
/// up to 128 MiB there; the FAT boot sector carries the real size.
pub fn efi_sector_count(bytes: u64) -> u16 {
    bytes.div_ceil(512).min(u64::from(u16::MAX)) as u16
}

/// The boot catalog block.
pub fn boot_catalog(c: &Catalog) -> Vec<u8> {
    let mut b = vec![0u8; BLOCK as usize];
    // Validation entry: header 1, platform 0 (x86), id string, checksum, 55 AA.
    b[0] = 1;
    b[1] = 0;
    let id = b"OMBUILD";
    b[4..4 + id.len()].copy_from_slice(id);
    b[30] = 0x55;
    b[31] = 0xAA;
    let sum = b[..32].chunks(2).fold(0u16, |acc, w| {
        acc.wrapping_add(u16::from_le_bytes([w[0], w[1]]))
    });
    b[28..30].copy_from_slice(&0u16.wrapping_sub(sum).to_le_bytes());
    // Initial/default entry: bootable, no emulation, load segment 0 (0x7C0).
    let e = &mut b[32..64];
    e[0] = 0x88;
    e[6..8].copy_from_slice(&c.bios_sector_count.to_le_bytes());
    e[8..12].copy_from_slice(&c.bios_lba.to_le_bytes());
    // Final section header: platform 0xEF (UEFI), one entry.
    let h = &mut b[64..96];
    h[0] = 0x91;
    h[1] = 0xEF;
    h[2..4].copy_from_slice(&1u16.to_le_bytes());
    // Section entry: bootable, no emulation.
    let e = &mut b[96..128];
    e[0] = 0x88;
    e[6..8].copy_from_slice(&c.efi_sector_count.to_le_bytes());
    e[8..12].copy_from_slice(&c.efi_lba.to_le_bytes());
    b
}

/// Patches ISOLINUX's boot-info table (bytes 8-63): the PVD's LBA, the
/// file's own LBA, its length and the 32-bit sum of its little-endian words
/// from offset 64 on.
pub fn patch_boot_info_table(isolinux: &mut [u8], pvd_lba: u32, file_lba: u32) {
    let len = isolinux.len() as u32;
    let mut sum = 0u32;
    for chunk in isolinux[64..].chunks(4) {
        let mut w = [0u8; 4];
        w[..chunk.len()].copy_from_slice(chunk);
        sum = sum.wrapping_add(u32::from_le_bytes(w));
    }
    isolinux[8..12].copy_from_slice(&pvd_lba.to_le_bytes());
    isolinux[12..16].copy_from_slice(&file_lba.to_le_bytes());
    isolinux[16..20].copy_from_slice(&len.to_le_bytes());
    isolinux[20..24].copy_from_slice(&sum.to_le_bytes());
    isolinux[24..64].fill(0);
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::expect;

    #[test]
    fn catalog_layout_and_checksum() {
        let cat = boot_catalog(&Catalog {
            bios_lba: 0x21,
            bios_sector_count: 4,
            efi_lba: 0x1234,
            efi_sector_count: 0xffff,
        });
        let words: u32 = cat[..32]
            .chunks(2)
            .map(|w| u32::from(u16::from_le_bytes([w[0], w[1]])))
            .sum();
        assert_eq!(words % 0x10000, 0, "validation entry words sum to zero");
        let dump: Vec<String> = cat[..128].chunks(32).map(hex::encode).collect();
        expect![[r#"
            [
                "010000004f4d4255494c4400000000000000000000000000000000008c6655aa",
                "8800000000000400210000000000000000000000000000000000000000000000",
                "91ef010000000000000000000000000000000000000000000000000000000000",
                "880000000000ffff341200000000000000000000000000000000000000000000",
            ]
        "#]]
        .assert_debug_eq(&dump);
        assert!(cat[128..].iter().all(|&b| b == 0));
    }

    #[test]
    fn efi_count_clamps() {
        assert_eq!(efi_sector_count(2048), 4);
        assert_eq!(efi_sector_count(1000), 2);
        assert_eq!(efi_sector_count(32 * 1024 * 1024 - 512), 65535);
        assert_eq!(efi_sector_count(100 << 20), 65535);
    }

    #[test]
    fn boot_info_table() {
        let mut bin: Vec<u8> = (0..200u32).map(|i| i as u8).collect();
        patch_boot_info_table(&mut bin, 16, 40);
        assert_eq!(&bin[8..12], &16u32.to_le_bytes());
        assert_eq!(&bin[12..16], &40u32.to_le_bytes());
        assert_eq!(&bin[16..20], &200u32.to_le_bytes());
        // words 64..200: bytes 64..199; sum little-endian u32s
        let mut sum = 0u32;
        for c in bin[64..].chunks(4) {
            sum = sum.wrapping_add(u32::from_le_bytes(c.try_into().unwrap()));
        }
        assert_eq!(&bin[20..24], &sum.to_le_bytes());
        assert!(bin[24..64].iter().all(|&b| b == 0));
        assert_eq!(&bin[64..68], &[64, 65, 66, 67]);
    }

    #[test]
    fn boot_record_points_at_catalog() {
        let b = boot_record(19);
        assert_eq!(&b[1..6], b"CD001");
        assert_eq!(&b[7..30], b"EL TORITO SPECIFICATION");
        assert_eq!(&b[0x47..0x4b], &[19, 0, 0, 0]);
    }
}
