//! The boot decision table: from what a DHCP client says about itself
//! (option 93 client architectures, option 60 vendor class, option 77 user
//! class, option 175 iPXE encapsulation) to what it is told to boot.
//!
//! One pure function, [`decide`], used by the DHCP core, by ProxyDHCP and by
//! `omboot explain`, so the table that is tested is the one that runs. The
//! rules, first match wins:
//!
//! 1. the client is already iPXE (option 175, or user class `iPXE` plain or
//!    RFC 3004 length-prefixed) → `http://SERVER:PORT/boot.ipxe` (never a loop);
//! 2. not a PXE/HTTP-boot client (no option 60 `PXEClient`/`HTTPClient`, no 93)
//!    → nothing;
//! 3. the first architecture in option 93 (the client's order of preference,
//!    RFC 4578) that the image has a file for: BIOS (0) → `ipxe/undionly.kpxe`,
//!    UEFI x64 (7, 9) → `ipxe/snponly.efi` (else `ipxe/ipxe.efi`), UEFI x64
//!    HTTP boot (16) → `http://SERVER:PORT/ipxe/snponly.efi`, arm64 (11) →
//!    `ipxe/snponly-arm64.efi`;
//! 4. otherwise → no boot file for that architecture (said so in the log and by
//!    `omboot explain`).

use std::fmt;
use std::path::Path;

/// The BIOS chainload file (iPXE over the PXE ROM's UNDI).
pub const BIOS_FILE: &str = contracts::image::UNDIONLY_KPXE;
/// The UEFI x64 chainload file (iPXE over the firmware's SNP).
pub const UEFI_X64_FILE: &str = contracts::image::SNPONLY_EFI;
/// The UEFI x64 fallback (iPXE with its own drivers).
pub const UEFI_X64_FALLBACK: &str = contracts::image::IPXE_EFI;
/// The arm64 UEFI chainload file, when the image has one.
pub const UEFI_ARM64_FILE: &str = "ipxe/snponly-arm64.efi";
/// The iPXE script path on the HTTP server.
pub const SCRIPT_PATH: &str = "/boot.ipxe";

/// RFC 4578 option 93 client system architecture types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    /// 0: Intel x86PC (BIOS).
    Bios,
    /// 6: EFI IA32.
    EfiIa32,
    /// 7: EFI BC (x64).
    EfiX64,
    /// 9: EFI x86-64.
    EfiX64Alt,
    /// 10: ARM 32-bit UEFI.
    EfiArm32,
    /// 11: ARM 64-bit UEFI.
    EfiArm64,
    /// 16: x64 UEFI HTTP boot.
    EfiX64Http,
    /// Anything else (the number as sent).
    Other(u16),
}

impl Arch {
    /// From the option 93 number.
    pub fn from_code(c: u16) -> Arch {
        match c {
            0 => Arch::Bios,
            6 => Arch::EfiIa32,
            7 => Arch::EfiX64,
            9 => Arch::EfiX64Alt,
            10 => Arch::EfiArm32,
            11 => Arch::EfiArm64,
            16 => Arch::EfiX64Http,
            n => Arch::Other(n),
        }
    }
    /// The option 93 number.
    pub fn code(self) -> u16 {
        match self {
            Arch::Bios => 0,
            Arch::EfiIa32 => 6,
            Arch::EfiX64 => 7,
            Arch::EfiX64Alt => 9,
            Arch::EfiArm32 => 10,
            Arch::EfiArm64 => 11,
            Arch::EfiX64Http => 16,
            Arch::Other(n) => n,
        }
    }
    /// Short name for logs and `explain`.
    pub fn name(self) -> String {
        match self {
            Arch::Bios => "bios".into(),
            Arch::EfiIa32 => "uefi-ia32".into(),
            Arch::EfiX64 | Arch::EfiX64Alt => "uefi-x64".into(),
            Arch::EfiArm32 => "uefi-arm32".into(),
            Arch::EfiArm64 => "uefi-arm64".into(),
            Arch::EfiX64Http => "uefi-x64-http".into(),
            Arch::Other(n) => format!("arch-{n}"),
        }
    }
}

impl fmt::Display for Arch {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} ({})", self.code(), self.name())
    }
}

/// What a client says about itself, from its raw options.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ClientInfo {
    /// Every option 93 entry, in order.
    pub arches: Vec<u16>,
    /// Option 60 starts with `PXEClient`.
    pub pxe_client: bool,
    /// Option 60 starts with `HTTPClient`.
    pub http_client: bool,
    /// The client is iPXE (option 175 or user class `iPXE`).
    pub ipxe: bool,
}

impl ClientInfo {
    /// Build from the raw bytes of options 93, 60, 77 and whether 175 was sent.
    pub fn from_options(
        opt93: Option<&[u8]>,
        opt60: Option<&[u8]>,
        opt77: Option<&[u8]>,
        has_opt175: bool,
    ) -> ClientInfo {
        let arches = opt93
            .map(|b| {
                b.chunks_exact(2)
                    .map(|c| u16::from_be_bytes([c[0], c[1]]))
                    .collect()
            })
            .unwrap_or_default();
        let vc = opt60.unwrap_or_default();
        ClientInfo {
            arches,
            pxe_client: vc.starts_with(b"PXEClient"),
            http_client: vc.starts_with(b"HTTPClient"),
            ipxe: has_opt175 || opt77.is_some_and(user_class_is_ipxe),
        }
    }

    /// First architecture (for logs), or the one implied by option 60.
    pub fn primary_arch(&self) -> Option<Arch> {
        self.arches.first().map(|&c| Arch::from_code(c))
    }
}

/// Whether an option 77 value says `iPXE`, plain (as iPXE sends it) or as an
/// RFC 3004 list of length-prefixed user classes.
pub fn user_class_is_ipxe(v: &[u8]) -> bool {
    if v == b"iPXE" {
        return true;
    }
    let mut rest = v;
    while let Some((&len, tail)) = rest.split_first() {
        let len = len as usize;
        if len == 0 || len > tail.len() {
            return false;
        }
        if &tail[..len] == b"iPXE" {
            return true;
        }
        rest = &tail[len..];
    }
    false
}

/// Which boot files the image directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Available {
    /// `ipxe/undionly.kpxe`.
    pub bios: bool,
    /// `ipxe/snponly.efi`.
    pub uefi_x64: bool,
    /// `ipxe/ipxe.efi`.
    pub uefi_x64_fallback: bool,
    /// `ipxe/snponly-arm64.efi`.
    pub uefi_arm64: bool,
}

impl Available {
    /// Every file present (for `explain` without an image directory).
    pub const ALL: Available = Available {
        bios: true,
        uefi_x64: true,
        uefi_x64_fallback: true,
        uefi_arm64: true,
    };

    /// Look at an image directory.
    pub fn scan(images: &Path) -> Available {
        Available {
            bios: images.join(BIOS_FILE).is_file(),
            uefi_x64: images.join(UEFI_X64_FILE).is_file(),
            uefi_x64_fallback: images.join(UEFI_X64_FALLBACK).is_file(),
            uefi_arm64: images.join(UEFI_ARM64_FILE).is_file(),
        }
    }
}

/// Where the HTTP server is, as the client should reach it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpBase {
    /// Host (the address of the interface the request came in on).
    pub host: String,
    /// Port.
    pub port: u16,
}

impl HttpBase {
    fn url(&self, path: &str) -> String {
        format!("http://{}:{}{}", self.host, self.port, path)
    }
}

/// Which rule fired.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// The client is iPXE: it gets the boot script.
    IpxeScript,
    /// BIOS PXE: chainload undionly.kpxe.
    BiosUndionly,
    /// UEFI x64 PXE: chainload snponly.efi.
    UefiX64Snponly,
    /// UEFI x64 PXE, no snponly.efi in the image: ipxe.efi.
    UefiX64IpxeEfi,
    /// UEFI x64 HTTP boot: snponly.efi by URL.
    UefiHttp,
    /// arm64 UEFI PXE: the arm64 iPXE.
    UefiArm64,
    /// A PXE client whose architectures have no file in the image.
    NoBootFile,
    /// Not a network-boot client: plain DHCP only.
    NotPxe,
}

impl Rule {
    /// Stable name shown by `explain` and in logs.
    pub fn name(self) -> &'static str {
        match self {
            Rule::IpxeScript => "ipxe-script",
            Rule::BiosUndionly => "bios-undionly",
            Rule::UefiX64Snponly => "uefi-x64-snponly",
            Rule::UefiX64IpxeEfi => "uefi-x64-ipxe-efi",
            Rule::UefiHttp => "uefi-http",
            Rule::UefiArm64 => "uefi-arm64",
            Rule::NoBootFile => "no-boot-file",
            Rule::NotPxe => "not-pxe",
        }
    }
}

/// What a client is told to boot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Boot {
    /// A file fetched by TFTP from the next-server, relative to the image dir.
    Tftp(String),
    /// A URL (the iPXE script, or an EFI binary for UEFI HTTP boot).
    Url(String),
    /// A PXE client we have nothing for; the text says why.
    Nothing(String),
    /// Not a boot client.
    None,
}

/// The outcome of [`decide`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    /// The rule that fired.
    pub rule: Rule,
    /// The architecture it fired for, if any.
    pub arch: Option<Arch>,
    /// What the client gets.
    pub boot: Boot,
}

impl Decision {
    /// The boot file name to put in the reply, if any.
    pub fn filename(&self) -> Option<&str> {
        match &self.boot {
            Boot::Tftp(f) | Boot::Url(f) => Some(f),
            _ => None,
        }
    }
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "rule {}", self.rule.name())?;
        if let Some(a) = self.arch {
            write!(f, " arch {a}")?;
        }
        match &self.boot {
            Boot::Tftp(p) => write!(f, " → tftp {p}"),
            Boot::Url(u) => write!(f, " → http {u}"),
            Boot::Nothing(why) => write!(f, " → nothing: {why}"),
            Boot::None => write!(f, " → no boot options (plain DHCP)"),
        }
    }
}

/// The boot decision table (see the module doc).
pub fn decide(client: &ClientInfo, available: Available, http: &HttpBase) -> Decision {
    let arch0 = client.primary_arch();
    if client.ipxe {
        return Decision {
            rule: Rule::IpxeScript,
            arch: arch0,
            boot: Boot::Url(http.url(SCRIPT_PATH)),
        };
    }
    if !client.pxe_client && !client.http_client && client.arches.is_empty() {
        return Decision {
            rule: Rule::NotPxe,
            arch: None,
            boot: Boot::None,
        };
    }
    // A PXE client that sent no option 93 is a BIOS client (RFC 4578 §2.1).
    let arches: Vec<Arch> = if client.arches.is_empty() {
        vec![Arch::Bios]
    } else {
        client.arches.iter().map(|&c| Arch::from_code(c)).collect()
    };
    for &arch in &arches {
        let hit = match arch {
            Arch::Bios if available.bios => {
                Some((Rule::BiosUndionly, Boot::Tftp(BIOS_FILE.into())))
            }
            Arch::EfiX64 | Arch::EfiX64Alt if available.uefi_x64 => {
                Some((Rule::UefiX64Snponly, Boot::Tftp(UEFI_X64_FILE.into())))
            }
            Arch::EfiX64 | Arch::EfiX64Alt if available.uefi_x64_fallback => {
                Some((Rule::UefiX64IpxeEfi, Boot::Tftp(UEFI_X64_FALLBACK.into())))
            }
            Arch::EfiX64Http if available.uefi_x64 => Some((
                Rule::UefiHttp,
                Boot::Url(http.url(&format!("/{UEFI_X64_FILE}"))),
            )),
            Arch::EfiArm64 if available.uefi_arm64 => {
                Some((Rule::UefiArm64, Boot::Tftp(UEFI_ARM64_FILE.into())))
            }
            _ => None,
        };
        if let Some((rule, boot)) = hit {
            return Decision {
                rule,
                arch: Some(arch),
                boot,
            };
        }
    }
    let names: Vec<String> = arches.iter().map(|a| a.name()).collect();
    Decision {
        rule: Rule::NoBootFile,
        arch: arches.first().copied(),
        boot: Boot::Nothing(format!("no boot file for {}", names.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use expect_test::{expect, Expect};

    /// One row: `opt93 hex | opt60 | opt77 hex | 175? | available` → decision.
    fn check(rows: &[(&str, &str, &str, bool, Available)], expect: Expect) {
        let http = HttpBase {
            host: "10.0.0.1".into(),
            port: 8080,
        };
        let mut out = String::new();
        for (o93, o60, o77, o175, avail) in rows {
            let h93 = hex::decode(o93.replace(' ', "")).unwrap();
            let h77 = hex::decode(o77.replace(' ', "")).unwrap();
            let info = ClientInfo::from_options(
                (!o93.is_empty()).then_some(&h93[..]),
                (!o60.is_empty()).then_some(o60.as_bytes()),
                (!o77.is_empty()).then_some(&h77[..]),
                *o175,
            );
            let d = decide(&info, *avail, &http);
            out.push_str(&format!(
                "93=[{o93}] 60={o60:?} 77=[{o77}] 175={o175}: {d}\n"
            ));
        }
        expect.assert_eq(&out);
    }

    const ALL: Available = Available::ALL;
    const NO_SNP: Available = Available {
        bios: true,
        uefi_x64: false,
        uefi_x64_fallback: true,
        uefi_arm64: false,
    };
    const X86_ONLY: Available = Available {
        bios: true,
        uefi_x64: true,
        uefi_x64_fallback: true,
        uefi_arm64: false,
    };

    #[test]
    fn decision_table() {
        let pxe = "PXEClient:Arch:00007:UNDI:003016";
        check(
            &[
                ("0000", "PXEClient:Arch:00000:UNDI:002001", "", false, ALL),
                ("", "PXEClient", "", false, ALL),
                ("0006", "PXEClient:Arch:00006:UNDI:003016", "", false, ALL),
                ("0007", pxe, "", false, ALL),
                ("0009", "PXEClient:Arch:00009:UNDI:003016", "", false, ALL),
                ("0007", pxe, "", false, NO_SNP),
                ("000a", "PXEClient:Arch:00010:UNDI:003016", "", false, ALL),
                ("000b", "PXEClient:Arch:00011:UNDI:003016", "", false, ALL),
                (
                    "000b",
                    "PXEClient:Arch:00011:UNDI:003016",
                    "",
                    false,
                    X86_ONLY,
                ),
                ("0010", "HTTPClient:Arch:00016:UNDI:003001", "", false, ALL),
                ("000b 0007", pxe, "", false, X86_ONLY),
                ("0006 0000", pxe, "", false, ALL),
                (
                    "0000",
                    "PXEClient:Arch:00000:UNDI:002001",
                    "69505845",
                    false,
                    ALL,
                ),
                ("0007", pxe, "0469505845", false, ALL),
                ("0007", pxe, "03616263 0469505845", false, ALL),
                ("0007", pxe, "", true, ALL),
                ("", "", "69505845", false, ALL),
                ("", "", "", false, ALL),
                ("", "udhcp 1.35.0", "", false, ALL),
                ("0007", pxe, "0569505845", false, ALL),
            ],
            expect![[r#"
                93=[0000] 60="PXEClient:Arch:00000:UNDI:002001" 77=[] 175=false: rule bios-undionly arch 0 (bios) → tftp ipxe/undionly.kpxe
                93=[] 60="PXEClient" 77=[] 175=false: rule bios-undionly arch 0 (bios) → tftp ipxe/undionly.kpxe
                93=[0006] 60="PXEClient:Arch:00006:UNDI:003016" 77=[] 175=false: rule no-boot-file arch 6 (uefi-ia32) → nothing: no boot file for uefi-ia32
                93=[0007] 60="PXEClient:Arch:00007:UNDI:003016" 77=[] 175=false: rule uefi-x64-snponly arch 7 (uefi-x64) → tftp ipxe/snponly.efi
                93=[0009] 60="PXEClient:Arch:00009:UNDI:003016" 77=[] 175=false: rule uefi-x64-snponly arch 9 (uefi-x64) → tftp ipxe/snponly.efi
                93=[0007] 60="PXEClient:Arch:00007:UNDI:003016" 77=[] 175=false: rule uefi-x64-ipxe-efi arch 7 (uefi-x64) → tftp ipxe/ipxe.efi
                93=[000a] 60="PXEClient:Arch:00010:UNDI:003016" 77=[] 175=false: rule no-boot-file arch 10 (uefi-arm32) → nothing: no boot file for uefi-arm32
                93=[000b] 60="PXEClient:Arch:00011:UNDI:003016" 77=[] 175=false: rule uefi-arm64 arch 11 (uefi-arm64) → tftp ipxe/snponly-arm64.efi
                93=[000b] 60="PXEClient:Arch:00011:UNDI:003016" 77=[] 175=false: rule no-boot-file arch 11 (uefi-arm64) → nothing: no boot file for uefi-arm64
                93=[0010] 60="HTTPClient:Arch:00016:UNDI:003001" 77=[] 175=false: rule uefi-http arch 16 (uefi-x64-http) → http http://10.0.0.1:8080/ipxe/snponly.efi
                93=[000b 0007] 60="PXEClient:Arch:00007:UNDI:003016" 77=[] 175=false: rule uefi-x64-snponly arch 7 (uefi-x64) → tftp ipxe/snponly.efi
                93=[0006 0000] 60="PXEClient:Arch:00007:UNDI:003016" 77=[] 175=false: rule bios-undionly arch 0 (bios) → tftp ipxe/undionly.kpxe
                93=[0000] 60="PXEClient:Arch:00000:UNDI:002001" 77=[69505845] 175=false: rule ipxe-script arch 0 (bios) → http http://10.0.0.1:8080/boot.ipxe
                93=[0007] 60="PXEClient:Arch:00007:UNDI:003016" 77=[0469505845] 175=false: rule ipxe-script arch 7 (uefi-x64) → http http://10.0.0.1:8080/boot.ipxe
                93=[0007] 60="PXEClient:Arch:00007:UNDI:003016" 77=[03616263 0469505845] 175=false: rule ipxe-script arch 7 (uefi-x64) → http http://10.0.0.1:8080/boot.ipxe
                93=[0007] 60="PXEClient:Arch:00007:UNDI:003016" 77=[] 175=true: rule ipxe-script arch 7 (uefi-x64) → http http://10.0.0.1:8080/boot.ipxe
                93=[] 60="" 77=[69505845] 175=false: rule ipxe-script → http http://10.0.0.1:8080/boot.ipxe
                93=[] 60="" 77=[] 175=false: rule not-pxe → no boot options (plain DHCP)
                93=[] 60="udhcp 1.35.0" 77=[] 175=false: rule not-pxe → no boot options (plain DHCP)
                93=[0007] 60="PXEClient:Arch:00007:UNDI:003016" 77=[0569505845] 175=false: rule uefi-x64-snponly arch 7 (uefi-x64) → tftp ipxe/snponly.efi
            "#]],
        );
    }
}
