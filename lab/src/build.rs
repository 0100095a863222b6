//! The static release build of the binaries that go into the image (`omnode`,
//! `omctl`, `omboot`, `ombuild`, and `omlab`), shared by every test that
//! needs them.
//!
//! `scripts/static-build` is the one place that knows the cargo command line;
//! [`static_binaries`] runs it under a file lock ([`locked`]), so tests
//! running at once in several processes build once and the others wait;
//! [`default_image`] and [`render_image`] build the images the same way.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use crate::error::{io_err, LabError};

/// The workspace root (the lab crate sits right below it).
pub fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("the lab crate is inside the workspace")
        .to_path_buf()
}

/// Runs `body` holding the exclusive lock `target/lab/<name>.lock`: one
/// process at a time builds a shared fixture, the others wait and then find
/// it built.
pub fn locked<T, E: From<LabError>>(
    name: &str,
    body: impl FnOnce() -> Result<T, E>,
) -> Result<T, E> {
    let dir = workspace().join("target/lab");
    fs::create_dir_all(&dir).map_err(io_err(format!("creating {}", dir.display())))?;
    let path = dir.join(format!("{name}.lock"));
    let file = File::create(&path).map_err(io_err(format!("creating {}", path.display())))?;
    let _lock = nix::fcntl::Flock::lock(file, nix::fcntl::FlockArg::LockExclusive).map_err(
        |(_, errno)| LabError::Io {
            what: format!("locking {}", path.display()),
            source: errno.into(),
        },
    )?;
    body()
}

/// Builds the static release binaries with `scripts/static-build` (under
/// [`locked`]) and returns the directory holding them.
pub fn static_binaries() -> Result<PathBuf, LabError> {
    locked("static", || {
        let script = workspace().join("scripts/static-build");
        let output = Command::new(&script)
            .current_dir(workspace())
            // Flags cargo passes a test would win over the script's RUSTFLAGS.
            .env_remove("CARGO_ENCODED_RUSTFLAGS")
            .stderr(Stdio::inherit())
            .output()
            .map_err(io_err(format!("running {}", script.display())))?;
        if !output.status.success() {
            return Err(LabError::Command {
                command: script.display().to_string(),
                stderr: format!("exited with {} (its output is above)", output.status),
            });
        }
        Ok(PathBuf::from(
            String::from_utf8_lossy(&output.stdout).trim().to_string(),
        ))
    })
}

/// Builds the default image (`images/node.toml`) into `target/e2e/image`
/// with the `ombuild` in `bin` (under [`locked`], so tests and benchmarks
/// running at once build it once) and returns the image directory.
pub fn default_image(bin: &Path) -> Result<PathBuf, LabError> {
    image(bin, "images/node.toml", "target/e2e/image")
}

/// Builds the render image (`images/render.toml`: POV-Ray, Blender,
/// ffmpeg and Python in a system layer) into `target/e2e/render`, like
/// [`default_image`].
pub fn render_image(bin: &Path) -> Result<PathBuf, LabError> {
    image(bin, "images/render.toml", "target/e2e/render")
}

/// Builds `recipe` (relative to the workspace) into `out` (likewise) with
/// the `ombuild` in `bin`, under [`locked`]; a warm build reuses what is
/// unchanged.
fn image(bin: &Path, recipe: &str, out: &str) -> Result<PathBuf, LabError> {
    locked("image", || {
        let out = workspace().join(out);
        let ombuild = bin.join("ombuild");
        let status = Command::new(&ombuild)
            .current_dir(workspace())
            .arg("image")
            .arg(workspace().join(recipe))
            .arg("--out")
            .arg(&out)
            .status()
            .map_err(io_err(format!("running {}", ombuild.display())))?;
        if !status.success() {
            return Err(LabError::Command {
                command: format!("{} image {recipe}", ombuild.display()),
                stderr: format!("exited with {status} (its output is above)"),
            });
        }
        Ok(out)
    })
}

/// A statically linked `omnode`: `OM_STATIC_OMNODE` if set, else the one
/// [`static_binaries`] builds. Fails if it is dynamically linked.
pub fn static_omnode() -> Result<PathBuf, LabError> {
    let bin = match std::env::var_os("OM_STATIC_OMNODE") {
        Some(path) => PathBuf::from(path),
        None => static_binaries()?.join("omnode"),
    };
    let elf = fs::read(&bin).map_err(io_err(format!("reading {}", bin.display())))?;
    if has_interpreter(&elf) {
        return Err(LabError::Command {
            command: "the static build".into(),
            stderr: format!("{} is dynamically linked", bin.display()),
        });
    }
    Ok(bin)
}

/// Whether a 64-bit little-endian ELF file asks for a program interpreter
/// (PT_INTERP), i.e. is dynamically linked. Panics on anything else.
pub fn has_interpreter(elf: &[u8]) -> bool {
    assert!(
        elf.starts_with(b"\x7fELF\x02\x01"),
        "not a 64-bit LE ELF file"
    );
    let u16_at = |o: usize| u16::from_le_bytes([elf[o], elf[o + 1]]) as usize;
    let phoff = u64::from_le_bytes(elf[0x20..0x28].try_into().unwrap()) as usize;
    let (phentsize, phnum) = (u16_at(0x36), u16_at(0x38));
    (0..phnum).any(|i| {
        let p = phoff + i * phentsize;
        u32::from_le_bytes(elf[p..p + 4].try_into().unwrap()) == 3
    })
}
