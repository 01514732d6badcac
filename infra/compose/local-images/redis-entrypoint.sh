#!/bin/sh
# Like the official redis image: `redis-server …` runs with protected mode off (Debian's
# default is on, which refuses every client from another container); anything else is exec'd.
set -e
if [ "${1:-}" = redis-server ]; then
  shift
  exec redis-server --protected-mode no "$@"
fi
exec "$@"
