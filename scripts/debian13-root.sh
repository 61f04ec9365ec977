#!/usr/bin/env bash
# Build (once) a Debian 13 "trixie" root with podman 5.x, skopeo, crun and fuse-overlayfs, and print its path.
#
#   scripts/debian13-root.sh [ROOT]        (or TOCFS_DEBIAN13_ROOT=ROOT; default /var/cache/tocfs/debian13-root)
#
# The podman 5 end-to-end suite runs `chroot ROOT podman …` (docs/podman.md, "podman ≥ 5.1"). The root is cached:
# a marker file is written only after debootstrap succeeded and the tools answered, so a root without the marker
# (an interrupted or failed build) is removed and built again. Concurrent callers are serialised with flock.
# Needs root, debootstrap and Debian's mirror (deb.debian.org, or TOCFS_DEBIAN_MIRROR).
set -euo pipefail

root="${1:-${TOCFS_DEBIAN13_ROOT:-/var/cache/tocfs/debian13-root}}"
mirror="${TOCFS_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
include="podman,skopeo,crun,fuse-overlayfs,ca-certificates"
# Bump when the package set or the post-install setup changes, so cached roots get rebuilt.
recipe="v1 trixie minbase ${include}"
marker="${root}.ready"

die() { echo "debian13-root: $*" >&2; exit 1; }

[ "$(id -u)" -eq 0 ] || die "must run as root (debootstrap and chroot need it)"
case "$root" in /*) ;; *) die "root path must be absolute, got '$root'";; esac
[ "$root" != "/" ] || die "refusing to use / as the Debian 13 root"
command -v debootstrap >/dev/null || die "debootstrap is not installed (apt-get install debootstrap; npm test installs it when run as root)"

mkdir -p "$(dirname "$root")"
exec 9>"${root}.lock"
flock -w 900 9 || die "another build of $root holds ${root}.lock for more than 15 minutes"

ready() { [ -f "$marker" ] && [ "$(cat "$marker")" = "$recipe" ] && [ -x "$root/usr/bin/podman" ]; }

if ready; then
  echo "$root"
  exit 0
fi

# Anything still mounted below a half-built root (debootstrap mounts proc/sys there; an interrupted test may have
# left bind mounts) must go before the tree is deleted, or rm would descend into the host's /proc, /sys or /dev.
unmount_below() {
  local m
  # /proc/mounts escapes spaces as \040; the paths used here have none.
  awk -v r="$1" '$2 == r || index($2, r "/") == 1 { print $2 }' /proc/mounts | sort -r | while read -r m; do
    umount -l "$m" 2>/dev/null || true
  done
}

unmount_below "$root"
if [ -e "$root" ]; then
  echo "debian13-root: removing incomplete root $root" >&2
  # --one-file-system: never follow into a mount that could not be unmounted.
  rm -rf --one-file-system "$root"
fi
rm -f "$marker"

log="${root}.debootstrap.log"
echo "debian13-root: debootstrap trixie into $root from $mirror (about 2 minutes)" >&2
if ! debootstrap --variant=minbase --include="$include" trixie "$root" "$mirror" >"$log" 2>&1; then
  tail -n 30 "$log" >&2 || true
  [ -f "$root/debootstrap/debootstrap.log" ] && tail -n 30 "$root/debootstrap/debootstrap.log" >&2
  unmount_below "$root"
  rm -rf --one-file-system "$root"
  die "debootstrap of Debian 13 (trixie) from $mirror failed (log above; full log in $log). The podman ≥ 5.1 suite cannot run without this root: check that $mirror is reachable."
fi
unmount_below "$root"

# Sanity: the tools the suite uses must run inside the root (podman needs /proc even for --version). The proc
# mount lives in a private mount namespace and disappears with it.
version="$(unshare -m --propagation private sh -c 'mount -t proc proc "$1/proc" && chroot "$1" podman --version && chroot "$1" skopeo --version >/dev/null' sh "$root" 2>&1)" \
  || die "podman/skopeo do not run in $root: $version"

printf '%s' "$recipe" >"$marker"
echo "debian13-root: ready ($version)" >&2
echo "$root"
