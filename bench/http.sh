#!/usr/bin/env bash
# HTTP benchmark: 50 concurrent curl clients fetching the initrd, beside busybox
# httpd. Packages: curl busybox-static. See bench/http.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p omcluster-bench --bench http "$@"
