"""The Dockerfiles' default base is the one images/base.sh makes: its tag carries a digest
of the package list, so a Dockerfile built by hand must not name a base without libgomp1."""

from __future__ import annotations

import hashlib
import re
import subprocess

from tests.support.runtime_helpers import REPO


def _lib_sh(name: str) -> str:
    out = subprocess.run(["bash", "-c", f'. images/lib.sh >/dev/null && printf %s "${name}"'],
                         cwd=REPO, capture_output=True, text=True, timeout=30, check=True,
                         env={"PATH": "/usr/bin:/bin", "HOME": "/tmp"})
    return out.stdout


def test_dockerfiles_default_to_the_base_lib_sh_builds() -> None:
    packages = _lib_sh("BASE_PACKAGES")
    assert "libgomp1" in packages.split(","), packages  # LightGBM's wheel links it
    tag = f"bookworm-{hashlib.sha256(packages.encode()).hexdigest()[:8]}"
    assert _lib_sh("BASE_IMAGE") == f"local/debian-python:{tag}"
    for dockerfile in ("serving_runtime/Dockerfile", "operator/Dockerfile"):
        text = (REPO / dockerfile).read_text()
        (default,) = re.findall(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
        assert default == f"local/debian-python:{tag}", (dockerfile, default)
