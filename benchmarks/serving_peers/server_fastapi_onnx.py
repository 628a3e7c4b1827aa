"""Bare FastAPI + uvicorn peer on ONNX Runtime (no torch): the floor for a Python model server's start-up.

    python server_fastapi_onnx.py --onnx model.onnx --port 8000
GET /ready -> 200 (the model is loaded before the server listens)
POST /predict {"input": row} -> {"output": [softmax probabilities]}

One ONNX Runtime session with one intra-op thread, called inline; uvloop + httptools, access log off.
benchmarks/serve_startup.py starts it beside ``loopml serve`` on the same ONNX file.
"""
import argparse
import json

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

ap = argparse.ArgumentParser()
ap.add_argument("--onnx", required=True)
ap.add_argument("--port", type=int, default=8000)
a = ap.parse_args()
options = ort.SessionOptions()
options.intra_op_num_threads = 1
options.inter_op_num_threads = 1
session = ort.InferenceSession(a.onnx, options, providers=["CPUExecutionProvider"])
name = session.get_inputs()[0].name
shape = [d if isinstance(d, int) else 1 for d in session.get_inputs()[0].shape]
session.run(None, {name: np.zeros(shape, dtype=np.float32)})  # warm-up, as loopml serve does
app = FastAPI()


@app.get("/ready")
async def ready():
    return {"status": "ready"}


@app.post("/predict")
async def predict(request: Request):
    row = np.asarray(json.loads(await request.body())["input"], dtype=np.float32)[None]
    out = session.run(None, {name: row})[0][0]
    e = np.exp(out - out.max())
    return Response(json.dumps({"output": (e / e.sum()).tolist()}), media_type="application/json")


uvicorn.run(app, host="127.0.0.1", port=a.port, workers=1, log_level="warning", access_log=False,
            loop="uvloop", http="httptools")
