//! The hybrid ISO read back by independent tools (xorriso, isoinfo, fdisk,
//! mtools): their view must match what the writer meant.

use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::process::Command;

use builder::iso::{self, BootEntry, BootMedia, IsoFile, IsoReport};
use expect_test::expect;
use lab::gate::Need;

use crate::util;

/// The Debian boot loader files the ISO needs, read from the host.
pub struct HostLoaders {
    pub isolinux_bin: Vec<u8>,
    pub ldlinux_c32: Vec<u8>,
    pub isohdpfx: Vec<u8>,
    pub systemd_boot_efi: Vec<u8>,
}

/// Reads the loaders from the host's `isolinux`, `syslinux-common` and
/// `systemd-boot-efi` packages; `None` (skip) when missing outside CI.
pub fn host_loaders() -> Option<HostLoaders> {
    let read = |p: &str, pkg: &str| -> Option<Vec<u8>> {
        lab::gate::require(&[Need::File(p, pkg)]).then(|| std::fs::read(p).unwrap())
    };
    Some(HostLoaders {
        isolinux_bin: read("/usr/lib/ISOLINUX/isolinux.bin", "isolinux")?,
        ldlinux_c32: read(
            "/usr/lib/syslinux/modules/bios/ldlinux.c32",
            "syslinux-common",
        )?,
        isohdpfx: read("/usr/lib/ISOLINUX/isohdpfx.bin", "isolinux")?,
        systemd_boot_efi: read(
            "/usr/lib/systemd/boot/efi/systemd-bootx64.efi",
            "systemd-boot-efi",
        )?,
    })
}

/// The two standard entries with `extra` appended to both command lines.
pub fn entries(extra: &str) -> Vec<BootEntry> {
    vec![
        BootEntry {
            label: "compute".into(),
            title: "omcluster compute node".into(),
            cmdline: format!("{extra} om.role=node").trim().to_string(),
        },
        BootEntry {
            label: "head".into(),
            title: "omcluster head node".into(),
            cmdline: format!("{extra} om.role=head").trim().to_string(),
        },
    ]
}

/// Media with the image-directory layout around `kernel` and `initrd`.
pub fn media<'a>(
    l: &'a HostLoaders,
    kernel: &'a [u8],
    initrd: &'a [u8],
    extra_files: &'a [(String, Vec<u8>)],
    entries: Vec<BootEntry>,
) -> BootMedia<'a> {
    let mut files = vec![
        IsoFile::new("vmlinuz", kernel),
        IsoFile::new("initrd.img", initrd),
    ];
    for (p, d) in extra_files {
        files.push(IsoFile::new(p.clone(), d));
    }
    BootMedia {
        volume_id: "OMCLUSTER".into(),
        epoch: 1_700_000_000,
        files,
        kernel: "vmlinuz".into(),
        initrd: "initrd.img".into(),
        isolinux_bin: &l.isolinux_bin,
        ldlinux_c32: &l.ldlinux_c32,
        isohdpfx: &l.isohdpfx,
        systemd_boot_efi: &l.systemd_boot_efi,
        entries,
    }
}

/// Writes the ISO to `path`.
pub fn write_iso(media: &BootMedia, path: &Path) -> IsoReport {
    let f = std::fs::File::create(path).unwrap();
    let report = iso::write_hybrid_iso(media, std::io::BufWriter::new(f)).unwrap();
    assert_eq!(std::fs::metadata(path).unwrap().len(), report.size);
    report
}

fn run(tool: &Path, args: &[&str]) -> String {
    let out = Command::new(tool).args(args).output().unwrap();
    assert!(
        out.status.success(),
        "{} {args:?} failed: {}",
        tool.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr)
}

/// Synthetic image files: small kernel/initrd stand-ins plus the boot kit.
/// Extra image files: (path, contents).
type Files = Vec<(String, Vec<u8>)>;

fn synthetic() -> (Vec<u8>, Vec<u8>, Files) {
    let kernel: Vec<u8> = (0..100_000u32).map(|i| (i * 7) as u8).collect();
    let initrd: Vec<u8> = (0..250_000u32).map(|i| (i * 13 + 1) as u8).collect();
    let extra = vec![
        ("ipxe/undionly.kpxe".to_string(), vec![1u8; 70_000]),
        ("ipxe/snponly.efi".to_string(), vec![2u8; 200_000]),
        ("ipxe/ipxe.efi".to_string(), vec![3u8; 1_000_000]),
        ("manifest.json".to_string(), b"{\"packages\":[]}\n".to_vec()),
    ];
    (kernel, initrd, extra)
}

/// On-disk (mixed-endian) hex of a canonical GUID, as xorriso prints it.
fn raw_guid(text: &str) -> String {
    let h: String = text
        .chars()
        .filter(|c| *c != '-')
        .collect::<String>()
        .to_lowercase();
    let b = |i: usize| &h[2 * i..2 * i + 2];
    let order = [3, 2, 1, 0, 5, 4, 7, 6, 8, 9, 10, 11, 12, 13, 14, 15];
    order.iter().map(|&i| b(i)).collect()
}

fn lines_with(text: &str, needles: &[&str]) -> String {
    text.lines()
        .filter(|l| needles.iter().any(|n| l.contains(n)))
        .map(str::trim_end)
        .collect::<Vec<_>>()
        .join("\n")
        + "\n"
}

#[test]
fn iso_read_back_by_xorriso_isoinfo_fdisk_and_mtools() {
    let Some(l) = host_loaders() else { return };
    let tools: Option<Vec<PathBuf>> = ["xorriso", "isoinfo", "fdisk", "mdir", "mtype"]
        .iter()
        .map(|t| util::tool(t))
        .collect();
    let Some(tools) = tools else { return };
    let (xorriso, isoinfo, fdisk, mdir, mtype) =
        (&tools[0], &tools[1], &tools[2], &tools[3], &tools[4]);
    let (kernel, initrd, extra) = synthetic();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("om.iso");
    let m = media(&l, &kernel, &initrd, &extra, entries("console=ttyS0"));
    let report = write_iso(&m, &path);
    let p = path.to_str().unwrap();
    if let Some(keep) = std::env::var_os("OM_ISO_KEEP") {
        std::fs::copy(&path, keep).unwrap();
    }

    // genisoimage's structure checker.
    if let Some(isovfy) = util::tool("isovfy") {
        let v = run(&isovfy, &[p]);
        assert!(v.contains("No errors found"), "isovfy: {v}");
    }

    // El Torito as xorriso sees it.
    let el = run(xorriso, &["-indev", p, "-report_el_torito", "plain"]);
    let el = lines_with(&el, &["El Torito", "Boot record"]);
    let expected_el = format!(
        "El Torito catalog  : {}  1\n\
         El Torito cat path : /isolinux/boot.cat\n\
         El Torito images   :   N  Pltf  B   Emul  Ld_seg  Hdpt  Ldsiz         LBA\n\
         El Torito boot img :   1  BIOS  y   none  0x0000  0x00      4 {:>11}\n\
         El Torito boot img :   2  UEFI  y   none  0x0000  0x00 {:>6} {:>11}\n\
         El Torito img path :   1  /isolinux/isolinux.bin\n\
         El Torito img opts :   1  boot-info-table isohybrid-suitable\n\
         El Torito img blks :   2  {}\n\
         Boot record  : El Torito , MBR isohybrid cyl-align-off GPT\n",
        report.catalog_lba,
        report.isolinux_lba,
        report.esp_sector_count,
        report.esp_lba,
        report.esp_size / 2048
    );
    assert_eq!(el, expected_el, "xorriso -report_el_torito");

    // The system area: MBR with isohybrid boot code, protective 0xEE, GPT with the ESP.
    let sa = run(xorriso, &["-indev", p, "-report_system_area", "plain"]);
    let sa = lines_with(&sa, &["System area", "MBR partition", "GPT "]);
    let esp_first = u64::from(report.esp_lba) * 4;
    let esp_sectors = report.esp_size / 512;
    let esp_last = esp_first + esp_sectors - 1;
    let total = report.size / 512;
    let expected_sa = format!(
        "System area options: 0x00000203\n\
         System area summary: MBR isohybrid cyl-align-off GPT\n\
         MBR partition table:   N Status  Type        Start       Blocks\n\
         MBR partition      :   1   0x80  0xee            1 {:>12}\n\
         GPT                :   N  Info\n\
         GPT disk GUID      :      {}\n\
         GPT entry array    :      2  128  separated\n\
         GPT lba range      :      34  {}  {}\n\
         GPT partition name :   1  4500460049002000730079007300740065006d00200070006100720074006900740069006f006e00\n\
         GPT partname local :   1  EFI system partition\n\
         GPT partition GUID :   1  {}\n\
         GPT type GUID      :   1  28732ac11ff8d211ba4b00a0c93ec93b\n\
         GPT partition flags:   1  0x0000000000000000\n\
         GPT start and size :   1  {esp_first}  {esp_sectors}\n",
        total - 1,
        raw_guid(&report.disk_guid),
        total - 34,
        total - 1,
        raw_guid(&report.esp_guid),
    );
    assert_eq!(sa, expected_sa, "xorriso -report_system_area");

    // Rock Ridge names through isoinfo.
    let listing = run(isoinfo, &["-R", "-f", "-i", p]);
    expect![[r#"
        /initrd.img
        /ipxe
        /isolinux
        /manifest.json
        /vmlinuz
        /ipxe/ipxe.efi
        /ipxe/snponly.efi
        /ipxe/undionly.kpxe
        /isolinux/boot.cat
        /isolinux/boot.msg
        /isolinux/isolinux.bin
        /isolinux/isolinux.cfg
        /isolinux/ldlinux.c32
    "#]]
    .assert_eq(&listing);
    let joliet = run(isoinfo, &["-J", "-f", "-i", p]);
    assert_eq!(joliet, listing, "the Joliet tree has the same names");
    let plain = run(isoinfo, &["-f", "-i", p]);
    expect![[r#"
        /INITRD.IMG;1
        /IPXE
        /ISOLINUX
        /MANIFEST.JSON;1
        /VMLINUZ.;1
        /IPXE/IPXE.EFI;1
        /IPXE/SNPONLY.EFI;1
        /IPXE/UNDIONLY.KPXE;1
        /ISOLINUX/BOOT.CAT;1
        /ISOLINUX/BOOT.MSG;1
        /ISOLINUX/ISOLINUX.BIN;1
        /ISOLINUX/ISOLINUX.CFG;1
        /ISOLINUX/LDLINUX.C32;1
    "#]]
    .assert_eq(&plain);
    let long = run(isoinfo, &["-R", "-l", "-i", p]);
    let initrd_line = long
        .lines()
        .find(|l| l.contains(" initrd.img"))
        .unwrap_or_else(|| panic!("{long}"));
    assert!(
        initrd_line.starts_with("-r--r--r--") || initrd_line.starts_with("-rw-r--r--"),
        "{initrd_line}"
    );
    assert!(
        initrd_line.contains(" 250000 Nov 14 2023 "),
        "{initrd_line}"
    );
    let d = run(isoinfo, &["-d", "-i", p]);
    let d = lines_with(
        &d,
        &[
            "Volume id",
            "Volume size",
            "Rock Ridge",
            "Joliet",
            "El Torito",
            "Bootoff",
            "Logical block size",
        ],
    );
    let expected_d = format!(
        "Volume id: OMCLUSTER\n\
         Logical block size is: 2048\n\
         Volume size is: {}\n\
         El Torito VD version 1 found, boot catalog is in sector {}\n\
         Joliet with UCS level 3 found\n\
         Rock Ridge signatures version 1 found\n        \
         Bootoff {:X} {}\n",
        report.size / 2048,
        report.catalog_lba,
        report.isolinux_lba,
        report.isolinux_lba
    );
    assert_eq!(d, expected_d, "isoinfo -d");
    // Contents come back byte for byte.
    let back = Command::new(isoinfo)
        .args(["-R", "-x", "/ipxe/snponly.efi", "-i", p])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(back, extra[1].1);
    let back = Command::new(isoinfo)
        .args(["-R", "-x", "/initrd.img", "-i", p])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(back, initrd);

    // The disk view.
    let fd = run(fdisk, &["-l", p]);
    let fd = lines_with(
        &fd,
        &[
            "Disklabel type",
            "Sector size",
            "EFI System",
            "Disk identifier",
        ],
    );
    let fd: String = fd
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" ") + "\n")
        .collect();
    let expected_fd = format!(
        "Sector size (logical/physical): 512 bytes / 512 bytes\n\
         Disklabel type: gpt\n\
         Disk identifier: {}\n\
         {p}1 {} {} {} {}M EFI System\n",
        report.disk_guid,
        esp_first,
        esp_last,
        esp_last - esp_first + 1,
        report.esp_size >> 20
    );
    assert_eq!(fd, expected_fd, "fdisk -l");

    // The ESP through mtools at its byte offset.
    let esp = format!("{p}@@{}", u64::from(report.esp_lba) * 2048);
    let boot = run(mdir, &["-b", "-i", &esp, "::/EFI/BOOT"]);
    assert_eq!(boot, "::/EFI/BOOT/BOOTX64.EFI\n");
    let root = run(mdir, &["-b", "-i", &esp, "::/"]);
    expect![[r#"
        ::/EFI/
        ::/loader/
        ::/vmlinuz
        ::/initrd.img
    "#]]
    .assert_eq(&root);
    let entries_dir = run(mdir, &["-b", "-i", &esp, "::/loader/entries"]);
    assert_eq!(
        entries_dir,
        "::/loader/entries/compute.conf\n::/loader/entries/head.conf\n"
    );
    expect![[r#"
        title omcluster head node
        sort-key omcluster-01
        linux /vmlinuz
        initrd /initrd.img
        options console=ttyS0 om.role=head
    "#]]
    .assert_eq(&run(mtype, &["-i", &esp, "::/loader/entries/head.conf"]));
    expect![[r#"
        default compute.conf
        timeout 3
        editor yes
    "#]]
    .assert_eq(&run(mtype, &["-i", &esp, "::/loader/loader.conf"]));
    let efi = Command::new(mtype)
        .args(["-i", &esp, "::/EFI/BOOT/BOOTX64.EFI"])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(efi, l.systemd_boot_efi);
    let k = Command::new(mtype)
        .args(["-i", &esp, "::/vmlinuz"])
        .output()
        .unwrap()
        .stdout;
    assert_eq!(k, kernel);
}

#[test]
fn iso_two_writes_are_byte_identical_and_inputs_change_the_ids() {
    let Some(l) = host_loaders() else { return };
    let (kernel, initrd, extra) = synthetic();
    let m = media(&l, &kernel, &initrd, &extra, entries("console=ttyS0"));
    let mut a = Cursor::new(Vec::new());
    let mut b = Cursor::new(Vec::new());
    let ra = iso::write_hybrid_iso(&m, &mut a).unwrap();
    let rb = iso::write_hybrid_iso(&m, &mut b).unwrap();
    assert_eq!(ra, rb);
    assert!(a.get_ref() == b.get_ref(), "two writes differ");
    // The order the files are given in doesn't matter.
    let mut shuffled = m.clone();
    shuffled.files.reverse();
    let mut c = Cursor::new(Vec::new());
    iso::write_hybrid_iso(&shuffled, &mut c).unwrap();
    assert!(a.get_ref() == c.get_ref(), "file order changed the image");
    let mut m2 = m.clone();
    m2.epoch += 1;
    let rc = iso::write_hybrid_iso(&m2, Cursor::new(Vec::new())).unwrap();
    assert_ne!(
        rc.disk_guid, ra.disk_guid,
        "the GUIDs derive from the contents"
    );
    assert_ne!(rc.esp_guid, ra.esp_guid);
}

#[test]
fn iso_bad_media_are_refused_with_a_named_cause() {
    let Some(l) = host_loaders() else { return };
    let (kernel, initrd, extra) = synthetic();
    let short = [0u8; 100];
    let cfg = b"x".to_vec();
    let base = media(&l, &kernel, &initrd, &extra, entries(""));
    fn check<'a>(base: &BootMedia<'a>, f: impl FnOnce(&mut BootMedia<'a>)) -> String {
        let mut m = base.clone();
        f(&mut m);
        iso::write_hybrid_iso(&m, Cursor::new(Vec::new()))
            .unwrap_err()
            .to_string()
    }
    let err = |f: &dyn Fn(&mut BootMedia<'_>)| check(&base, f);
    assert_eq!(
        err(&|m| m.kernel = "boot/vmlinuz".into()),
        "kernel \"boot/vmlinuz\" is not among the image files"
    );
    assert_eq!(
        err(&|m| m.volume_id = "om cluster".into()),
        "volume id \"om cluster\" is not 1-32 characters of A-Z, 0-9 and _"
    );
    assert_eq!(err(&|m| m.entries.clear()), "no boot entries given");
    assert_eq!(
        err(&|m| m.entries[1].label = "compute".into()),
        "boot entry label \"compute\" is empty, repeated, or not made of a-z, 0-9, - and _"
    );
    assert_eq!(
        err(&|m| m.entries[0].cmdline = "a\nb".into()),
        "boot entry \"compute\" has a control character in its title or command line"
    );
    assert_eq!(
        check(&base, |m| m.isohdpfx = &short),
        "isohdpfx.bin is 100 bytes, expected the 432-byte hybrid MBR code"
    );
    assert!(check(&base, |m| m.isolinux_bin = &l.ldlinux_c32)
        .contains("not an isohybrid-capable ISOLINUX"));
    assert_eq!(
        check(&base, |m| m
            .files
            .push(IsoFile::new("isolinux/isolinux.cfg", &cfg))),
        "file \"isolinux/isolinux.cfg\" is inside isolinux/, which the ISO writer fills itself"
    );
    assert_eq!(
        check(&base, |m| m.files.push(IsoFile::new("vmlinuz", &cfg))),
        "path \"vmlinuz\" is given twice (or is both a file and a directory)"
    );
}
