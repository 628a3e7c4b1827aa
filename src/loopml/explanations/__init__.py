"""Explanations: why a model answered what it answered, by Captum's attribution methods.

``loopml.explain`` explains a live module or a registered version (by reference);
the servers explain served versions and logged requests with the same code
(``POST /v1/models/{name}/explain``, ``GET /v1/predictions/{id}/explanation``), and
``loopml explain`` does it from a shell. docs/explain.md has the guide. Example::

    e = loopml.explain("digits@production", x[:4], method="integrated_gradients")
    e.attributions.shape        # (4, 1, 8, 8): like the inputs
    e.target, e.delta           # the explained classes; the completeness error per row
    e.top(5)                    # the strongest positive and negative features
    e.plot()                    # a heat map over the image (signed bars for a table row)

Needs ``pip install 'loopml[explain]'`` (Captum and matplotlib).
"""

from __future__ import annotations

from .explainer import BASELINES, Explainer, baseline_from_text, check_budget, explain, explainer_of, preflight
from .explanation import Explanation, Faithfulness, feature_names_for
from .methods import ALIASES, CHEAP, DEFAULT_BUDGET, GRADIENT_METHODS, METHODS, Options, cost, evaluations, method_name

__all__ = [
    "ALIASES",
    "BASELINES",
    "CHEAP",
    "DEFAULT_BUDGET",
    "GRADIENT_METHODS",
    "METHODS",
    "Explainer",
    "Explanation",
    "Faithfulness",
    "Options",
    "baseline_from_text",
    "check_budget",
    "cost",
    "evaluations",
    "explain",
    "explainer_of",
    "feature_names_for",
    "method_name",
    "preflight",
]
