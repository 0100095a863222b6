//! (owned by the DHCP helper; to be written)
