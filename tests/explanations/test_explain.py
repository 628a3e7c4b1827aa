"""loopml.explain against Captum called directly: same numbers, completeness, formats, budget, bad input."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from tests.deps import need

captum_attr = need("captum.attr", extra="explain")

import loopml  # noqa: E402
from loopml.errors import ArgumentError, ExplainError, OverBudget  # noqa: E402
from loopml.explanations import METHODS, Explainer, cost, evaluations, method_name  # noqa: E402
from loopml.explanations.explainer import blur  # noqa: E402

from ..models.nets import CNN, MLP  # noqa: E402

torch.set_num_threads(1)
CLASSES = [str(i) for i in range(10)]
# Identical operations in the same order give identical floats; occlusion and ablation batch their
# perturbations differently from Captum's default (perturbations_per_eval), which changes summation
# order inside the forward pass: measured differences are below 1e-7 on these models.
ATOL = 1e-6


def _images(n: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).random((n, 1, 8, 8), dtype=np.float32)


@pytest.fixture(scope="module")
def cnn() -> CNN:
    torch.manual_seed(0)
    return CNN().eval()


@pytest.fixture(scope="module")
def mlp() -> MLP:
    torch.manual_seed(1)
    return MLP(n_in=6, hidden=12, n_out=3).eval()


@pytest.fixture(scope="module")
def registry_uri(tmp_path_factory: pytest.TempPathFactory, cnn: CNN) -> Iterator[str]:
    """One SQLite store with the CNN registered three ways: torch + pt2 (with a drift reference), pt2 only, onnx only."""
    from loopml.tracking import api

    root = tmp_path_factory.mktemp("explain-store")
    uri = f"sqlite:///{(root / 'loopml.db').as_posix()}"
    x = _images(200, seed=5)
    train = loopml.data.from_arrays(x, np.arange(200) % 10)
    with pytest.MonkeyPatch.context() as mp:  # the store is opened (and cached by URI) with this artifact root
        mp.setenv("LOOPML_ARTIFACT_ROOT", str(root / "artifacts"))
        client = loopml.Client(uri)
        client.register(cnn, "cnn", input_example=x[:8], class_names=CLASSES, train_data=train)
        client.register(cnn, "cnn_program", input_example=x[:8], class_names=CLASSES, formats=["pt2"])
        client.register(cnn, "cnn_onnx", input_example=x[:8], class_names=CLASSES, formats=["onnx"])
    yield uri
    api.close_all()


def _captum(method: str, model: torch.nn.Module, x: np.ndarray, target: list[int], **kw: Any) -> tuple[np.ndarray, Any]:
    xt = torch.from_numpy(x)
    if method == "saliency":
        return captum_attr.Saliency(model).attribute(xt, target=target).numpy(), None
    if method == "integrated_gradients":
        a, d = captum_attr.IntegratedGradients(model).attribute(
            xt, baselines=torch.zeros_like(xt), target=target, n_steps=kw.get("steps", 50), return_convergence_delta=True)
        return a.detach().numpy(), d.numpy()
    if method == "gradient_shap":
        torch.manual_seed(0)
        np.random.seed(0)  # Captum draws the points on each path with np.random.uniform
        a, d = captum_attr.GradientShap(model).attribute(
            xt, baselines=torch.zeros_like(xt[:1]), target=target, n_samples=20, return_convergence_delta=True)
        return a.detach().numpy(), d.reshape(len(x), 20).mean(dim=1).numpy()
    if method == "deeplift":
        a, d = captum_attr.DeepLift(model).attribute(xt, baselines=torch.zeros_like(xt), target=target, return_convergence_delta=True)
        return a.detach().numpy(), d.detach().numpy()
    if method == "occlusion":
        window = (1, 2, 2) if x.ndim == 4 else (1,)
        stride = (1, 1, 1) if x.ndim == 4 else (1,)
        return captum_attr.Occlusion(model).attribute(xt, sliding_window_shapes=window, strides=stride, target=target).numpy(), None
    return captum_attr.FeatureAblation(model).attribute(xt, target=target, feature_mask=kw.get("feature_mask")).numpy(), None


@pytest.mark.parametrize("method", METHODS)
def test_every_method_gives_captums_numbers_on_an_image_model(cnn: CNN, method: str) -> None:
    x = _images(4)
    e = loopml.explain(cnn, x, method=method)
    predicted = cnn(torch.from_numpy(x)).argmax(dim=1).tolist()
    assert e.target is not None and e.target.tolist() == predicted  # None explains each row's predicted class
    want, delta = _captum(method, cnn, x, predicted)
    assert e.attributions.shape == x.shape and e.attributions.dtype == np.float32
    np.testing.assert_allclose(e.attributions, want, atol=ATOL, rtol=1e-5)
    if delta is None:
        assert e.delta is None
    else:
        assert e.delta is not None
        np.testing.assert_allclose(e.delta, delta, atol=1e-6)
    assert e.evaluations == evaluations(method, x.shape[1:])


@pytest.mark.parametrize("method", ["saliency", "integrated_gradients", "deeplift", "occlusion", "feature_ablation"])
def test_every_method_gives_captums_numbers_on_a_table_model(mlp: MLP, method: str) -> None:
    x = np.random.default_rng(2).normal(size=(5, 6)).astype(np.float32)
    e = loopml.explain(mlp, x, method=method, target=2)
    want, _ = _captum(method, mlp, x, [2] * 5)
    np.testing.assert_allclose(e.attributions, want, atol=ATOL, rtol=1e-5)
    assert e.target is not None and e.target.tolist() == [2] * 5


def test_integrated_gradients_are_complete_within_the_reported_delta(cnn: CNN) -> None:
    x = _images(6, seed=3)
    for baseline in ("zeros", "blur", 0.5):
        e = loopml.explain(cnn, x, method="ig", baseline=baseline, steps=64)
        assert e.target is not None and e.delta is not None
        with torch.no_grad():
            base = torch.from_numpy(blur(x) if baseline == "blur" else np.full_like(x, 0.0 if baseline == "zeros" else 0.5))
            rows = np.arange(len(x))
            change = (cnn(torch.from_numpy(x)) - cnn(base)).numpy()[rows, e.target]
        total = e.attributions.reshape(len(x), -1).sum(axis=1)
        # Captum's delta is exactly sum(attributions) - (F(x) - F(baseline)), computed in float32
        np.testing.assert_allclose(total - change, e.delta, atol=1e-5)
        assert np.abs(e.delta).max() < 0.05 * np.abs(change).max()  # 64 Gauss-Legendre steps on a small ReLU net


def test_a_registered_version_explains_like_its_live_module(cnn: CNN, registry_uri: str) -> None:
    x = _images(3, seed=7)
    live = loopml.explain(cnn, x, method="ig")
    for ref, fmt in (("cnn@latest", "torch"), ("cnn_program/1", "pt2")):
        e = loopml.explain(ref, x, method="ig", tracking_uri=registry_uri)
        assert e.format == fmt and e.ref is not None and e.ref.startswith(ref.split("@")[0].split("/")[0])
        np.testing.assert_allclose(e.attributions, live.attributions, atol=1e-6)
        assert e.target_names == [CLASSES[t] for t in live.target.tolist()]  # type: ignore[union-attr]
    one = loopml.explain("cnn/1", x[0], tracking_uri=registry_uri)  # one row without the batch dimension
    assert one.attributions.shape == (1, 1, 8, 8)
    named = loopml.explain("cnn/1", x, target="3", tracking_uri=registry_uri)
    assert named.target is not None and named.target.tolist() == [3, 3, 3]


def test_the_mean_baseline_is_the_training_mean_from_the_drift_reference(cnn: CNN, registry_uri: str) -> None:
    x = _images(2, seed=9)
    train_mean = _images(200, seed=5).mean(axis=0)  # the reference keeps every row of a 200-row set
    e = loopml.explain("cnn/1", x, baseline="mean", tracking_uri=registry_uri)
    want = loopml.explain(cnn, x, baseline=train_mean)
    assert e.baseline == "mean"
    np.testing.assert_allclose(e.attributions, want.attributions, atol=1e-6)
    with pytest.raises(ExplainError, match="training mean"):
        loopml.explain(cnn, x, baseline="mean")  # a live module has no reference
    with pytest.raises(ExplainError, match="no drift reference"):
        loopml.explain("cnn_program/1", x, baseline="mean", tracking_uri=registry_uri)


def test_formats_without_gradients_take_only_the_perturbation_methods(cnn: CNN, registry_uri: str) -> None:
    x = _images(2, seed=11)
    with pytest.raises(ExplainError, match="only as onnx, which gives no gradients") as info:
        loopml.explain("cnn_onnx/1", x, method="ig", tracking_uri=registry_uri)
    assert info.value.http_status == 422 and info.value.error_code == "cannot_explain"
    e = loopml.explain("cnn_onnx/1", x, method="occlusion", tracking_uri=registry_uri)
    assert e.format == "onnx"
    np.testing.assert_allclose(e.attributions, loopml.explain(cnn, x, method="occlusion").attributions, atol=1e-5)
    with pytest.raises(ExplainError, match="DeepLIFT needs the model's activation layers"):
        loopml.explain("cnn_program/1", x, method="deeplift", tracking_uri=registry_uri)
    assert loopml.explain("cnn/1", x, method="deeplift", tracking_uri=registry_uri).format == "torch"
    with pytest.raises(ExplainError, match="no 'onnx' format"):
        loopml.explain("cnn/1", x, format="onnx", tracking_uri=registry_uri)


def test_the_budget_refuses_before_running_and_names_itself(cnn: CNN) -> None:
    x = _images(64)
    assert cost("ig", x.shape) == 50 * 64 * 64
    with pytest.raises(OverBudget) as info:
        loopml.explain(cnn, x, method="ig", budget=100_000)
    exc = info.value
    assert (exc.cost, exc.budget, exc.http_status, exc.error_code) == (204_800, 100_000, 422, "over_budget")
    assert "budget of 100,000" in str(exc) and "at most 31 rows" in str(exc)
    assert loopml.explain(cnn, x[:31], method="ig", budget=100_000).attributions.shape == (31, 1, 8, 8)
    assert loopml.explain(cnn, x, method="saliency", budget=100_000).evaluations == 1


def test_feature_groups_ablate_together_and_take_names(mlp: MLP) -> None:
    from loopml.models.signature import infer_signature

    x = np.random.default_rng(4).normal(size=(3, 6)).astype(np.float32)
    names = ["age", "income", "debt", "tenure", "plan", "region"]
    sig = infer_signature(mlp, torch.from_numpy(x), feature_names=names)
    ex = Explainer.for_module(mlp, sig)
    e = ex.explain(x, method="feature_ablation", feature_groups={"money": ["income", "debt"], "when": [3]}, target=0)
    mask = torch.tensor([[0, 1, 1, 2, 3, 4]])  # the groups first, then each remaining feature on its own
    want, _ = _captum("feature_ablation", mlp, x, [0] * 3, feature_mask=mask)
    np.testing.assert_allclose(e.attributions, want, atol=ATOL)
    assert np.all(e.attributions[:, 1] == e.attributions[:, 2])
    assert e.evaluations == 5 + 1 and e.options == {"feature_groups": ["money", "when"]}
    assert e.feature_names == names
    with pytest.raises(ArgumentError, match="unknown feature 'salary'"):
        ex.explain(x, method="feature_ablation", feature_groups={"money": ["salary"]})
    with pytest.raises(ArgumentError, match="repeats a feature"):
        ex.explain(x, method="feature_ablation", feature_groups=[[1, 2], [2]])


def test_top_plot_and_json_read_the_same_attributions(cnn: CNN, mlp: MLP) -> None:
    e = loopml.explain(mlp, np.random.default_rng(6).normal(size=(2, 6)).astype(np.float32), method="ig", target=1)
    top = e.top(k=2, row=1)
    flat = e.attributions[1]
    assert list(top.columns) == ["feature", "value", "attribution", "sign"]
    pos, neg = top[top.sign == "+"], top[top.sign == "-"]
    assert list(pos.attribution) == sorted(flat[flat > 0], reverse=True)[: len(pos)]
    assert list(neg.attribution) == sorted(flat[flat < 0])[: len(neg)]
    doc = e.to_dict(k=2)
    assert doc["method"] == "integrated_gradients" and doc["options"] == {"steps": 50} and len(doc["results"]) == 2
    row = doc["results"][1]
    assert row["attributions"] == pytest.approx(flat.tolist()) and row["target_index"] == 1
    assert [t["feature"] for t in row["top"]["positive"]] == list(pos.feature)
    assert len(e.plot(1, k=2).axes[0].patches) == len(top)  # one bar per top feature
    img = loopml.explain(cnn, _images(1), method="saliency")
    rgba = img.heatmap_rgba(0)
    assert rgba.shape == (8, 8, 4) and np.all((0 <= rgba) & (rgba <= 1))
    assert img.png(0).startswith(b"\x89PNG")
    text = img.heatmap_text(0)  # a terminal's heat map: two blocks per pixel, one line per image row
    assert text.plain == ("\u2588" * 16 + "\n") * 8
    strongest = np.unravel_index(np.abs(img.attributions[0, 0]).argmax(), (8, 8))
    span = text.spans[int(strongest[0]) * 8 + int(strongest[1])]
    assert str(span.style) in ("rgb(255,0,0)", "rgb(0,0,255)")  # the strongest pixel at full colour
    assert e.heatmap_text(0) is None  # a table row has bars, not a heat map


@pytest.mark.parametrize(
    ("kwargs", "error", "match"),
    [
        ({"method": "lime"}, ArgumentError, "should be one of saliency, integrated_gradients"),
        ({"method": 3}, ArgumentError, "should be a string"),
        ({"target": 10}, ExplainError, "class index from 0 to 9"),
        ({"target": [1, 2]}, ArgumentError, "one class per row"),
        ({"steps": 0}, ArgumentError, "steps should be an int from 1"),
        ({"method": "saliency", "steps": 5}, ArgumentError, "saliency takes no options"),
        ({"method": "occlusion", "window": [2, 9, 9]}, ArgumentError, "none larger"),
        ({"baseline": "blurry"}, ArgumentError, "should be one of zeros, mean, blur"),
        ({"baseline": np.zeros((2, 2))}, ArgumentError, "shaped like one input"),
        ({"baseline": float("nan")}, ArgumentError, "finite number"),
        ({"budget": 0}, ArgumentError, "budget should be an int >= 1"),
    ],
)
def test_bad_arguments_say_what_to_do(cnn: CNN, kwargs: dict[str, Any], error: type[Exception], match: str) -> None:
    with pytest.raises(error, match=match):
        loopml.explain(cnn, _images(3), **kwargs)


def test_bad_inputs_and_models_say_what_to_do(cnn: CNN, registry_uri: str) -> None:
    with pytest.raises(ArgumentError, match=r"should have shape \(batch, 1, 8, 8\); got \(2, 64\)"):
        loopml.explain("cnn/1", np.zeros((2, 64), np.float32), tracking_uri=registry_uri)
    with pytest.raises(ArgumentError, match="rows first"):
        loopml.explain(cnn, np.zeros(64, np.float32))
    with pytest.raises(ArgumentError, match="Argument model should be a torch.nn.Module"):
        loopml.explain(42, _images(1))
    with pytest.raises(ArgumentError, match="blurs images"):
        loopml.explain(MLP(n_in=6, n_out=3), np.zeros((1, 6), np.float32), baseline="blur")
    assert method_name("IG") == "integrated_gradients" and method_name("shap") == "gradient_shap"


def test_gradient_shap_is_repeatable_by_seed_and_leaves_the_global_generator_alone(cnn: CNN) -> None:
    x = _images(2)
    torch.manual_seed(123)
    np.random.seed(123)
    before = (torch.rand(1), np.random.rand())
    torch.manual_seed(123)
    np.random.seed(123)
    a = loopml.explain(cnn, x, method="gradient_shap", stdevs=0.1)
    after = (torch.rand(1), np.random.rand())
    assert torch.equal(before[0], after[0]) and before[1] == after[1]  # the global generators are left as they were
    b = loopml.explain(cnn, x, method="gradient_shap", stdevs=0.1)
    c = loopml.explain(cnn, x, method="gradient_shap", stdevs=0.1, seed=1)
    np.testing.assert_array_equal(a.attributions, b.attributions)
    assert not np.array_equal(a.attributions, c.attributions)


def test_a_module_in_training_mode_is_explained_in_eval_mode_and_left_as_it_was(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2)).train()
    x = np.ones((3, 4), np.float32)
    a = loopml.explain(model, x, method="saliency")
    b = loopml.explain(model, x, method="saliency")
    np.testing.assert_array_equal(a.attributions, b.attributions)  # dropout off while explaining
    assert model.training and model[1].training


def test_a_client_explains_the_versions_of_its_own_store(cnn: CNN, registry_uri: str) -> None:
    x = _images(2, seed=13)
    e = loopml.Client(registry_uri).explain("cnn@latest", x, method="saliency")
    assert e.ref == "cnn/1" and e.format == "torch"
    np.testing.assert_array_equal(e.attributions, loopml.explain(cnn, x, method="saliency").attributions)
    assert loopml.Client(registry_uri).explain("cnn_onnx/1", x, method="occlusion").format == "onnx"


def test_the_faithfulness_check_tells_real_attributions_from_random_ones() -> None:
    from sklearn.datasets import load_digits

    from loopml.explanations import Explanation

    digits = load_digits()
    x, y = (digits.data / 16).astype(np.float32), torch.from_numpy(digits.target)
    torch.manual_seed(0)
    model = MLP(n_in=64, hidden=32, n_out=10)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(60):  # full batch: 0.97+ training accuracy, enough for attributions to mean something
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(torch.from_numpy(x)), y).backward()
        opt.step()
    model.eval()
    e = loopml.explain(model, x[:40], method="ig", check=True)
    f = e.faithfulness
    assert f is not None and f.removed == 6 and f.trials == 20  # 10% of 64 values
    assert f.faithful.all() and (f.top_drop > 3 * f.random_drop).all()
    noise = np.random.default_rng(0).normal(size=e.attributions.shape).astype(np.float32)
    shuffled = Explanation(**{**e.__dict__, "attributions": noise, "faithfulness": None})
    g = Explainer.for_module(model).faithfulness(shuffled)
    assert g.faithful.mean() < 0.3 and g.top_drop.mean() < 0.5 * f.top_drop.mean()  # random attributions: no better than chance
    row = e.to_dict()["results"][0]["faithfulness"]
    assert row["faithful"] is True and row["removed"] == 6 and row["top_drop"] == pytest.approx(float(f.top_drop[0]))
    assert "faithful on 40 of 40 rows" in str(f)
    assert loopml.explain(model, x[:2], method="saliency").faithfulness is None  # only when asked
    with pytest.raises(ArgumentError, match="fraction should be between 0 and 1"):
        Explainer.for_module(model).faithfulness(e, fraction=1.5)
