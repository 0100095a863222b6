#!/usr/bin/env bash
# Boot benchmark: one 1 GiB machine netboots the default image and the render
# image (with its system layer) in turn; time to joined, layer mount time and
# memory in use after boot. Needs root and qemu (scripts/install-packages).
# See bench/boot.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
export OM_QEMU_TESTS=1
exec cargo bench -p omcluster-bench --bench boot "$@"
