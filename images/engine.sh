#!/usr/bin/env bash
# Makes sure a Docker engine answers: installs Debian's docker.io when dockerd is missing
# and starts dockerd when nothing answers. Idempotent; a running engine costs one `docker info`.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

if docker_ok; then
  log "engine: running (server $(docker version -f '{{.Server.Version}}' 2>/dev/null))"
  exit 0
fi
if ! command -v dockerd >/dev/null; then
  log "engine: dockerd not found, installing Debian's docker.io"
  apt_install docker.io
fi
command -v docker >/dev/null || die "no docker client on PATH"
# No systemd in these machines/containers: start the daemon by hand, detached from this
# shell so that it outlives the script (and the test run that called it).
# A daemon killed without cleanup leaves its pid file; if that PID now belongs to another
# process, dockerd refuses to start. No dockerd process at all means the file is stale.
if ! pgrep -x dockerd >/dev/null && [ -f /var/run/docker.pid ]; then
  rm -f /var/run/docker.pid
fi
log "engine: starting dockerd (log: $IMAGES_CACHE/dockerd.log)"
setsid nohup dockerd >>"$IMAGES_CACHE/dockerd.log" 2>&1 </dev/null &
pid=$!
for _ in $(seq 1 60); do
  if docker_ok; then
    log "engine: ready (server $(docker version -f '{{.Server.Version}}'))"
    exit 0
  fi
  kill -0 "$pid" 2>/dev/null || break  # it exited: no point waiting
  sleep 1
done
tail -n 5 "$IMAGES_CACHE/dockerd.log" >&2 || true
die "dockerd did not come up (see $IMAGES_CACHE/dockerd.log); DOCKER_HOST=${DOCKER_HOST:-default}"
