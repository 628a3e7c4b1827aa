"""mode="compile": the same training as eager within a tolerance; a compiler failure falls back to eager."""

from __future__ import annotations

import pytest
import torch

from loopml.train import Trainer, lambda_callback

from .conftest import mlp

# compiled kernels may fuse and reorder float32 sums: per-step losses agree to this
ATOL = 1e-5


def _losses(mode: str, **kwargs) -> tuple[list[float], Trainer]:
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(64, 64, generator=g), torch.randint(0, 10, (64,), generator=g)
    losses: list[float] = []
    model = mlp(hidden=16)
    trainer = Trainer(model, optimizer=torch.optim.SGD(model.parameters(), lr=0.1), mode=mode, track=False,
                      callbacks=[lambda_callback(on_batch_end=lambda t: losses.append(t.state.loss))], **kwargs)
    trainer.fit((x, y), epochs=2, batch_size=32)  # one batch shape: one compilation
    return losses, trainer


@pytest.mark.slow
def test_compile_matches_eager() -> None:
    eager, _ = _losses("eager")
    compiled, trainer = _losses("compile")
    assert trainer._forward is not trainer.model  # it really ran compiled
    assert len(compiled) == len(eager) == 4
    torch.testing.assert_close(torch.tensor(compiled), torch.tensor(eager), atol=ATOL, rtol=0)


def test_compile_failure_falls_back_to_eager_with_a_warning() -> None:
    eager, _ = _losses("eager")
    with pytest.warns(RuntimeWarning, match=r"torch.compile failed .*training in eager mode"):
        fallback, trainer = _losses("compile", compile_options={"backend": "no-such-backend"})
    assert trainer._forward is trainer.model
    assert fallback == eager
