//! (owned by the TFTP/HTTP helper; to be written)
