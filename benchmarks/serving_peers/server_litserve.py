"""LitServe peer (adapted from shared/peers/serving/server_litserve.py).

    python server_litserve.py --model mlp --state mlp.pt --port 8001 [--batch --max-batch 32 --batch-timeout 0.005]
POST /predict {"input": row} -> {"output": [10 floats]}
1 API-server process + 1 inference worker process (workers_per_device=1, accelerator=cpu).
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import litserve as ls
import model as M


class API(ls.LitAPI):
    def __init__(self, kind, state, **kw):
        super().__init__(**kw)
        self.kind, self.state = kind, state

    def setup(self, device):
        self.model = M.load(self.kind, self.state)

    def decode_request(self, request):
        return request["input"]

    def batch(self, inputs):
        return inputs

    def predict(self, x):
        if self.max_batch_size > 1:
            return M.predict_rows(self.model, self.kind, x)
        return M.predict_rows(self.model, self.kind, [x])[0]

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        return {"output": output}


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--state", required=True)
    ap.add_argument("--port", type=int, default=8001)
    ap.add_argument("--batch", action="store_true")
    ap.add_argument("--max-batch", type=int, default=32)
    ap.add_argument("--batch-timeout", type=float, default=0.005)
    a = ap.parse_args()
    kw = dict(max_batch_size=a.max_batch, batch_timeout=a.batch_timeout) if a.batch else {}
    server = ls.LitServer(API(a.model, a.state, **kw), accelerator="cpu", workers_per_device=1)
    server.run(host="127.0.0.1", port=a.port, log_level="warning", generate_client_file=False, access_log=False)
