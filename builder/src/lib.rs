//! ombuild: builds the live node image.
