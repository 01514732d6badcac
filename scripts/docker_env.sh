# Sourced by the container scripts: picks a docker CLI that can build with BuildKit, and the
# package-index settings of this machine's pip to hand to image builds.
#   DOCKER            the docker command (override: DOCKER=/path/to/docker)
#   BUILD_NET_ARGS    array: --build-arg PIP_INDEX_URL=… / PIP_EXTRA_INDEX_URL=… (only http(s)
#                     indexes: file:// ones are paths on this host) and --secret ca_bundle=…
#                     (pip's cert bundle, for TLS-intercepting proxies)

_docker_can_buildkit() {  # $1: a docker CLI
  "$1" buildx version >/dev/null 2>&1 && return 0
  # CLIs before 23.0 build with the engine's own BuildKit (DOCKER_BUILDKIT=1), no buildx.
  # `docker version` exits 1 while no daemon runs, but still prints the client's version.
  local v; v=$("$1" version --format '{{.Client.Version}}' 2>/dev/null || true)
  [ -n "$v" ] && [ "${v%%.*}" -lt 23 ] 2>/dev/null
}

if [ -z "${DOCKER:-}" ]; then
  DOCKER=docker
  if ! _docker_can_buildkit docker; then
    for cand in /usr/bin/docker /usr/local/bin/docker; do
      if [ -x "$cand" ] && _docker_can_buildkit "$cand"; then DOCKER=$cand; break; fi
    done
  fi
fi
export DOCKER DOCKER_BUILDKIT=1

_pip_setting() {  # $1: env var, $2: pip config key
  local v="${!1:-}"
  [ -n "$v" ] || v=$(python3 -m pip config get "$2" 2>/dev/null | head -1 || true)
  printf '%s' "$v"
}

BUILD_NET_ARGS=()
_index=$(_pip_setting PIP_INDEX_URL global.index-url)
case "$_index" in http://*|https://*) BUILD_NET_ARGS+=(--build-arg "PIP_INDEX_URL=$_index") ;; esac
_extra=""
for u in $(_pip_setting PIP_EXTRA_INDEX_URL global.extra-index-url); do
  case "$u" in http://*|https://*) _extra="${_extra:+$_extra }$u" ;; esac
done
[ -z "$_extra" ] || BUILD_NET_ARGS+=(--build-arg "PIP_EXTRA_INDEX_URL=$_extra")
_ca=$(_pip_setting PIP_CERT global.cert)
[ -n "$_ca" ] || _ca=${SSL_CERT_FILE:-}
[ -z "$_ca" ] || [ ! -s "$_ca" ] || BUILD_NET_ARGS+=(--secret "id=ca_bundle,src=$_ca")
unset _index _extra _ca u
