"""Signatures: inferred from an example, stored as JSON, and every request checked against them."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from loopml.models.signature import (
    Signature,
    TensorSpec,
    infer_signature,
    random_inputs,
)

torch.set_num_threads(1)


def _mlp() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 32), torch.nn.ReLU(), torch.nn.Linear(32, 10))


def _cnn() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.ReLU(), torch.nn.MaxPool2d(2),
        torch.nn.Flatten(), torch.nn.Linear(8 * 4 * 4, 10),
    )


class _TwoOutputs(torch.nn.Module):
    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return x, x


@pytest.fixture(scope="module")
def cnn_sig() -> Signature:
    return infer_signature(_cnn(), torch.randn(4, 1, 8, 8), class_names=[str(d) for d in range(10)])


def test_infer_signature_mlp() -> None:
    model = _mlp().train()
    sig = infer_signature(model, torch.randn(3, 64))
    assert sig.input == TensorSpec(name="x", dtype="float32", shape=(None, 64))
    assert sig.outputs == (TensorSpec(name="output", dtype="float32", shape=(None, 10)),)
    assert sig.class_names is None and not sig.is_classifier
    assert model.training, "infer_signature must restore the model's mode"


def test_infer_signature_cnn_from_numpy_with_class_names(cnn_sig: Signature) -> None:
    sig = infer_signature(_cnn(), np.zeros((2, 1, 8, 8), dtype=np.float32), class_names=list("abcdefghij"),
                          input_name="image", output_name="logits")
    assert sig.input == TensorSpec("image", "float32", (None, 1, 8, 8))
    assert sig.output == TensorSpec("logits", "float32", (None, 10))
    assert sig.is_classifier and sig.class_names == tuple("abcdefghij")
    assert cnn_sig.input.shape == (None, 1, 8, 8)


def test_infer_signature_refusals() -> None:
    with pytest.raises(ValueError, match="one name per output column.*3 names"):
        infer_signature(_mlp(), torch.randn(2, 64), class_names=["a", "b", "c"])
    with pytest.raises(ValueError, match="no duplicates"):
        infer_signature(_mlp(), torch.randn(2, 64), class_names=["a"] * 10)
    with pytest.raises(ValueError, match="single tensor input and a single tensor output"):
        infer_signature(_TwoOutputs(), torch.randn(2, 4))
    with pytest.raises(ValueError, match="single tensor input"):
        infer_signature(_mlp(), (torch.randn(2, 64), torch.randn(2, 64)))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="batch dimension"):
        infer_signature(_mlp(), torch.tensor(1.0))


def test_to_dict_from_dict_round_trip_through_json(cnn_sig: Signature) -> None:
    data = json.loads(json.dumps(cnn_sig.to_dict()))
    assert data["inputs"][0]["shape"] == [None, 1, 8, 8]
    assert Signature.from_dict(data) == cnn_sig
    plain = infer_signature(_mlp(), torch.randn(2, 64))
    assert Signature.from_dict(json.loads(json.dumps(plain.to_dict()))) == plain


@pytest.mark.parametrize(
    ("mutate", "match"),
    [
        (lambda d: d.pop("inputs"), "'inputs' should be a non-empty list"),
        (lambda d: d.update(outputs=[]), "'outputs' should be a non-empty list"),
        (lambda d: d["inputs"][0].update(name=""), r"'inputs\[0\].name' should be a non-empty string"),
        (lambda d: d["inputs"][0].update(dtype="float99"), r"'inputs\[0\].dtype' should be a numpy dtype name"),
        (lambda d: d["inputs"][0].update(dtype="str"), r"'inputs\[0\].dtype' should be a numeric"),
        (lambda d: d["outputs"][0].update(shape=[None, "10"]), r"'outputs\[0\].shape' should be a list of sizes"),
        (lambda d: d["inputs"][0].update(shape=[None, -1]), r"'inputs\[0\].shape' should be a list of sizes"),
        (lambda d: d.update(class_names=[1, 2]), "'class_names' should be a list of strings"),
        (lambda d: d.update(class_names=["a"]), r"'class_names' should have one name per output column \(10\)"),
        (lambda d: d.update(extra=1), r"unknown fields \['extra'\]"),
    ],
)
def test_from_dict_names_the_bad_field(cnn_sig: Signature, mutate: object, match: str) -> None:
    data = json.loads(json.dumps(cnn_sig.to_dict()))
    mutate(data)  # type: ignore[operator]
    with pytest.raises(ValueError, match=match):
        Signature.from_dict(data)


def test_validate_accepts_batches_rows_lists_and_ints(cnn_sig: Signature) -> None:
    batch = np.random.default_rng(0).random((3, 1, 8, 8), dtype=np.float32)
    out = cnn_sig.validate(batch)
    assert out.dtype == np.float32 and out.shape == (3, 1, 8, 8)
    np.testing.assert_array_equal(out, batch)
    row = cnn_sig.validate(batch[0].tolist())  # one row without the batch dim
    assert row.shape == (1, 1, 8, 8)
    ints = cnn_sig.validate(np.ones((2, 1, 8, 8), dtype=np.int64))
    assert ints.dtype == np.float32 and ints.flags.c_contiguous
    f64 = cnn_sig.validate(np.ones((2, 1, 8, 8)))
    assert f64.dtype == np.float32
    strided = cnn_sig.validate(np.ones((2, 1, 8, 16), dtype=np.float32)[..., ::2])
    assert strided.flags.c_contiguous


@pytest.mark.parametrize(
    ("payload", "match"),
    [
        (np.zeros((3, 64), np.float32), r"input 'x' should have shape \(batch, 1, 8, 8\); got \(3, 64\)"),
        (np.zeros((2, 1, 8, 7), np.float32), r"should have shape \(batch, 1, 8, 8\); got \(2, 1, 8, 7\)"),
        (np.zeros((2, 2, 1, 8, 8), np.float32), r"should have shape .*; got \(2, 2, 1, 8, 8\)"),
        (np.zeros(8, np.float32), r"should have shape .*; got \(8,\)"),
        (np.full((2, 1, 8, 8), "a"), "input 'x' should have dtype float32; got strings"),
        (np.zeros((2, 1, 8, 8), bool), "input 'x' should have dtype float32; got bool"),
        ([[[["a"] * 8] * 8]], "should have dtype float32; got strings"),
        (np.full((2, 1, 8, 8), np.nan, np.float32), "should hold finite numbers; got NaN"),
        (np.full((2, 1, 8, 8), np.inf), "should hold finite numbers; got infinity"),
        ([[[[0.0] * 8] * 8], [[[0.0] * 7] * 8]], "got ragged nested lists"),
        (np.zeros((0, 1, 8, 8), np.float32), "should have at least one row; got an empty batch"),
        ([], r"should have shape \(batch, 1, 8, 8\); got \(0,\)"),
        (np.zeros((2, 1, 8, 8), np.complex64), "got complex numbers"),
    ],
)
def test_validate_refusals(cnn_sig: Signature, payload: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        cnn_sig.validate(payload)


def test_validate_mlp_messages_and_empty_batch() -> None:
    sig = infer_signature(_mlp(), torch.randn(2, 64))
    assert sig.validate([0.5] * 64).shape == (1, 64)
    with pytest.raises(ValueError, match=r"input 'x' should have shape \(batch, 64\); got \(1, 63\)"):
        sig.validate([[0.5] * 63])
    with pytest.raises(ValueError, match="empty batch"):
        sig.validate(np.zeros((0, 64)))
    with pytest.raises(ValueError, match="ragged"):
        sig.validate([[1.0, 2.0], [1.0]])


def test_integer_input_spec() -> None:
    sig = Signature(inputs=(TensorSpec("ids", "int64", (None, 4)),), outputs=(TensorSpec("output", "float32", (None, 2)),))
    assert sig.validate([[1, 2, 3, 4]]).dtype == np.int64
    with pytest.raises(ValueError, match="should have dtype int64; got float64"):
        sig.validate([[1.5, 2, 3, 4]])


def test_multi_input_signature_is_refused() -> None:
    spec = TensorSpec("x", "float32", (None, 2))
    sig = Signature(inputs=(spec, spec), outputs=(spec,))
    with pytest.raises(ValueError, match="single tensor input.*2 inputs"):
        sig.validate([[1.0, 2.0]])


def test_random_inputs_pass_validation_and_stay_in_range(cnn_sig: Signature) -> None:
    x = random_inputs(cnn_sig, 100)
    assert x.shape == (100, 1, 8, 8) and x.dtype == np.float32
    np.testing.assert_array_equal(cnn_sig.validate(x), x)
    example = torch.rand(16, 1, 8, 8) * 16.0  # digits-like pixel range
    y = random_inputs(cnn_sig, 50, like=example, seed=1)
    assert y.min() >= float(example.min()) and y.max() <= float(example.max())
    np.testing.assert_array_equal(y, random_inputs(cnn_sig, 50, like=example, seed=1))
    assert not np.array_equal(y, random_inputs(cnn_sig, 50, like=example, seed=2))
    with pytest.raises(ValueError, match="Argument n should be an int >= 1"):
        random_inputs(cnn_sig, 0)
