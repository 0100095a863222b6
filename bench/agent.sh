#!/usr/bin/env bash
# Agent benchmark: membership join/death times for 8, 16 and 32 agents (one per
# network namespace), and awk-burst makespan with placement vs round-robin vs
# one node. Needs root, iproute2 and awk. See bench/agent.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
exec cargo bench -p node-agent --bench agent "$@"
