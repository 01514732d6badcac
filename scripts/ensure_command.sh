#!/usr/bin/env bash
# Make sure COMMAND exists, installing Debian's PACKAGE with apt-get (as root, or with sudo)
# when it is missing; otherwise say clearly why not. Usage: ensure_command.sh COMMAND PACKAGE
set -euo pipefail
command_name=$1 package=$2
if command -v "$command_name" >/dev/null 2>&1; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ] && ! command -v sudo >/dev/null 2>&1; then
  echo "error: $command_name is missing and this user cannot install it." >&2
  echo "       Install it (Debian/Ubuntu: apt-get install $package) and run again." >&2
  exit 1
fi
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
echo "installing $package with apt-get (one time)…"
if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$package" >/dev/null; }; then
  echo "error: apt-get install $package failed; install it yourself and run again." >&2
  exit 1
fi
command -v "$command_name" >/dev/null
