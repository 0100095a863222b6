#!/usr/bin/env bash
# Agent benchmark: membership join/death times for 8, 16 and 32 agents (one per
# network namespace), and awk-burst makespan with placement vs round-robin vs
# one node. Needs root, iproute2 and awk. See bench/agent.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
# The agents under test: omnode and omctl, built in the profile cargo bench
# uses, where the benchmark looks for them (they belong to node-agent, whose
# binaries cargo hands only to node-agent's own benchmarks).
cargo build --profile bench -p node-agent -p omctl --bin omnode --bin omctl
exec cargo bench -p omcluster-bench --bench agent "$@"
