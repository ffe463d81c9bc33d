# ruff: noqa
# Copied verbatim from the shared harness (../shared/bench): the naive design of the
# original document, the "seed" column of the comparison.
"""The seed's design as a newcomer would write it: FastAPI, one model per request,
features as {name: [values]} columns, predict + predict_proba per call."""
import os, time
import joblib, numpy as np, xgboost as xgb
from fastapi import FastAPI, HTTPException
from pydantic import BaseModel

MODELS = {}
root = os.environ.get("MODELS_DIR", "models")
for name in os.listdir(root):
    d = os.path.join(root, name)
    if os.path.exists(os.path.join(d, "model.joblib")):
        MODELS[name] = joblib.load(os.path.join(d, "model.joblib"))
    elif os.path.exists(os.path.join(d, "model.json")):
        m = xgb.XGBClassifier(); m.load_model(os.path.join(d, "model.json")); MODELS[name] = m

app = FastAPI()

class PredictRequest(BaseModel):
    model_name: str
    features: dict[str, list[float]]
    correlation_id: str | None = None

@app.post("/predict")
def predict(req: PredictRequest):
    t0 = time.perf_counter()
    model = MODELS.get(req.model_name)
    if model is None:
        raise HTTPException(404, f"Model {req.model_name} not found")
    X = np.column_stack([np.asarray(v, dtype=float) for v in req.features.values()])
    pred = model.predict(X)
    proba = model.predict_proba(X)
    return {"prediction": pred.tolist(), "confidence": proba.max(axis=1).tolist(),
            "probabilities": {f"class_{i}": proba[:, i].tolist() for i in range(proba.shape[1])},
            "correlation_id": req.correlation_id, "model_version": "v1",
            "latency_ms": (time.perf_counter() - t0) * 1000}

@app.get("/health")
def health():
    return {"status": "healthy", "models_loaded": list(MODELS)}
