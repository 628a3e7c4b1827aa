"""The model server's explanations: one worker thread, a bounded queue, one explainer per served version.

``POST /v1/models/{name}/explain`` and ``GET /v1/predictions/{id}/explanation``
(:mod:`~loopml.serve.routes`) hand their work here. The served backend may be ONNX
Runtime, which gives no gradients, so each version's differentiable model
(:meth:`loopml.explanations.Explainer.for_version`: the ``torch`` format, else the
``pt2`` program, else the stored format for occlusion and feature ablation) is
loaded the first time an explanation of that version is asked for, in the worker
thread (loading imports torch and Captum: seconds the event loop must not wait),
and kept: at most :data:`KEEP` versions, the least recently used dropped first, so
that after a hot swap the new version is explained with its own model while the
old one still explains the requests it answered.

Integrated gradients and the other costly methods run in that one thread, so that
the event loop keeps answering predictions meanwhile; at most ``max_pending``
explanations wait or run there, past it the server answers 503 with
``Retry-After``. A cheap method (:data:`loopml.explanations.CHEAP`, saliency: one
forward and backward pass) is answered at once in the event loop when its
version's explainer is loaded and the worker is not using it (an explainer runs
one explanation at a time); otherwise it takes its turn in the worker. Example
(what the routes do once the server's loop runs)::

    ex = Explanations(registry, loop, budget=DEFAULT_BUDGET, threads=1, max_pending=8)
    if ex.reserve():
        fut = ex.submit("digits/3", lambda explainer: explainer.explain(x, method="ig"))

The request options (JSON fields, or a query string for a ``.npy`` body and the GET
route) are checked here (:func:`json_options`, :func:`query_options`) and an answer
is built in the shape every loopml server uses (:func:`answer_body`).
"""

from __future__ import annotations

import asyncio
import math
import os
import threading
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import parse_qs

import numpy as np
import orjson

from ..errors import ArgumentError, OverBudget
from ..explanations import CHEAP, Explainer, Explanation, baseline_from_text, preflight
from ..models.exporting import FORMATS

if TYPE_CHECKING:
    from ..store.protocols import Registry
    from ..store.registry import ModelVersion

__all__ = ["INLINE_COST", "KEEP", "OPTIONS", "Explanations", "answer_body", "check_request", "json_options", "query_options"]

KEEP = 2
"""Explainers kept loaded: the served version's and the one before a hot swap (its logged requests)."""
INLINE_COST = 200_000
"""The most a cheap method may cost (rows x input size) to run on the event loop; a bigger one goes to the worker."""
NICE = 10
"""How much lower the explanation thread's CPU priority is than the server's (nice, Linux)."""
OPTIONS = ("method", "target", "baseline", "steps", "samples", "stdevs", "window", "stride", "feature_groups", "seed", "check")
"""The explanation's fields of a request (beside the predict body's ``inputs`` and ``include_prediction``)."""
_OPTS = orjson.OPT_SERIALIZE_NUMPY

T = TypeVar("T")


def invalid(message: str) -> ArgumentError:
    """A bad field or option: the routes answer it 422 ``invalid_request``."""
    return ArgumentError(message)


class Explanations:
    """The explanation worker of one model server (see the module docstring).

    ``budget``: the most an explanation may cost (evaluations x rows x input size;
    None: no limit); ``threads``: torch's intra-op threads in the worker (the server's
    ``threads``); ``max_pending``: explanations queued or running in the worker.
    """

    def __init__(self, registry: "Registry", loop: asyncio.AbstractEventLoop, *, budget: int | None, threads: int = 1,
                 max_pending: int = 8) -> None:
        self.registry = registry
        self.loop = loop
        self.budget = budget
        self.threads = threads
        self.max_pending = max_pending
        self.pending = 0  # loop thread only: explanations reserved, queued or running in the worker
        self._busy: dict[str, int] = {}  # loop thread only: worker jobs per version ref
        self._explainers: OrderedDict[str, Explainer] = OrderedDict()
        self._lock = threading.Lock()  # the cache, read on the loop and filled in the worker
        self._local = threading.local()
        self._executor: ThreadPoolExecutor | None = None

    # -- the queue (loop thread) -----------------------------------------------------------

    def reserve(self) -> bool:
        """Take a place in the worker's queue; False when ``max_pending`` are taken (answer 503)."""
        if self.pending >= self.max_pending:
            return False
        self.pending += 1
        return True

    def release(self) -> None:
        """Give back a place taken by :meth:`reserve` that :meth:`submit` will not use (the request failed first)."""
        self.pending -= 1

    def inline(self, method: str, cost: int) -> bool:
        """Whether an explanation may run on the event loop: a cheap method (saliency) costing at most :data:`INLINE_COST`."""
        return method in CHEAP and cost <= INLINE_COST

    def ready(self, ref: str) -> Explainer | None:
        """``ref``'s explainer when it is loaded and no worker job uses it (a cheap method may run on the loop)."""
        if self._busy.get(ref):
            return None
        with self._lock:
            return self._explainers.get(ref)

    def submit(self, ref: str, work: Callable[[Explainer], T]) -> "asyncio.Future[T]":
        """Run ``work(explainer of ref)`` in the worker, in a place taken by :meth:`reserve`; a future on the loop."""
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loopml-serve-explain")
        self._busy[ref] = self._busy.get(ref, 0) + 1
        fut = self.loop.run_in_executor(self._executor, self._run, ref, work)

        def done(_: "asyncio.Future[T]") -> None:
            self.pending -= 1
            left = self._busy[ref] - 1
            if left:
                self._busy[ref] = left
            else:
                del self._busy[ref]

        fut.add_done_callback(done)
        return fut

    def close(self, *, wait: bool = False) -> None:
        """Drop what is queued (from the loop); ``wait``: also wait for the explanation running now (from a thread,
        before the loop closes, so that its answer finds the loop open)."""
        if self._executor is not None:
            self._executor.shutdown(wait=wait, cancel_futures=True)

    # -- the work ----------------------------------------------------------------------------

    def torch_threads(self) -> None:
        """Set torch's intra-op threads in this thread (once per thread: the setting is per thread, as for predictors)."""
        if not getattr(self._local, "done", False):
            import torch

            torch.set_num_threads(self.threads)
            self._local.done = True

    def _run(self, ref: str, work: Callable[[Explainer], T]) -> T:
        if not getattr(self._local, "niced", False):
            self._local.niced = True
            _lower_priority()
        self.torch_threads()
        return work(self.explainer(ref))

    def explainer(self, ref: str) -> Explainer:
        """``ref``'s explainer, loaded on first use (in the worker thread), the least recently used of :data:`KEEP` dropped."""
        with self._lock:
            found = self._explainers.get(ref)
            if found is not None:
                self._explainers.move_to_end(ref)
                return found
        made = Explainer.for_version(self.registry, ref)  # outside the lock: the loop reads the cache meanwhile
        with self._lock:
            self._explainers[ref] = made
            while len(self._explainers) > KEEP:
                self._explainers.popitem(last=False)
        return made

    def loaded(self) -> list[str]:
        """The versions whose explainers are loaded, least recently used first."""
        with self._lock:
            return list(self._explainers)


def _lower_priority() -> None:
    """Give this thread (Linux: a thread has its own nice value) a lower CPU priority than the event loop's.

    When the cores are busy the kernel then runs the loop first, so that an explanation takes
    the CPU the predictions leave rather than sharing it evenly with them.
    """
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, os.getpriority(os.PRIO_PROCESS, 0) + NICE))
    except (AttributeError, OSError):  # not Linux/Unix, or not allowed: the thread runs at the loop's priority
        pass


# -- the request -------------------------------------------------------------------------------


def json_options(body: Mapping[str, Any]) -> dict[str, Any]:
    """The explanation fields of a JSON body, their types checked (values are checked by :func:`check_request`)."""
    opts = {k: body[k] for k in OPTIONS if k in body and body[k] is not None}
    opts.setdefault("method", "integrated_gradients")
    target = opts.get("target")
    if target is not None:
        ok = (type(target) in (int, str)) or (
            type(target) is list and bool(target) and all(type(t) in (int, str) for t in target))
        if not ok:
            raise invalid(f"target should be a class (its index or name), a list of one per row, or null; got {target!r}")
    if "baseline" in opts:
        opts["baseline"] = _baseline(opts["baseline"])
    if type(opts.get("check", False)) is not bool:
        raise invalid(f"check should be true or false (test the attributions' faithfulness); got {opts['check']!r}")
    return opts


def _baseline(value: Any) -> Any:
    if isinstance(value, str) or (type(value) in (int, float)):
        return value
    if type(value) is list:
        try:
            arr = np.asarray(value, dtype=np.float32)
        except (ValueError, TypeError):
            arr = None
        if arr is not None and arr.ndim >= 1 and np.isfinite(arr).all():
            return arr
    raise invalid('baseline should be "zeros", "mean", "blur", a number, or an array shaped like one input (nested lists '
                  f"of numbers); got {str(value)[:80]}")


def query_options(query: str, *, extra: Sequence[str] = (), class_names: Sequence[str] | None = None) -> dict[str, Any]:
    """The explanation options of a query string (a ``.npy`` body's, or the GET route's), converted from text.

    ``steps=50&window=2,2&target=3&baseline=mean``; ``extra`` names the other parameters the
    route takes (``row``, ``include_prediction``), returned as given. A target that is a
    number and not a class name is a class index.
    """
    params = parse_qs(query, keep_blank_values=True)
    known = (*OPTIONS, *extra)
    unknown = sorted(set(params) - set(known))
    if unknown:
        raise invalid(f"Unknown query parameters {unknown}; this route takes {', '.join(known)}")
    twice = sorted(k for k, v in params.items() if len(v) > 1)
    if twice:
        raise invalid(f"Query parameters given more than once: {twice}")
    raw = {k: v[0].strip() for k, v in params.items() if v[0].strip() != ""}
    out: dict[str, Any] = {"method": raw.pop("method", "integrated_gradients")}
    for key in ("steps", "samples", "seed", "row"):
        if key in raw:
            out[key] = _int(key, raw.pop(key))
    if "stdevs" in raw:
        out["stdevs"] = _float("stdevs", raw.pop("stdevs"))
    for key in ("window", "stride"):
        if key in raw:
            parts = [p for p in raw.pop(key).split(",")]
            values = [_int(key, p) for p in parts]
            out[key] = values[0] if len(values) == 1 else values
    if "baseline" in raw:
        out["baseline"] = baseline_from_text(raw.pop("baseline"))
    if "target" in raw:
        text = raw.pop("target")
        named = class_names is not None and text in class_names
        out["target"] = int(text) if not named and text.lstrip("-").isdigit() else text
    if "check" in raw:
        text = raw.pop("check").lower()
        if text not in ("true", "false"):
            raise invalid(f"check should be true or false (test the attributions' faithfulness); got {text!r}")
        out["check"] = text == "true"
    if "feature_groups" in raw:
        try:
            out["feature_groups"] = orjson.loads(raw.pop("feature_groups"))
        except orjson.JSONDecodeError:
            raise invalid('feature_groups should be JSON, e.g. {"income": ["salary", "bonus"]}') from None
    out.update(raw)  # the extra parameters, as text
    return out


def _int(key: str, text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise invalid(f"{key} should be an integer; got {text!r}") from None


def _float(key: str, text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise invalid(f"{key} should be a finite number; got {text!r}")
    return value


def check_request(opts: dict[str, Any], shape: tuple[int, ...], version: "ModelVersion", budget: int | None,
                  feature_names: Sequence[str] | None) -> tuple[str, dict[str, Any], int]:
    """The method's canonical name, the keyword arguments for ``Explainer.explain`` and the cost, checked before anything
    is queued.

    Raises ``ArgumentError`` (the routes answer 422 ``invalid_request``) for an unknown method
    (listing the methods) or options the method does not take or of the wrong type;
    :class:`~loopml.errors.OverBudget` (422 ``over_budget``) for a cost over ``budget``, naming
    it and the server option that sets it; :class:`~loopml.errors.ExplainError` (422
    ``cannot_explain``) for a gradient method on a version stored without a differentiable format.
    """
    kwargs = {k: v for k, v in opts.items() if k in OPTIONS and k != "method"}
    planned = {k: kwargs.get(k) for k in ("steps", "samples", "stdevs", "window", "stride", "feature_groups")}
    stored = ", ".join(sorted(f for f in version.files if f in FORMATS)) or "no model file"
    try:
        made = preflight(opts.get("method", "integrated_gradients"), shape, budget=budget, feature_names=feature_names,
                         gradients=bool({"torch", "pt2"} & set(version.files)), ref=version.ref, stored=stored,
                         seed=kwargs.get("seed", 0), **planned)
    except OverBudget as exc:
        raise OverBudget(f"{exc} (this server's budget is set by loopml serve --explain-budget)", cost=exc.cost,
                         budget=exc.budget) from None
    name = made.method
    return name, {"method": name, **kwargs}, made.evaluations(shape[1:]) * math.prod(shape)


def answer_body(head: dict[str, Any], items: Sequence[Mapping[str, Any]] | None, e: Explanation, single: bool) -> bytes:
    """The answer as bytes (:meth:`loopml.explanations.Explanation.answer`: the shape both servers answer)."""
    return orjson.dumps(e.answer(head, items, single=single), option=_OPTS)
