#!/usr/bin/env bash
# Make sure Debian's redis-server is installed (apt-get as root), or say clearly why not.
# Debian's package may start a system-wide instance on 6379; ours uses its own port and files.
exec "$(dirname "$0")/ensure_command.sh" redis-server redis-server
