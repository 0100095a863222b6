#!/usr/bin/env bash
# TFTP benchmark against tftpd-hpa and dnsmasq (needs root for dnsmasq's netns).
# Packages: atftp curl tftpd-hpa dnsmasq-base iproute2. See bench/tftp.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p omcluster-bench --bench tftp "$@"
