#!/usr/bin/env bash
# Balancing benchmark: twelve equal CPU-bound jobs all started on one of
# four netbooted nodes, spread by migration, against all staying there and
# against the ideal (an even spread). Needs root and qemu
# (scripts/install-packages). See bench/balance.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
export OM_QEMU_TESTS=1
exec cargo bench -p omcluster-bench --bench balance "$@"
