"""Build everything benchmarks/serving.py serves, in a fresh store under HOME (run with LOOPML_HOME=HOME).

    python prepare.py HOME [--no-gate] [--no-mlflow]

- ``mlp`` (MLP 64-256-256-10, seed 0) and ``digits`` (DigitsCNN, seed 0), registered in onnx, pt2 and
  torch formats with alias ``production``; their state dicts as HOME/mlp.pt and HOME/digits.pt for the peers;
- ``gd``: a DigitsCNN trained on scikit-learn's digits, registered twice with a stored OOD gate:
  version 1 the VAE detector alone, version 2 VAE + Mahalanobis (``loopml.monitor.fit_ood``);
  HOME/gd_rows.json holds its in-distribution request rows (the test split);
- HOME/mlflow_mlp and HOME/mlflow_digits: the same two models saved with ``mlflow.pytorch.save_model``
  and a float32 tensor signature, for ``mlflow models serve``.
"""

import json
import sys
import time
from pathlib import Path

import torch

torch.set_num_threads(1)
import loopml
from loopml.models.nets import MLP, DigitsCNN

home = Path(sys.argv[1])
names = [str(i) for i in range(10)]
models = {}
torch.manual_seed(0)
for name, model, x, args in [("mlp", MLP(64, 10, [256, 256]), torch.randn(8, 64), {"n_in": 64, "n_out": 10, "hidden": [256, 256]}),
                             ("digits", DigitsCNN(), torch.randn(8, 1, 8, 8), {"channels": 16})]:
    model.eval()
    v = loopml.register(model, name, input_example=x, class_names=names, init_args=args, formats=("onnx", "pt2", "torch"))
    loopml.models.set_alias(name, "production", v.version)
    torch.save(model.state_dict(), home / f"{name}.pt")
    models[name] = (model, x)

if "--no-gate" not in sys.argv:
    from loopml import data
    from loopml.monitor import fit_ood

    parts = data.split(data.load("digits"), val=0.15, test=0.15, seed=0)
    torch.manual_seed(0)
    cnn = DigitsCNN()
    opt = torch.optim.Adam(cnn.parameters(), lr=3e-3)
    for _ in range(15):
        perm = torch.randperm(len(parts.train.x))
        for i in range(0, len(perm), 64):
            idx = perm[i : i + 64]
            opt.zero_grad()
            torch.nn.functional.cross_entropy(cnn(parts.train.x[idx]), parts.train.y[idx]).backward()
            opt.step()
    cnn.eval()
    for detectors in (("vae",), ("vae", "mahalanobis")):
        t0 = time.perf_counter()
        v = loopml.register(cnn, "gd", input_example=parts.train.x[:8], class_names=names, init_args={"channels": 16},
                            formats=("onnx", "pt2", "torch"))
        fit_ood(f"gd/{v.version}", train=parts.train, val=parts.val, detectors=detectors)
        print(f"gd/{v.version}: gate {'+'.join(detectors)} fitted in {time.perf_counter() - t0:.0f} s", flush=True)
    (home / "gd_rows.json").write_text(json.dumps(parts.test.x.tolist()))

if "--no-mlflow" not in sys.argv:
    import mlflow.pytorch
    from mlflow.models import infer_signature

    for name, (model, x) in models.items():
        sig = infer_signature(x.numpy(), model(x).detach().numpy())
        mlflow.pytorch.save_model(model, str(home / f"mlflow_{name}"), signature=sig, input_example=x.numpy())
print("prepared", home)
