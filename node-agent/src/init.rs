//! (owned by the init helper; to be written)
