#!/usr/bin/env python3
"""The same rows through a runtime's gRPC port two ways, beside its REST answer:
Triton's own client (`tritonclient.grpc`, unchanged) and the engine's client with a
grpc:// URL.

    python examples/grpc/predict.py --http http://127.0.0.1:8000 --grpc 127.0.0.1:8081 \
        --model iris --rows 3

Features and outputs come from the model's metadata (gRPC ModelMetadata); the rows are
random normal values, seeded. tests/tools/test_grpc_example.py runs this against a real
server; docs/grpc.md shows its output.
"""

from __future__ import annotations

import argparse
import json

import httpx
import numpy as np
import tritonclient.grpc as tg

from serving_runtime.client import InferenceClient


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--http", required=True, help="the runtime's REST URL")
    ap.add_argument("--grpc", required=True, help="host:port of its gRPC port")
    ap.add_argument("--model", required=True)
    ap.add_argument("--rows", type=int, default=3)
    args = ap.parse_args()

    triton = tg.InferenceServerClient(args.grpc)
    meta = triton.get_model_metadata(args.model)
    outputs = [o.name for o in meta.outputs]
    n_features = meta.inputs[0].shape[1]
    X = np.random.default_rng(0).normal(size=(args.rows, n_features)).round(3)
    print(f"model {meta.name} {list(meta.versions)} ({meta.platform}), outputs {outputs}")

    inp = tg.InferInput("input-0", list(X.shape), "FP64")
    inp.set_data_from_numpy(X)
    result = triton.infer(args.model, [inp], outputs=[tg.InferRequestedOutput(o)
                                                      for o in outputs],
                          headers={"x-correlation-id": "example-1"})
    for o in outputs:
        print(f"tritonclient  {o}: {result.as_numpy(o).tolist()}")
    triton.close()

    rest = httpx.post(f"{args.http}/v2/models/{args.model}/infer", json={
        "inputs": [{"name": "input-0", "shape": list(X.shape), "datatype": "FP64",
                    "data": X.ravel().tolist()}],
        "outputs": [{"name": o} for o in outputs]}).json()
    for o in rest["outputs"]:
        print(f"REST V2       {o['name']}: {o['data']}")

    names = httpx.get(f"{args.http}/v2/models/{args.model}").json()["parameters"][
        "feature_names"]
    with InferenceClient(remote=True, url=f"grpc://{args.grpc}") as engine:
        got = engine.predict(args.model, {n: X[:, i] for i, n in enumerate(names)},
                             correlation_id="example-2")
    got.pop("latency_ms")  # this client's round trip: differs every run
    print(f"engine client {json.dumps(got)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
