#!/usr/bin/env bash
# Live-migration benchmark: jobs of 16, 64 and 256 MiB moved between two
# netbooted nodes by omctl migrate, against doing it by hand (criu dump,
# copy over TCP, criu restore) and the link's limit. Needs root and qemu
# (scripts/install-packages). See bench/migrate.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
export OM_QEMU_TESTS=1
exec cargo bench -p omcluster-bench --bench migrate "$@"
