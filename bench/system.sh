#!/usr/bin/env bash
# System layer benchmark: the render image's system layer (images/render.toml:
# POV-Ray, ffmpeg, Blender, Python, and Debian's Essential set) built by
# `ombuild image` and by its Debian peer, debootstrap (minbase, the same
# packages included: what live-build runs underneath) followed by mksquashfs
# with the same compression (zstd, 128 KiB blocks). Each cold (empty package
# cache: downloads), warm (packages cached; ombuild makes the layer anew) and
# warm again (ombuild reuses its cached layer, debootstrap has no such
# thing). Prints both figures and the ratio, and the layer sizes. Needs root (debootstrap runs the packages'
# maintainer scripts in a chroot) and the host's apt sources for the mirror.
set -euo pipefail
cd "$(dirname "$0")/.."
[ "$(id -u)" = 0 ] || { echo "bench/system.sh: run as root (debootstrap needs it)" >&2; exit 1; }
for t in debootstrap mksquashfs; do
  command -v "$t" >/dev/null || { echo "bench/system.sh: $t is missing (scripts/install-packages)" >&2; exit 1; }
done
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-target}
cargo build --release -q -p builder --bin ombuild
work=$(mktemp -d /var/tmp/om-bench-system.XXXXXX)
trap 'rm -rf "$work"' EXIT
cp "$CARGO_TARGET_DIR/release/ombuild" images/render.toml images/render.lock "$work/"
agent=${AGENT:-/bin/busybox}

# The mirror apt uses here (deb822 or one-line sources), for debootstrap.
mirror=$(grep -hoE '^URIs:[[:space:]]*[^[:space:]]+' /etc/apt/sources.list.d/*.sources 2>/dev/null \
           | awk '{print $2}' | head -1)
[ -n "$mirror" ] || mirror=$(grep -hoE '^deb[[:space:]]+(\[[^]]*\][[:space:]]+)?[^[:space:]]+' \
           /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null | awk '{print $NF}' | head -1)
[ -n "$mirror" ] || { echo "bench/system.sh: no Debian mirror in /etc/apt" >&2; exit 1; }
include=$(sed -n 's/^system = \[\(.*\)\]/\1/p' images/render.toml | tr -d '" ' )

now() { date +%s%N; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }

ombuild() { # label; prints seconds
  local t0; t0=$(now)
  "$work/ombuild" image "$work/render.toml" --out "$work/om-$1" --cache "$work/om-cache" \
    --agent "$agent" 2>"$work/om-$1.log" || { cat "$work/om-$1.log" >&2; exit 1; }
  elapsed "$t0" "$(now)"
}

debootstrap_layer() { # label; prints seconds
  local t0 root="$work/db-$1"; t0=$(now)
  debootstrap --variant=minbase --include="$include" --cache-dir="$work/db-cache" \
    bookworm "$root" "$mirror" >"$work/db-$1.log" 2>&1 || { tail -30 "$work/db-$1.log" >&2; exit 1; }
  mksquashfs "$root" "$work/db-$1.squashfs" -comp zstd -b 131072 -no-progress -quiet \
    >>"$work/db-$1.log" 2>&1
  elapsed "$t0" "$(now)"
  rm -rf "$root"
}

mkdir -p "$work/db-cache"
om_cold=$(ombuild cold)
rm -rf "$work/om-cache/layers"
om_warm1=$(ombuild warm1)
om_warm2=$(ombuild warm2)
db_cold=$(debootstrap_layer cold)
db_warm1=$(debootstrap_layer warm1)
db_warm2=$(debootstrap_layer warm2)

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.1f×", b / a }'; }
mib() { awk -v s="$(stat -c %s "$1")" 'BEGIN { printf "%.0f MiB", s / 1048576 }'; }
same=yes
cmp -s "$work/om-cold/system.squashfs" "$work/om-warm1/system.squashfs" || same=no
echo "system layer of images/render.toml ($(nproc) cores; include: $include)"
printf '  %-14s %12s %24s %8s\n' "" "ombuild" "debootstrap+mksquashfs" "ratio"
printf '  %-14s %10s s %22s s %8s\n' "cold" "$om_cold" "$db_cold" "$(ratio "$om_cold" "$db_cold")"
printf '  %-14s %10s s %22s s %8s\n' "warm" "$om_warm1" "$db_warm1" "$(ratio "$om_warm1" "$db_warm1")"
printf '  %-14s %10s s %22s s %8s\n' "warm, reused" "$om_warm2" "$db_warm2" "$(ratio "$om_warm2" "$db_warm2")"
printf '  %-14s %12s %24s\n' "layer" "$(mib "$work/om-warm1/system.squashfs")" "$(mib "$work/db-warm1.squashfs")"
echo "  ombuild layers made twice byte-identical: $same (ombuild's time is the whole image: kernel, initramfs, ISO too)"
