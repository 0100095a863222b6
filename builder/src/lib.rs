//! ombuild: builds the live node image from Debian packages.

pub mod iso;
