#!/usr/bin/env bash
# Build a local Python 3.11 base image without any image registry:
#   debootstrap --variant=minbase bookworm (Debian 12: python3 is 3.11) → tar → docker import.
# For machines that cannot pull python:3.11-slim. The result is used as
#   docker build --build-arg BASE_IMAGE=recall-local/python:3.11-bookworm …
# Packages come from the Debian mirror the host's apt already uses
# (scripts/apt_sources_for_image.py reads it), and the image's apt sources point there too.
#
# Cached: the root filesystem tarball is kept under $CACHE_DIR and the image carries a label
# with a hash of this script and the apt sources; nothing is rebuilt while both match.
#
# Usage: scripts/build_base_image.sh [TAG]      (root; needs debootstrap and a Docker engine)
# Env:   CACHE_DIR (default var/cache/containers), DOCKER (default docker), FORCE=1 rebuilds.
set -euo pipefail
cd "$(dirname "$0")/.."

TAG=${1:-recall-local/python:3.11-bookworm}
CACHE_DIR=${CACHE_DIR:-var/cache/containers}
DOCKER=${DOCKER:-docker}
SUITE=bookworm
# python3-venv: the images build /opt/venv with `python -m venv`; python-is-python3: `python`
# exists as in python:3.11-slim; ca-certificates: HTTPS package indexes; tini: PID 1.
PACKAGES=python3,python3-venv,python-is-python3,ca-certificates,tini

sources=$(python3 scripts/apt_sources_for_image.py)
mirror=$(python3 scripts/apt_sources_for_image.py --mirror)
key=$( { cat "$0"; echo "$sources"; echo "$PACKAGES"; } | sha256sum | cut -c1-16)
tarball="$CACHE_DIR/debian-$SUITE-python-$key.tar"

have=$($DOCKER image inspect -f '{{ index .Config.Labels "org.recall.base-key" }}' "$TAG" 2>/dev/null || true)
if [ "${FORCE:-0}" != 1 ] && [ "$have" = "$key" ]; then
  echo "base image $TAG is up to date ($key)"
  exit 0
fi

mkdir -p "$CACHE_DIR"
if [ "${FORCE:-0}" = 1 ] || [ ! -s "$tarball" ]; then
  command -v debootstrap >/dev/null || { echo "error: debootstrap is missing (apt-get install debootstrap)" >&2; exit 1; }
  rootfs=$(mktemp -d "${TMPDIR:-/tmp}/recall-rootfs.XXXXXX")
  trap 'rm -rf "$rootfs"' EXIT
  echo "debootstrap --variant=minbase $SUITE from $mirror (about a minute)…"
  debootstrap --variant=minbase --include="$PACKAGES" "$SUITE" "$rootfs" "$mirror" \
    > "$CACHE_DIR/debootstrap.log" 2>&1 \
    || { tail -20 "$CACHE_DIR/debootstrap.log" >&2; echo "error: debootstrap failed (log: $CACHE_DIR/debootstrap.log)" >&2; exit 1; }
  printf '%s\n' "$sources" > "$rootfs/etc/apt/sources.list"
  rm -f "$rootfs"/etc/apt/sources.list.d/*
  # Like Docker's official Debian images: no docs/man pages, no recommends, no apt cache.
  cat > "$rootfs/etc/dpkg/dpkg.cfg.d/docker-slim" <<'CFG'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
CFG
  printf 'APT::Install-Recommends "false";\nAPT::Install-Suggests "false";\n' \
    > "$rootfs/etc/apt/apt.conf.d/90-docker-slim"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/archives/*.deb \
         "$rootfs"/usr/share/doc/* "$rootfs"/usr/share/man/* "$rootfs"/usr/share/locale/*
  tar --numeric-owner -C "$rootfs" -cf "$tarball.tmp" .
  mv "$tarball.tmp" "$tarball"
  rm -rf "$rootfs"; trap - EXIT
  # Older tarballs of other keys are of no use any more.
  find "$CACHE_DIR" -maxdepth 1 -name "debian-$SUITE-python-*.tar" ! -name "$(basename "$tarball")" -delete
fi

echo "docker import $tarball → $TAG"
$DOCKER import \
  --change 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  --change 'ENV LANG=C.UTF-8' \
  --change "LABEL org.recall.base-key=$key" \
  --change 'CMD ["python3"]' \
  "$tarball" "$TAG" >/dev/null
$DOCKER run --rm "$TAG" python -c 'import sys, venv; assert sys.version_info[:2] == (3, 11), sys.version'
echo "base image $TAG ready ($($DOCKER image inspect -f '{{.Size}}' "$TAG" | awk '{printf "%.0f MB", $1/1e6}'))"
