#!/usr/bin/env bash
# Shared-tree benchmark: a head booted from the ISO serves /cluster
# (nfs-ganesha, as omboot runs it) and, beside it, the kernel's nfsd; a
# netbooted node times sequential and small-file work on both and raw TCP.
# Needs root and qemu (scripts/install-packages). See bench/share.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
export OM_QEMU_TESTS=1
exec cargo bench -p omcluster-bench --bench share "$@"
