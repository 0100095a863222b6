//! Confinement of requested file names to the boot root.
//!
//! Two layers. [`sanitize`] is pure and refuses names that are wrong on their
//! face: empty, too long, containing NUL or backslash, a `..` component, or an
//! absolute path. One leading `/` is stripped first, because PXE firmware and
//! pxelinux commonly ask for `/ipxe/undionly.kpxe`; the name is then taken
//! relative to the root (as tftpd-hpa does with `-s`), so `/etc/passwd` looks
//! for `ROOT/etc/passwd`. A second leading `/` (`//etc/passwd`) is refused.
//! Names are bytes: `%2e%2e` is a literal file name, never decoded.
//!
//! [`open_confined`] then resolves symlinks (`canonicalize`), checks that the
//! result is still under the canonical root, opens it without following a final
//! symlink, requires a regular file, and re-checks the path of the opened
//! descriptor (`/proc/self/fd`) so a rename race cannot lead out of the root.

use std::ffi::OsStr;
use std::fs::File;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Component, Path, PathBuf};

use super::packet::ErrorCode;

/// Longest accepted file name, bytes.
pub const MAX_NAME: usize = 1024;
/// Longest accepted path component, bytes.
pub const MAX_COMPONENT: usize = 255;

/// Why a requested name is refused.
#[derive(Debug, thiserror::Error)]
pub enum PathError {
    /// Nothing left after stripping the leading `/`.
    #[error("empty file name")]
    Empty,
    /// Longer than [`MAX_NAME`] or with a component longer than [`MAX_COMPONENT`].
    #[error("file name too long ({0} bytes)")]
    TooLong(usize),
    /// Contains a NUL byte.
    #[error("file name contains a NUL byte")]
    Nul,
    /// Contains a backslash (a DOS separator some clients use to escape).
    #[error("file name contains a backslash")]
    Backslash,
    /// Has a `..` component.
    #[error("file name has a '..' component")]
    ParentDir,
    /// Absolute even after stripping one leading `/`.
    #[error("absolute file name")]
    Absolute,
    /// Does not exist under the root.
    #[error("file not found")]
    NotFound,
    /// Resolves (through symlinks) to somewhere outside the root.
    #[error("file resolves outside the boot root")]
    OutsideRoot,
    /// Exists but is not a regular file.
    #[error("not a regular file")]
    NotAFile,
    /// Any other I/O error.
    #[error("cannot open file: {0}")]
    Io(#[source] std::io::Error),
}

impl PathError {
    /// The TFTP error code to answer with.
    pub fn code(&self) -> ErrorCode {
        match self {
            PathError::NotFound => ErrorCode::FileNotFound,
            PathError::Io(_) => ErrorCode::NotDefined,
            _ => ErrorCode::AccessViolation,
        }
    }
}

/// Checks a requested name and turns it into a relative path (pure).
pub fn sanitize(name: &[u8]) -> Result<PathBuf, PathError> {
    if name.len() > MAX_NAME {
        return Err(PathError::TooLong(name.len()));
    }
    if name.contains(&0) {
        return Err(PathError::Nul);
    }
    if name.contains(&b'\\') {
        return Err(PathError::Backslash);
    }
    let name = name.strip_prefix(b"/").unwrap_or(name);
    if name.starts_with(b"/") {
        return Err(PathError::Absolute);
    }
    let mut out = PathBuf::new();
    for comp in name.split(|&b| b == b'/') {
        if comp.len() > MAX_COMPONENT {
            return Err(PathError::TooLong(comp.len()));
        }
        match comp {
            b"" | b"." => {}
            b".." => return Err(PathError::ParentDir),
            c => out.push(OsStr::from_bytes(c)),
        }
    }
    // Belt and braces: the loop above only pushes normal components.
    if out.as_os_str().is_empty() {
        return Err(PathError::Empty);
    }
    if !out.components().all(|c| matches!(c, Component::Normal(_))) {
        return Err(PathError::ParentDir);
    }
    Ok(out)
}

fn io_err(e: std::io::Error) -> PathError {
    match e.kind() {
        std::io::ErrorKind::NotFound => PathError::NotFound,
        _ if e.raw_os_error() == Some(libc::ENOTDIR) => PathError::NotFound,
        _ if e.raw_os_error() == Some(libc::ELOOP) => PathError::OutsideRoot,
        _ => PathError::Io(e),
    }
}

/// Opens `name` under `root`, which must already be canonical. Returns the open
/// file, its canonical path and its size.
pub fn open_confined(root: &Path, name: &[u8]) -> Result<(File, PathBuf, u64), PathError> {
    let rel = sanitize(name)?;
    let real = std::fs::canonicalize(root.join(&rel)).map_err(io_err)?;
    if !real.starts_with(root) {
        return Err(PathError::OutsideRoot);
    }
    let meta = std::fs::metadata(&real).map_err(io_err)?;
    if !meta.is_file() {
        return Err(PathError::NotAFile);
    }
    let file = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(&real)
        .map_err(io_err)?;
    let meta = file.metadata().map_err(PathError::Io)?;
    if !meta.is_file() {
        return Err(PathError::NotAFile);
    }
    use std::os::fd::AsRawFd;
    if let Ok(opened) = std::fs::read_link(format!("/proc/self/fd/{}", file.as_raw_fd())) {
        if !opened.starts_with(root) {
            return Err(PathError::OutsideRoot);
        }
    }
    Ok((file, real, meta.len()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sanitize_table() {
        let ok = [
            ("ipxe/undionly.kpxe", "ipxe/undionly.kpxe"),
            ("/ipxe/undionly.kpxe", "ipxe/undionly.kpxe"),
            ("./vmlinuz", "vmlinuz"),
            ("ipxe//snponly.efi", "ipxe/snponly.efi"),
            ("%2e%2e/etc/passwd", "%2e%2e/etc/passwd"),
            ("...", "..."),
            ("..foo", "..foo"),
        ];
        for (input, want) in ok {
            assert_eq!(
                sanitize(input.as_bytes()).unwrap(),
                Path::new(want),
                "{input}"
            );
        }
        let bad = [
            "",
            "/",
            ".",
            "..",
            "../etc/passwd",
            "a/../../b",
            "a/..",
            "//etc/passwd",
            "..\\etc",
            "a\0b",
        ];
        for input in bad {
            assert!(sanitize(input.as_bytes()).is_err(), "{input:?} accepted");
        }
        assert!(matches!(
            sanitize(&[b'a'; 2000]),
            Err(PathError::TooLong(2000))
        ));
        assert!(matches!(
            sanitize(&[b'a'; 300]),
            Err(PathError::TooLong(300))
        ));
    }
}
