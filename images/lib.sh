# Shared by the images/ scripts (sourced, not run). Paths and helpers only.
# shellcheck shell=bash
REPO_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
IMAGES_CACHE=${N1V1_CACHE:-$HOME/.cache/n1v1}/images
# What the local base holds. libgomp1: LightGBM's wheel links the system OpenMP runtime
# (XGBoost's vendors its own). The tag carries a digest of the list, so a changed list
# builds a new base instead of reusing a cached one that lacks a package.
BASE_PACKAGES=python3,python3-venv,ca-certificates,libgomp1
BASE_TAG=bookworm-$(printf %s "$BASE_PACKAGES" | sha256sum | cut -c1-8)
BASE_IMAGE=${BASE_IMAGE:-local/debian-python:$BASE_TAG}
VERSION=${N1V1_VERSION:-0.1.0}
RUNTIME_IMAGE=${RUNTIME_IMAGE:-n1v1-ml-serving:$VERSION}
OPERATOR_IMAGE=${OPERATOR_IMAGE:-n1v1-mlmodel-operator:$VERSION}
WHEELS_DIR=$REPO_ROOT/images/.wheels
mkdir -p "$IMAGES_CACHE"

log() { printf '[images %s] %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }

docker_ok() { docker info >/dev/null 2>&1; }

# Docker 23+ clients only use BuildKit through the buildx plugin; without it (Debian's
# engine plus a newer static client) fall back to the classic builder, which these
# Dockerfiles are written for too.
if ! docker buildx version >/dev/null 2>&1; then
  export DOCKER_BUILDKIT=0
fi

apt_install() {
  [ "$(id -u)" = 0 ] || die "need root to apt-get install $*"
  command -v apt-get >/dev/null || die "no apt-get: install $* by hand"
  log "apt-get install $*"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "$@" >/dev/null
}
