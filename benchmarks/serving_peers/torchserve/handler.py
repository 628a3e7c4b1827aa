"""TorchServe handler (adapted from shared/peers/serving/torchserve/handler.py).

Packaged into a .mar by build_and_run.sh with ../model.py, kind.txt and the state dict.
Handles a list of requests (more than one only when TorchServe batching is on) with one forward.
"""
import json
import os
import sys


class Handler:
    def __init__(self):
        self.model = None

    def initialize(self, ctx):
        d = ctx.system_properties.get("model_dir")
        sys.path.insert(0, d)
        import model as M

        self.M = M
        with open(os.path.join(d, "kind.txt")) as f:
            self.kind = f.read().strip()
        self.model = M.load(self.kind, os.path.join(d, "state.pt"))

    def handle(self, data, ctx):
        rows = []
        for req in data:
            body = req.get("body") if req.get("body") is not None else req.get("data")
            if isinstance(body, (bytes, bytearray)):
                body = json.loads(body)
            rows.append(body["input"])
        return [{"output": o} for o in self.M.predict_rows(self.model, self.kind, rows)]


_service = Handler()


def handle(data, context):
    if _service.model is None:
        _service.initialize(context)
    if data is None:
        return None
    return _service.handle(data, context)
