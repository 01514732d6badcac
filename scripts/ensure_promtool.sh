#!/usr/bin/env bash
# Make sure promtool (Prometheus's rule checker, for the alert rules' tests) is on hand: the
# system's, else the one in Debian's prometheus package, unpacked into DEST (default
# .venv/bin) without installing the package, which would start a Prometheus on :9090.
set -euo pipefail
dest=$(realpath -m "${1:-.venv/bin}")
if command -v promtool >/dev/null 2>&1 || [ -x "$dest/promtool" ]; then
  exit 0
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && command -v sudo >/dev/null 2>&1 && SUDO="sudo"
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
cd "$tmp"
echo "fetching promtool from Debian's prometheus package (one time)…"
if ! apt-get download prometheus >/dev/null 2>&1; then
  # No package lists yet (a fresh machine): fetch them, then try again.
  if ! { $SUDO apt-get update -qq && apt-get download prometheus >/dev/null 2>&1; }; then
    echo "error: could not download Debian's prometheus package for promtool;" >&2
    echo "       install it (apt-get install prometheus) and run again." >&2
    exit 1
  fi
fi
dpkg-deb -x prometheus_*.deb unpacked
mkdir -p "$dest"
install -m 0755 unpacked/usr/bin/promtool "$dest/promtool"
"$dest/promtool" --version >/dev/null
