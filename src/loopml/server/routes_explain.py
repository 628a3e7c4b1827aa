"""Explanations of registered versions and of logged requests (:mod:`loopml.explanations`), over HTTP.

=======  ===================================================  ==========================================
method   path                                                 what
=======  ===================================================  ==========================================
POST     /api/v1/models/{name}/versions/{ref}/explain         the attributions of ``inputs`` and the prediction
GET      /api/v1/predictions/{request_id}/explanation         a logged request explained by the version that
                                                              answered it: ``?method=&row=&target=&steps=...``
=======  ===================================================  ==========================================

The body of the POST is the model server's explain body (docs/explain.md)::

    {"inputs": [[...]], "method": "integrated_gradients", "target": null, "baseline": "zeros",
     "steps": 50, "samples": null, "window": null, "stride": null, "feature_groups": null}

and the answer the same shape as the model server's: ``model``, ``version``, ``method``,
``baseline``, ``options``, ``evaluations``, ``seconds``, ``format``, and per row ``status``,
``prediction``, ``probabilities``, ``target``, ``target_index``, ``attributions`` (shaped like
the row), ``delta`` and ``top`` (the strongest positive and negative features): at the top
level for one row sent as one row, else in ``results``. The tracking server runs no OOD gate:
a POST's rows are all ``ok``; a logged request's rows carry what the model server answered
then (``status``, ``prediction``, ``probabilities``, ``ood_score``) and its ``input`` (the
logged row, for drawing it).

An explanation costing more than the server's budget (``create_app(explain_budget=)``,
``loopml server --explain-budget``; evaluations x rows x input size) answers 422
``over_budget``; a version that cannot be explained as asked 422 ``cannot_explain``; an
unknown method or a bad option 400 ``bad_request``; an unknown request id 404; a request
whose inputs were not logged 409 ``no_inputs``; a row outside its batch 422.

The explainers (each a version's differentiable model, loaded once) are kept per
``(name, version)``, the :data:`KEEP` most recently used; FastAPI runs these sync routes
in its thread pool, so the cache is locked, and one explainer runs one explanation at a
time (:class:`~loopml.explanations.Explainer` locks itself).
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from typing import Annotated, Any

import numpy as np
import orjson
from fastapi import APIRouter, Query, Request
from pydantic import Field
from starlette.responses import Response

from ..errors import ArgumentError, ExplainError, LoopMLError
from ..explanations import DEFAULT_BUDGET, Explainer, Explanation, baseline_from_text
from ..models.signature import Signature
from ..store.predictions import PredictionLog, answered_rows, inputs_array
from ..store.protocols import Registry as RegistryProtocol
from ..store.registry import ModelVersion
from .errors import error_response
from .routes_models import Registry, version_number
from .routes_tracking import PREFIX, Store, StrictBody

__all__ = ["KEEP", "ExplainIn", "ExplainerCache", "budget_of", "explainers", "logged_explanation", "predicted",
           "query_target", "router", "run_explanation"]

KEEP = 4
"""Explainers kept loaded (versions), the least recently used dropped first."""

router = APIRouter(prefix=PREFIX, tags=["explanations"])


class ExplainerCache:
    """The explainers of the versions explained lately, at most ``keep``, thread-safe.

    A version is loaded outside the cache's lock (loading imports torch and reads the
    file: seconds another thread need not wait for), under a lock of its own, so that
    two requests for one version load it once.
    """

    def __init__(self, keep: int = KEEP) -> None:
        self.keep = keep
        self._items: OrderedDict[tuple[str, int], Explainer] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[tuple[str, int], threading.Lock] = {}

    def get(self, registry: RegistryProtocol, version: ModelVersion) -> Explainer:
        key = (version.name, version.version)
        with self._lock:
            found = self._items.get(key)
            if found is not None:
                self._items.move_to_end(key)
                return found
            loading = self._loading.setdefault(key, threading.Lock())
        with loading:
            with self._lock:
                found = self._items.get(key)
            if found is None:
                try:
                    found = Explainer.for_version(registry, version)
                except LoopMLError:
                    raise
                except Exception as exc:  # a stored file torch cannot read: the version's fault, not a bug here
                    raise ExplainError(f"{version.ref} could not be loaded to explain it: {type(exc).__name__}: {str(exc)[:300]}") from exc
            with self._lock:
                self._items[key] = found
                self._items.move_to_end(key)
                while len(self._items) > self.keep:
                    self._items.popitem(last=False)
                self._loading.pop(key, None)
        return found

    def loaded(self) -> list[tuple[str, int]]:
        """The versions whose explainers are loaded, least recently used first."""
        with self._lock:
            return list(self._items)


def explainers(request: Request) -> ExplainerCache:
    """The app's explainer cache (made on first use)."""
    state = request.app.state
    with _STATE_LOCK:
        cache: ExplainerCache | None = getattr(state, "explainers", None)
        if cache is None:
            cache = state.explainers = ExplainerCache()
    return cache


_STATE_LOCK = threading.Lock()


def budget_of(request: Request) -> int | None:
    """The app's explanation budget (``create_app(explain_budget=)``; None: no limit)."""
    budget: int | None = getattr(request.app.state, "explain_budget", DEFAULT_BUDGET)
    return budget


class ExplainIn(StrictBody):
    inputs: Any = Field(description="One row or a batch, anything the version's signature parses", examples=[[[0.0, 1.0, 2.0]]])
    method: str = Field("integrated_gradients", description="saliency, integrated_gradients (ig), gradient_shap, deeplift, "
                        "occlusion, feature_ablation")
    target: int | str | list[int | str] | None = Field(None, description="The class explained: null (each row's predicted "
                                                       "class), an index, a class name, or one per row")
    baseline: str | float | list[Any] = Field("zeros", description='"zeros", "mean", "blur", a number, or an array like one input')
    steps: int | None = None
    samples: int | None = None
    stdevs: float | None = None
    window: int | list[int] | None = None
    stride: int | list[int] | None = None
    feature_groups: dict[str, list[str]] | list[list[str]] | None = None
    seed: int = 0
    check: bool = Field(False, description="Also test the attributions' faithfulness (the top 10% removed against random sets)")

    def options(self) -> dict[str, Any]:
        return self.model_dump(exclude={"inputs"})


def run_explanation(explain: Callable[[], Explanation], ref: str) -> Explanation:
    """``explain()``, with torch's own errors (a shape the signature let through, a model that fails on it) as 422."""
    try:
        return explain()
    except LoopMLError:
        raise
    except (RuntimeError, ValueError, TypeError, IndexError) as exc:
        raise ExplainError(f"{ref} could not be explained on these inputs: {type(exc).__name__}: {str(exc)[:300]}") from exc


def predicted(e: Explanation, class_names: Sequence[str] | None) -> list[dict[str, Any]]:
    """Each row's prediction from the explanation's raw outputs: the class (its name) and the softmax probabilities."""
    out = np.asarray(e.outputs, dtype=np.float64)
    rows: list[dict[str, Any]] = []
    for i in range(len(out)):
        o = out[i].reshape(-1)
        if o.size > 1:
            z = np.exp(o - o.max())
            p = z / z.sum()
            best = int(p.argmax())
            name: Any = class_names[best] if class_names and best < len(class_names) else best
            rows.append({"status": "ok", "prediction": name, "probabilities": [float(v) for v in p]})
        else:
            rows.append({"status": "ok", "prediction": float(o[0]) if o.size else None})
    return rows


def _json(doc: dict[str, Any]) -> Response:
    # attributions can be NaN where a model's gradient is: orjson writes null for it
    return Response(orjson.dumps(doc, option=orjson.OPT_SERIALIZE_NUMPY), media_type="application/json")


@router.post("/models/{name}/versions/{ref}/explain", summary="Explain inputs with a version: attributions and the prediction")
def explain_version(name: str, ref: str, body: ExplainIn, request: Request, registry: Registry) -> Response:
    version = registry.get_version(name, version_number(registry, name, ref))
    explainer = explainers(request).get(registry, version)
    budget = budget_of(request)
    opts = body.options()
    x, single = explainer.prepare(body.inputs)  # the signature's checks (400); one row sent as one row answers as one
    e = run_explanation(lambda: explainer.explain(x, budget=budget, **opts), version.ref)
    head = {"model": version.name, "version": version.version}
    items = predicted(e, explainer.signature.class_names if explainer.signature is not None else None)
    return _json(e.answer(head, items, single=single))


def query_target(text: str | None, class_names: Sequence[str] | None) -> int | str | None:
    if text is None or not text.strip():
        return None
    text = text.strip()
    if class_names is not None and text in class_names:
        return text
    return int(text) if text.lstrip("-").isdigit() else text


def _ints(key: str, text: str | None) -> int | list[int] | None:
    if text is None or not text.strip():
        return None
    try:
        values = [int(p) for p in text.split(",")]
    except ValueError:
        raise ArgumentError(f"Argument {key} should be an integer or integers separated by commas, e.g. 2,2; got {text!r}") from None
    return values[0] if len(values) == 1 else values


def logged_explanation(store: Any, registry: RegistryProtocol, cache: ExplainerCache, request_id: str, *,
                       row: int | None, options: Mapping[str, Any], budget: int | None) -> Response:
    """A logged request explained by the version that answered it (the GET route's work, shared with the UI)."""
    record = PredictionLog(store).get(request_id)  # NotFound: 404
    if record["inputs"] is None:
        return error_response(409, "no_inputs", f"The inputs of request {request_id!r} were not logged (the model server keeps a "
                              "--log-inputs fraction of them), so it cannot be explained; send them to "
                              f"POST /api/v1/models/{record['model']}/versions/{record['version']}/explain instead")
    x = inputs_array(bytes(record["inputs"]))
    total = len(x)
    if row is not None and not 0 <= row < total:
        return error_response(422, "invalid_request", f"Argument row should be a row of the request's batch, 0 to {total - 1}; got {row}")
    version = registry.get_version(str(record["model"]), int(record["version"]))
    explainer = cache.get(registry, version)
    rows = list(range(total)) if row is None else [row]
    opts = dict(options)
    sig = Signature.from_dict(version.signature)
    opts["target"] = query_target(opts.get("target"), sig.class_names)
    e = run_explanation(lambda: explainer.explain(x[rows], budget=budget, **opts), version.ref)
    items = answered_rows(record.get("outputs"), rows, total) or [{} for _ in rows]  # unreadable: the explanation alone
    if total == 1 and "ood_score" not in items[0]:
        items[0]["ood_score"] = record.get("ood_score")  # the log's column: one row's score is the request's
    for item, r in zip(items, rows):
        item["row"] = r
        item["input"] = np.asarray(x[r], dtype=np.float64).tolist()
    head = {"request_id": request_id, "model": version.name, "version": version.version, "rows": total}
    return _json(e.answer(head, items, single=row is not None))


@router.get("/predictions/{request_id}/explanation", summary="Explain a logged request with the version that answered it")
def explain_logged(
    request_id: str,
    request: Request,
    store: Store,
    registry: Registry,
    method: str = "integrated_gradients",
    row: Annotated[int | None, Query(description="A row of the request's batch; default every row")] = None,
    target: Annotated[str | None, Query(description="A class name or index; default each row's predicted class")] = None,
    baseline: Annotated[str | None, Query(description='"zeros", "mean", "blur" or a number')] = None,
    steps: int | None = None,
    samples: int | None = None,
    stdevs: float | None = None,
    window: Annotated[str | None, Query(description="Occlusion's window, e.g. 1,2,2")] = None,
    stride: str | None = None,
    seed: int = 0,
    check: bool = False,
) -> Response:
    options = {"method": method, "target": target, "baseline": baseline_from_text(baseline), "steps": steps, "samples": samples,
               "stdevs": stdevs, "window": _ints("window", window), "stride": _ints("stride", stride), "seed": seed,
               "check": check}
    return logged_explanation(store, registry, explainers(request), request_id, row=row, options=options,
                              budget=budget_of(request))
