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
# A daemon killed without cleanup leaves its pid file, and dockerd refuses to start while that
# PID exists, even as an unreaped zombie (sandboxes whose PID 1 does not reap) or as some
# other program. Only a live dockerd keeps the file.
if [ -f /var/run/docker.pid ]; then
  old=$(cat /var/run/docker.pid)
  state=$(awk '/^State:/ {print $2}' "/proc/$old/status" 2>/dev/null || true)
  if [ "$(cat "/proc/$old/comm" 2>/dev/null)" != dockerd ] || [ "$state" = Z ]; then
    log "engine: removing stale /var/run/docker.pid (pid $old ${state:+state $state})"
    rm -f /var/run/docker.pid
  fi
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
