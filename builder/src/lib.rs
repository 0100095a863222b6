//! ombuild: builds the omcluster live node image from Debian packages,
//! rootless and byte-reproducible.
//!
//! Modules, in the order a build uses them:
//! - [`recipe`]: the image recipe (`images/node.toml`), validated;
//! - [`mirror`]: finding the Debian mirror in the host's apt sources;
//! - [`openpgp`]: verifying `InRelease` against the archive keyring;
//! - [`debian`], [`version`]: Release/Packages parsing, dependency fields,
//!   Debian version ordering;
//! - [`resolve`]: the dependency closure (Depends, Pre-Depends,
//!   alternatives, Provides);
//! - [`lockfile`]: pinned packages beside the recipe;
//! - [`fetch`]: the download cache (parallel, resumable, verified);
//! - [`deb`]: `.deb` extraction (ar + tar.{xz,zst,gz}) into a [`tree`];
//! - [`elf`], [`modules`]: `.modinfo`, the module closure, `modules.dep`;
//! - [`initramfs`], [`cpio`]: the initramfs tree and its newc archive;
//! - [`iso`]: the hybrid BIOS/UEFI CD/USB image;
//! - [`install`]: what maintainer scripts would have set up in the system
//!   layer (alternatives), done without running them;
//! - [`squashfs`]: a tree as the compressed read-only system layer;
//! - [`manifest`]: the `manifest.json` of an image directory;
//! - [`image`]: the build from recipe to image directory, as a sequence of
//!   named stages, each in a submodule of `image`: **resolve** (`lock`:
//!   recipe, mirror, lockfile), **fetch** and **unpack** (`debs`: the
//!   locked `.deb`s into the cache, then into one tree per role),
//!   **kernel** (`kernel`: `vmlinuz` and the module selection),
//!   **initramfs** (`initrd`: programs, extra files, the compressed cpio),
//!   **boot kit** and **iso** (`media`: `ipxe/…` and the hybrid ISO) and
//!   **manifest** (`dir`: `manifest.json` and writing the image directory).

pub mod cpio;
pub mod deb;
pub mod debian;
pub mod elf;
pub mod fetch;
pub mod image;
pub mod initramfs;
pub mod install;
pub mod iso;
pub mod lockfile;
pub mod manifest;
pub mod mirror;
pub mod modules;
pub mod openpgp;
pub mod recipe;
pub mod resolve;
pub mod squashfs;
pub mod tree;
pub mod version;
