#!/usr/bin/env bash
# Image build benchmark: `ombuild image` of images/node.toml with an empty
# cache (cold: downloads the pinned packages), with a full cache (warm, run
# twice), and a re-resolution (`--update`: InRelease, Packages, resolver) on
# the full cache; then the artifact sizes. Release build. The agent in the
# image is a stand-in (AGENT=path, default the static /bin/busybox, about the
# size of omnode); the repository's lockfile is not touched.
# Goals: warm build under 10 s on 2 cores, initrd.img under 25 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p builder --bin ombuild
work=$(mktemp -d /tmp/om-bench-build.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "$CARGO_TARGET_DIR/release/ombuild" images/node.toml images/node.lock "$work/"
agent=${AGENT:-/bin/busybox}

secs() { # run "label" args… ; prints wall seconds
  local label=$1; shift
  local t0 t1
  t0=$(date +%s%N)
  if ! "$work/ombuild" image "$work/node.toml" --out "$work/out-$label" --cache "$work/cache" \
      --agent "$agent" "$@" 2>"$work/$label.log"; then
    echo "build $label failed:" >&2; cat "$work/$label.log" >&2; exit 1
  fi
  t1=$(date +%s%N)
  awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", (b - a) / 1e9 }'
}

cold=$(secs cold)
warm1=$(secs warm1)
warm2=$(secs warm2)
update=$(secs update --update)
same=yes
cmp -s "$work/out-warm1/initrd.img" "$work/out-cold/initrd.img" || same=no
cmp -s "$work/out-warm1/node.iso" "$work/out-warm2/node.iso" || same=no

size() { stat -c %s "$1"; }
mb() { awk -v s="$1" 'BEGIN { printf "%.1f MB", s / 1e6 }'; }
out="$work/out-warm1"
echo "ombuild image images/node.toml ($(nproc) cores, agent stand-in $agent)"
echo "  cold build (empty cache):   ${cold} s"
echo "  warm build (full cache):    ${warm1} s, ${warm2} s   (goal < 10 s)"
echo "  re-resolve (--update):      ${update} s"
echo "  outputs byte-identical:     ${same}"
for f in vmlinuz initrd.img ipxe/undionly.kpxe ipxe/snponly.efi ipxe/ipxe.efi node.iso; do
  printf '  %-22s %s\n' "$f" "$(mb "$(size "$out/$f")")"
done
echo "  initrd.img goal < 25 MB: $(mb "$(size "$out/initrd.img")")"
grep -h "image written" "$work/warm2.log" | sed 's/\x1b\[[0-9;]*m//g' | sed 's/^.*image written/  warm2 phases:/'
