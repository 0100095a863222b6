//! `manifest.json` of an image directory: the contract type
//! [`contracts::image::Manifest`], which the builder fills in and writes
//! with a fixed field and entry order so it is as reproducible as the
//! artifacts.

pub use contracts::image::{Artifact, Manifest, ManifestPackage};
