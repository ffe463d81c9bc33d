#!/usr/bin/env bash
# Builds n1v1-ml-serving and n1v1-mlmodel-operator on this machine, from nothing if need be:
# engine (engine.sh) -> local base image (base.sh) -> offline wheelhouse (wheels.sh) ->
# docker build of both Dockerfiles (context = repo root). Every step is skipped or served
# from cache when its inputs did not change, so a warm run takes seconds.
#   images/build.sh                # both images
#   images/build.sh runtime        # one of: runtime, operator
# Env: BASE_IMAGE (default local/debian-python:bookworm-<digest>, made by base.sh; anything
#      with python3.11, venv and libgomp1),
#      RUNTIME_IMAGE, OPERATOR_IMAGE, N1V1_CACHE.
set -euo pipefail
here=$(dirname "$0")
. "$here/lib.sh"

"$here/engine.sh"
if [[ $BASE_IMAGE == local/debian-python:* ]]; then  # ours: made here when missing
  "$here/base.sh"
else
  docker image inspect "$BASE_IMAGE" >/dev/null 2>&1 || die "BASE_IMAGE $BASE_IMAGE not found locally"
fi
"$here/wheels.sh"

# The commit the images are built from; "-dirty" when the build inputs have local changes.
revision=$(git -C "$REPO_ROOT" rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [ "$revision" != unknown ] && ! git -C "$REPO_ROOT" diff --quiet HEAD -- pyproject.toml \
    README.md serving_runtime operator/mlmodel_operator serving_runtime/Dockerfile \
    operator/Dockerfile 2>/dev/null; then
  revision=$revision-dirty
fi

build() {  # name dockerfile tag
  local started=$SECONDS
  log "build: $3 (from $2, base $BASE_IMAGE; log: $IMAGES_CACHE/build-$1.log)"
  # --network host: the build needs no network (offline wheels), and the default bridge
  # would be one more thing to go wrong on a locked-down host.
  docker build --network host \
    --build-arg BASE_IMAGE="$BASE_IMAGE" --build-arg VERSION="$VERSION" \
    --build-arg REVISION="$revision" \
    -f "$REPO_ROOT/$2" -t "$3" "$REPO_ROOT" >"$IMAGES_CACHE/build-$1.log" 2>&1 \
    || { tail -n 30 "$IMAGES_CACHE/build-$1.log" >&2; die "docker build of $3 failed"; }
  log "build: $3 done in $((SECONDS - started)) s, $(docker image inspect -f '{{.Size}}' "$3" \
    | awk '{printf "%.0f MB", $1/1e6}')"
}

for t in ${*:-runtime operator}; do
  case $t in
    runtime) build runtime serving_runtime/Dockerfile "$RUNTIME_IMAGE" ;;
    operator) build operator operator/Dockerfile "$OPERATOR_IMAGE" ;;
    *) die "unknown target $t (runtime, operator)" ;;
  esac
done
