"""Bare FastAPI + uvicorn peer (uvloop + httptools, raw JSON body, model called inline).

    python server_fastapi.py --model mlp --state mlp.pt --port 8000
POST /predict {"input": row} -> {"output": [10 floats]}
"""
import argparse
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M
import uvicorn
from fastapi import FastAPI, Request
from fastapi.responses import Response

ap = argparse.ArgumentParser()
ap.add_argument("--model", required=True)
ap.add_argument("--state", required=True)
ap.add_argument("--port", type=int, default=8000)
a = ap.parse_args()
net = M.load(a.model, a.state)
app = FastAPI()


@app.post("/predict")
async def predict(request: Request):
    row = json.loads(await request.body())["input"]
    return Response(json.dumps({"output": M.predict_rows(net, a.model, [row])[0]}), media_type="application/json")


uvicorn.run(app, host="127.0.0.1", port=a.port, workers=1, log_level="warning", access_log=False,
            loop="uvloop", http="httptools")
