#!/usr/bin/env bash
# Builds a fuzz target with libFuzzer coverage instrumentation on stable Rust
# (no cargo-fuzz, no nightly: the sancov pass and its LLVM options are plain
# codegen flags) and runs it on a scratch copy of its seed corpus.
#   fuzz/run.sh TARGET [SECONDS]     e.g. fuzz/run.sh tftp_request 30
#   fuzz/run.sh build                builds every target, runs none
# A crash leaves its input under artifacts/ and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")"
target=${1:?usage: run.sh TARGET [SECONDS] | run.sh build}
secs=${2:-30}
triple=$(rustc -vV | sed -n 's/^host: //p')
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$PWD/target}
if [ "$target" = build ]; then
  selection=(--bins)
else
  selection=(--bin "$target")
fi
RUSTFLAGS="--cfg fuzzing -Cdebug-assertions -Cpasses=sancov-module \
 -Cllvm-args=-sanitizer-coverage-level=4 -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
 -Cllvm-args=-sanitizer-coverage-pc-table -Cllvm-args=-sanitizer-coverage-trace-compares" \
  cargo build --release --target "$triple" "${selection[@]}"
[ "$target" = build ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cp -r "corpus/$target/." "$work/"
mkdir -p artifacts
"$CARGO_TARGET_DIR/$triple/release/$target" -max_total_time="$secs" -artifact_prefix=artifacts/ "$work"
