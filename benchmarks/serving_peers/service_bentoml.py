"""BentoML peer (adapted from shared/peers/serving/service_bentoml.py; new-style @bentoml.service).

    BENCH_MODEL=mlp BENCH_STATE=mlp.pt bentoml serve service_bentoml:Service --host 127.0.0.1 --port 8002
POST /predict {"input": row} -> {"output": [10 floats]}; 1 worker, access log off, sync API method
(BentoML's thread pool; OMP_NUM_THREADS=1 in the environment keeps torch to one thread there).
"""
import os
import sys

import bentoml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import model as M

KIND = os.environ.get("BENCH_MODEL", "mlp")
STATE = os.environ["BENCH_STATE"]
Row = list[float] if KIND == "mlp" else list[list[list[float]]]


@bentoml.service(workers=1, logging={"access": {"enabled": False}}, traffic={"timeout": 30})
class Service:
    def __init__(self):
        self.model = M.load(KIND, STATE)

    @bentoml.api
    def predict(self, input: Row) -> dict:
        return {"output": M.predict_rows(self.model, KIND, [input])[0]}
