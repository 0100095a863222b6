#!/usr/bin/env bash
# Web view benchmark: 64 agents (one per network namespace), 1,000 jobs and
# 5 headless Chromium windows on the process view; first render, update
# latency, the serving agent's CPU and memory, the history's memory, each
# beside the issue's goal. Needs root, iproute2, chromium and
# chromium-driver. See bench/web.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
# The agents under test, built in the profile cargo bench uses, where the
# benchmark looks for them (see bench/agent.sh).
cargo build --profile bench -p node-agent -p omctl --bin omnode --bin omctl
exec cargo bench -p omcluster-bench --bench web "$@"
