#!/usr/bin/env bash
# Make sure Debian's redis-server is installed (apt-get as root), or say clearly why not.
set -euo pipefail
if command -v redis-server >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "error: redis-server is missing and this user cannot install it." >&2
  echo "       Install it (Debian/Ubuntu: apt-get install redis-server) and run again." >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing redis-server with apt-get (one time)…"
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq redis-server >/dev/null; }; then
  echo "error: apt-get install redis-server failed; install Redis 7+ yourself and run again." >&2
  exit 1
fi
# Debian's package may start a system-wide instance on 6379; ours uses its own port and files.
command -v redis-server >/dev/null
