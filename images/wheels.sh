#!/usr/bin/env bash
# Fills images/.wheels/{runtime,operator}/ with binary wheels for the image's Python
# (CPython 3.11 on glibc, the Debian bookworm base) so that `docker build` installs offline.
# Why on the host: HTTPS from inside a build on this machine fails certificate checks (the
# host's pip trusts a CA bundle the base image does not have), and offline builds are
# reproducible. Wheels are fetched for the target interpreter and platform, not the
# host's, so any host Python with pip works. Re-fetches only when pyproject.toml or this
# script changes.
set -euo pipefail
. "$(dirname "$0")/lib.sh"

PY=${PYTHON:-python3}
# Any Python 3.11+ with pip will do (tomllib); the project's venv is the fallback.
if ! "$PY" -m pip --version >/dev/null 2>&1 && [ -x "$REPO_ROOT/.venv/bin/python" ]; then
  PY=$REPO_ROOT/.venv/bin/python
fi
TARGET_PY=${N1V1_IMAGE_PYTHON:-3.11}
arch=$(uname -m)
# Bookworm has glibc 2.36: accept every manylinux tag up to that.
platforms=(--platform "manylinux1_$arch" --platform "manylinux2010_$arch" --platform "manylinux2014_$arch")
for minor in $(seq 5 36); do platforms+=(--platform "manylinux_2_${minor}_$arch"); done

stamp_of() { cat "$REPO_ROOT/pyproject.toml" "$0" | sha256sum | cut -c1-16; }
stamp="$TARGET_PY-$arch-$(stamp_of)"

for extra in runtime operator; do
  dest=$WHEELS_DIR/$extra
  if [ "$(cat "$dest/.stamp" 2>/dev/null)" = "$stamp" ]; then
    log "wheels: $extra up to date ($(find "$dest" -name '*.whl' | wc -l) wheels)"
    continue
  fi
  # The distribution's own dependencies plus the extra's, read from pyproject.toml.
  mapfile -t reqs < <("$PY" - "$REPO_ROOT/pyproject.toml" "$extra" <<'PYEOF'
import sys, tomllib
project = tomllib.load(open(sys.argv[1], "rb"))["project"]
for req in project["dependencies"] + project["optional-dependencies"][sys.argv[2]]:
    print(req)
PYEOF
)
  log "wheels: fetching $extra (${#reqs[@]} requirements, python $TARGET_PY, $arch)"
  rm -rf "$dest.tmp" && mkdir -p "$dest.tmp"
  # setuptools/wheel: the Dockerfile builds the project itself with --no-build-isolation.
  "$PY" -m pip download -q --disable-pip-version-check --dest "$dest.tmp" \
    --only-binary=:all: --python-version "$TARGET_PY" --implementation cp \
    "${platforms[@]}" "${reqs[@]}" 'setuptools>=70.1' wheel
  echo "$stamp" >"$dest.tmp/.stamp"
  rm -rf "$dest" && mv "$dest.tmp" "$dest"
  log "wheels: $extra: $(find "$dest" -name '*.whl' | wc -l) wheels, $(du -sh "$dest" | cut -f1)"
done
