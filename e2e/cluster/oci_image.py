"""Write a one-file container image as an OCI archive that `ctr images import` loads.

Used for the real node's pause image and the monitoring stack's Prometheus and config
reloader: a static binary and nothing else, so no base image, registry or Docker engine is
needed.

    python3 oci_image.py <file> <path-in-image> <image-ref> <out.tar>
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import sys
import tarfile
from pathlib import Path


def _blob(tar: tarfile.TarFile, data: bytes) -> str:
    digest = hashlib.sha256(data).hexdigest()
    info = tarfile.TarInfo(f"blobs/sha256/{digest}")
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))
    return digest


def _layer(src: Path, dest: str) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as layer:
        parts = dest.strip("/").split("/")[:-1]
        for i in range(len(parts)):  # parent directories first (/bin of /bin/prometheus)
            d = tarfile.TarInfo("/".join(parts[: i + 1]))
            d.type, d.mode = tarfile.DIRTYPE, 0o755
            layer.addfile(d)
        info = layer.gettarinfo(str(src), arcname=dest.lstrip("/"))
        info.uid = info.gid = 0
        info.uname = info.gname = ""
        info.mtime = 0  # same file, same digest: re-imports are no-ops
        with src.open("rb") as fh:
            layer.addfile(info, fh)
    return buf.getvalue()


def write_image(src: Path, dest: str, ref: str, out: Path) -> None:
    layer_tar = _layer(src, dest)
    layer_gz = gzip.compress(layer_tar, mtime=0)
    diff_id = f"sha256:{hashlib.sha256(layer_tar).hexdigest()}"
    config = {
        "architecture": "amd64",
        "os": "linux",
        "config": {"Entrypoint": [dest]},
        "rootfs": {"type": "layers", "diff_ids": [diff_id]},
    }
    with tarfile.open(out, mode="w") as tar:
        layer_digest = _blob(tar, layer_gz)
        config_bytes = json.dumps(config, sort_keys=True).encode()
        config_digest = _blob(tar, config_bytes)
        manifest = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {
                "mediaType": "application/vnd.oci.image.config.v1+json",
                "digest": f"sha256:{config_digest}",
                "size": len(config_bytes),
            },
            "layers": [
                {
                    "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": f"sha256:{layer_digest}",
                    "size": len(layer_gz),
                }
            ],
        }
        manifest_bytes = json.dumps(manifest, sort_keys=True).encode()
        manifest_digest = _blob(tar, manifest_bytes)
        index = {
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "manifests": [
                {
                    "mediaType": "application/vnd.oci.image.manifest.v1+json",
                    "digest": f"sha256:{manifest_digest}",
                    "size": len(manifest_bytes),
                    "platform": {"architecture": "amd64", "os": "linux"},
                    # containerd names the imported image after this annotation.
                    "annotations": {
                        "io.containerd.image.name": ref,
                        "org.opencontainers.image.ref.name": ref.rsplit(":", 1)[-1],
                    },
                }
            ],
        }
        for name, data in (
            ("oci-layout", json.dumps({"imageLayoutVersion": "1.0.0"}).encode()),
            ("index.json", json.dumps(index, sort_keys=True).encode()),
        ):
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


if __name__ == "__main__":
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    write_image(Path(sys.argv[1]), sys.argv[2], sys.argv[3], Path(sys.argv[4]))
