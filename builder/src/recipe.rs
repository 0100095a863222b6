//! The image recipe (`images/node.toml`): what goes into the live image.
//!
//! Two layers, as elsewhere in omcluster: [`wire`] structs that mirror the
//! TOML with `deny_unknown_fields`, and the validated [`Recipe`] the builder
//! uses. Errors carry the line and the key. The format is documented in
//! `images/README.md`.

use std::path::{Path, PathBuf};

/// The CPU architecture of the image. The one place where the recipe's
/// name for it meets Debian's name for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Architecture {
    /// 64-bit x86 (Debian `amd64`).
    X86_64,
    /// 64-bit ARM (Debian `arm64`).
    Aarch64,
}

impl Architecture {
    /// Parse the recipe's name (`x86_64`, `aarch64`; Debian's names accepted too).
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "x86_64" | "amd64" => Some(Architecture::X86_64),
            "aarch64" | "arm64" => Some(Architecture::Aarch64),
            _ => None,
        }
    }

    /// Debian's architecture name.
    pub fn debian(self) -> &'static str {
        match self {
            Architecture::X86_64 => "amd64",
            Architecture::Aarch64 => "arm64",
        }
    }

    /// The UEFI architecture suffix of boot loader file names
    /// (`systemd-boot<suffix>.efi`, `BOOT<SUFFIX>.EFI`).
    pub fn efi_suffix(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x64",
            Architecture::Aarch64 => "aa64",
        }
    }

    /// The multiarch tuple directory (`lib/<tuple>`).
    pub fn multiarch(self) -> &'static str {
        match self {
            Architecture::X86_64 => "x86_64-linux-gnu",
            Architecture::Aarch64 => "aarch64-linux-gnu",
        }
    }
}

/// Compression of the initramfs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    /// zstd (the default).
    Zstd,
    /// gzip.
    Gzip,
}

/// An extra file placed into the initramfs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExtraFile {
    /// Absolute path in the image.
    pub path: String,
    /// The contents.
    pub contents: FileSource,
    /// Permission bits.
    pub mode: u32,
}

/// Where an extra file's contents come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileSource {
    /// Inline text from the recipe.
    Text(String),
    /// A file on the build host, relative to the recipe's directory.
    Source(PathBuf),
}

/// A validated recipe.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recipe {
    /// Image name (the ISO is `<name>.iso`).
    pub name: String,
    /// Debian suite (`bookworm`).
    pub suite: String,
    /// Archive components to read (`main`).
    pub components: Vec<String>,
    /// Target architecture.
    pub architecture: Architecture,
    /// Mirror URL if the recipe pins one.
    pub mirror: Option<String>,
    /// Kernel package (`linux-image-amd64`).
    pub kernel_package: String,
    /// Named module sets (see [`crate::modules::SETS`]).
    pub module_sets: Vec<String>,
    /// Extra module globs (paths below `lib/modules/<kver>/` or module names).
    pub modules: Vec<String>,
    /// Packages unpacked into the initramfs (with their dependencies).
    pub initramfs_packages: Vec<String>,
    /// Packages fetched for the boot kit and the ISO, not put into the initramfs.
    pub boot_packages: Vec<String>,
    /// Packages of the system layer (`system.squashfs`, with their
    /// dependencies); none: the image has no system layer.
    pub system_packages: Vec<String>,
    /// Dependencies not followed (see [`crate::resolve`]).
    pub prune: Vec<String>,
    /// Globs of initramfs package files left out of the initramfs (paths
    /// without the leading `/`): libraries no program there loads.
    pub exclude: Vec<String>,
    /// Extra files.
    pub files: Vec<ExtraFile>,
    /// Default kernel command line.
    pub cmdline: String,
    /// Initramfs compression.
    pub compression: Compression,
    /// Timestamp every file is clamped to (overridden by `SOURCE_DATE_EPOCH`).
    pub epoch: u64,
    /// The recipe file's directory (for `source` files).
    pub dir: PathBuf,
}

/// Errors from reading a recipe.
#[derive(Debug, thiserror::Error)]
pub enum RecipeError {
    /// The file could not be read.
    #[error("cannot read recipe {path}: {source}")]
    Read {
        /// The recipe path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// TOML syntax error, unknown key or wrong type.
    #[error("{path}:{line}: {message}")]
    Syntax {
        /// The recipe path.
        path: PathBuf,
        /// 1-based line.
        line: usize,
        /// The parser's message (names the key).
        message: String,
    },
    /// A value is not acceptable.
    #[error("{path}:{line}: key {key}: {message}")]
    Invalid {
        /// The recipe path.
        path: PathBuf,
        /// 1-based line of the key (0 if unknown).
        line: usize,
        /// The key.
        key: String,
        /// What is wrong.
        message: String,
    },
}

/// The TOML shape of a recipe.
pub mod wire {
    use serde::Deserialize;

    /// Top level.
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Recipe {
        /// The image name (`<name>.iso`).
        pub name: String,
        /// The Debian suite, e.g. `bookworm`.
        pub suite: String,
        /// Archive components (default `main`).
        #[serde(default)]
        pub components: Option<Vec<String>>,
        /// `x86_64` (Debian amd64) or `aarch64` (arm64).
        pub architecture: String,
        /// A mirror URL instead of the host's apt sources.
        #[serde(default)]
        pub mirror: Option<String>,
        /// The default kernel command line.
        #[serde(default)]
        pub cmdline: Option<String>,
        /// The initramfs compression (`zstd` or `gzip`).
        #[serde(default)]
        pub compression: Option<String>,
        /// The mtime clamp (seconds since 1970); `SOURCE_DATE_EPOCH` overrides it.
        #[serde(default)]
        pub epoch: Option<u64>,
        /// The `[kernel]` table.
        #[serde(default)]
        pub kernel: Kernel,
        /// The `[packages]` table.
        #[serde(default)]
        pub packages: Packages,
        /// The `[[files]]` entries.
        #[serde(default)]
        pub files: Vec<File>,
    }

    /// `[kernel]`
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Kernel {
        /// The kernel package (default `linux-image-<debian arch>`).
        #[serde(default)]
        pub package: Option<String>,
        /// Named sets of kernel modules to include.
        #[serde(default)]
        pub module_sets: Vec<String>,
        /// Extra module globs to include.
        #[serde(default)]
        pub modules: Vec<String>,
    }

    /// `[packages]`
    #[derive(Debug, Default, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct Packages {
        /// Packages unpacked into the initramfs.
        #[serde(default)]
        pub initramfs: Vec<String>,
        /// Packages that supply the boot kit (iPXE, ISOLINUX, systemd-boot).
        #[serde(default)]
        pub boot: Vec<String>,
        /// Packages of the system layer.
        #[serde(default)]
        pub system: Vec<String>,
        /// Dependencies left out of the resolution.
        #[serde(default)]
        pub prune: Vec<String>,
        /// Files of the initramfs packages left out of the initramfs.
        #[serde(default)]
        pub exclude: Vec<String>,
    }

    /// `[[files]]`
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    pub struct File {
        /// Where the file goes in the initramfs.
        pub path: String,
        /// The file's contents, inline.
        #[serde(default)]
        pub text: Option<String>,
        /// A file to copy, relative to the recipe.
        #[serde(default)]
        pub source: Option<String>,
        /// Its permission bits.
        #[serde(default)]
        pub mode: Option<u32>,
    }
}

/// 1-based line of a byte offset.
fn line_of(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())].matches('\n').count() + 1
}

/// Line where `key = …` first appears (best effort, for value errors).
fn line_of_key(text: &str, key: &str) -> usize {
    let leaf = key.rsplit('.').next().unwrap_or(key);
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with(leaf) && l[leaf.len()..].trim_start().starts_with('=')
        })
        .map(|i| i + 1)
        .unwrap_or(0)
}

impl Recipe {
    /// Read and validate a recipe file.
    pub fn load(path: &Path) -> Result<Self, RecipeError> {
        let text = std::fs::read_to_string(path).map_err(|source| RecipeError::Read {
            path: path.to_path_buf(),
            source,
        })?;
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::parse(path, &text, dir)
    }

    /// Parse and validate recipe text; `path` is used in errors.
    pub fn parse(path: &Path, text: &str, dir: PathBuf) -> Result<Self, RecipeError> {
        let w: wire::Recipe = toml::from_str(text).map_err(|e| RecipeError::Syntax {
            path: path.to_path_buf(),
            line: e.span().map(|s| line_of(text, s.start)).unwrap_or(0),
            message: e.message().trim().to_string(),
        })?;
        let invalid = |key: &str, message: String| RecipeError::Invalid {
            path: path.to_path_buf(),
            line: line_of_key(text, key),
            key: key.to_string(),
            message,
        };
        let nonempty = |key: &str, v: &str| {
            if v.trim().is_empty() {
                Err(invalid(key, "must not be empty".into()))
            } else {
                Ok(())
            }
        };
        nonempty("name", &w.name)?;
        if w.name.contains(['/', '\\']) || w.name.starts_with('.') {
            return Err(invalid(
                "name",
                format!("{:?} is not usable as a file name", w.name),
            ));
        }
        nonempty("suite", &w.suite)?;
        let architecture = Architecture::parse(&w.architecture).ok_or_else(|| {
            invalid(
                "architecture",
                format!(
                    "unknown architecture {:?} (x86_64, aarch64)",
                    w.architecture
                ),
            )
        })?;
        if let Some(m) = &w.mirror {
            if !m.starts_with("http://") {
                return Err(invalid("mirror", format!("{m:?} must be an http:// URL")));
            }
        }
        let compression = match w.compression.as_deref() {
            None | Some("zstd") => Compression::Zstd,
            Some("gzip") => Compression::Gzip,
            Some(other) => {
                return Err(invalid(
                    "compression",
                    format!("unknown compression {other:?} (zstd, gzip)"),
                ))
            }
        };
        for set in &w.kernel.module_sets {
            if !crate::modules::SETS.iter().any(|(n, _)| n == set) {
                let known: Vec<&str> = crate::modules::SETS.iter().map(|(n, _)| *n).collect();
                return Err(invalid(
                    "kernel.module_sets",
                    format!("unknown module set {set:?} ({})", known.join(", ")),
                ));
            }
        }
        let mut files = Vec::new();
        for f in w.files {
            if !f.path.starts_with('/') || crate::tree::normalize(&f.path).is_err() {
                return Err(invalid(
                    "path",
                    format!("{:?} must be an absolute path without ..", f.path),
                ));
            }
            let contents = match (f.text, f.source) {
                (Some(t), None) => FileSource::Text(t),
                (None, Some(s)) => FileSource::Source(PathBuf::from(s)),
                _ => {
                    return Err(invalid(
                        "path",
                        format!("file {} needs exactly one of text or source", f.path),
                    ))
                }
            };
            let mode = f.mode.unwrap_or(0o644);
            if mode > 0o7777 {
                return Err(invalid(
                    "mode",
                    format!("{mode:o} is not a permission mode"),
                ));
            }
            files.push(ExtraFile {
                path: f.path,
                contents,
                mode,
            });
        }
        Ok(Recipe {
            name: w.name,
            suite: w.suite,
            components: w.components.unwrap_or_else(|| vec!["main".into()]),
            architecture,
            mirror: w.mirror,
            kernel_package: w
                .kernel
                .package
                .unwrap_or_else(|| format!("linux-image-{}", architecture.debian())),
            module_sets: w.kernel.module_sets,
            modules: w.kernel.modules,
            initramfs_packages: w.packages.initramfs,
            boot_packages: w.packages.boot,
            system_packages: w.packages.system,
            prune: w.packages.prune,
            exclude: w
                .packages
                .exclude
                .iter()
                .map(|g| g.trim_start_matches('/').to_string())
                .collect(),
            files,
            cmdline: w.cmdline.unwrap_or_else(|| DEFAULT_CMDLINE.to_string()),
            compression,
            epoch: w.epoch.unwrap_or(0),
            dir,
        })
    }

    /// Every root package, kernel first.
    pub fn roots(&self) -> Vec<String> {
        let mut v = vec![self.kernel_package.clone()];
        v.extend(self.initramfs_packages.iter().cloned());
        v.extend(self.boot_packages.iter().cloned());
        v.extend(self.system_packages.iter().cloned());
        v
    }
}

/// The default kernel command line: kernel messages and the init's output
/// on both the screen and the first serial port (the last `console=` is
/// `/dev/console`, so serial gets the init's output), quiet kernel.
pub const DEFAULT_CMDLINE: &str = "console=tty0 console=ttyS0,115200 quiet";
