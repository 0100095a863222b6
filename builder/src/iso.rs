//! (owned by the ISO helper; to be written)
