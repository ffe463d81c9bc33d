#!/usr/bin/env python3
"""Compile serving_runtime/grpc_protocol/inference.proto into inference.binpb.

    scripts/gen_grpc_descriptor.py           # write/refresh the descriptor
    scripts/gen_grpc_descriptor.py --check   # CI: exit 1 when it is missing or differs

The runtime loads the binary FileDescriptorSet into a private descriptor pool rather than
importing protoc-generated modules: no generated Python in the tree, and no clash with
tritonclient's or KServe's modules, which register the same `inference.*` names in
protobuf's default pool of the same process. Needs grpcio-tools (a dev dependency).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PROTO_DIR = ROOT / "serving_runtime" / "grpc_protocol"
PROTO = "inference.proto"
OUT = PROTO_DIR / "inference.binpb"


def compile_descriptor() -> bytes:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "set.binpb"
        rc = protoc.main(["protoc", f"-I{PROTO_DIR}", f"--descriptor_set_out={out}", PROTO])
        if rc != 0:
            raise SystemExit(f"protoc failed on {PROTO_DIR / PROTO} (exit {rc})")
        return out.read_bytes()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--check", action="store_true", help="exit 1 if the descriptor is stale")
    args = p.parse_args(argv)
    want = compile_descriptor()
    if args.check:
        if not OUT.exists() or OUT.read_bytes() != want:
            print(f"{OUT.relative_to(ROOT)} does not match {PROTO}: "
                  "run scripts/gen_grpc_descriptor.py", file=sys.stderr)
            return 1
        print(f"{OUT.relative_to(ROOT)} matches {PROTO}")
        return 0
    OUT.write_bytes(want)
    print(f"wrote {OUT.relative_to(ROOT)} ({len(want)} bytes)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
