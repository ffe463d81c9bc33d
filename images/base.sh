#!/usr/bin/env bash
# Makes the local base image (default local/debian-python:bookworm-<digest>) when it is
# missing: no registry is reachable here, so debootstrap a minimal Debian bookworm with
# BASE_PACKAGES (lib.sh: python3, python3-venv, ca-certificates, libgomp1) and
# `docker import` it. The root file system tarball
# is cached, so a pruned engine re-imports in seconds instead of re-bootstrapping.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  log "base: $BASE_IMAGE present"
  exit 0
fi
tarball=$IMAGES_CACHE/debian-python-$BASE_TAG.tar
if [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || apt_install debootstrap
  # Use the same Debian mirror as the host's apt (a mirror or proxy may be configured).
  mirror=${N1V1_DEBIAN_MIRROR:-$(grep -rhoE '^(URIs:|deb) +https?://[^ ]+/debian/?( |$)' \
    /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null | head -n1 | awk '{print $2}' || true)}
  root=$(mktemp -d "$IMAGES_CACHE/rootfs.XXXXXX")
  trap 'rm -rf "$root"' EXIT
  log "base: debootstrap bookworm minbase into $root (about a minute) ${mirror:+from $mirror}"
  debootstrap --variant=minbase --include="$BASE_PACKAGES" \
    bookworm "$root" ${mirror:+"$mirror"} >"$IMAGES_CACHE/debootstrap.log" 2>&1 \
    || { tail -n 20 "$IMAGES_CACHE/debootstrap.log" >&2; die "debootstrap failed"; }
  # Nothing in the images needs docs, man pages, translations or apt's downloads.
  rm -rf "$root"/usr/share/doc/* "$root"/usr/share/man/* "$root"/usr/share/info/* \
    "$root"/usr/share/locale/* "$root"/var/cache/apt/* "$root"/var/lib/apt/lists/* \
    "$root"/var/log/* "$root"/var/cache/debconf/*-old
  tar -C "$root" --numeric-owner -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
fi
log "base: docker import $tarball as $BASE_IMAGE"
docker import \
  --change 'ENV LANG=C.UTF-8' \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'CMD ["python3"]' \
  "$tarball" "$BASE_IMAGE" >/dev/null
log "base: $BASE_IMAGE ready ($(docker image inspect -f '{{.Size}}' "$BASE_IMAGE" | awk '{printf "%.0f MB", $1/1e6}'))"
