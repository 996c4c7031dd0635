"""models.dropout.Dropout: nn.Dropout's semantics with a uniform-draw mask."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from culturesim_ray.models.dropout import Dropout


def test_train_mode_zeroes_a_share_p_and_rescales_the_rest():
    torch.manual_seed(0)
    x = torch.rand(400, 500, dtype=torch.float64) + 0.5  # no zeros in the input
    y = Dropout(0.3).train()(x)
    zero = y == 0
    assert abs(zero.double().mean().item() - 0.3) < 0.005  # 200,000 draws: sd 0.001
    torch.testing.assert_close(y[~zero], x[~zero] / 0.7)
    assert abs(y.mean().item() / x.mean().item() - 1.0) < 0.01  # unbiased
    # the gradient is the same mask and scale
    xr = x.clone().requires_grad_(True)
    torch.manual_seed(1)
    out = Dropout(0.3).train()(xr)
    out.sum().backward()
    torch.testing.assert_close(xr.grad, (out != 0).double() / 0.7)


def test_eval_and_p_zero_are_the_identity_and_seeded_runs_repeat():
    x = torch.randn(50, 8)
    assert Dropout(0.5).eval()(x) is x
    assert Dropout(0.0).train()(x) is x
    torch.manual_seed(3)
    a = Dropout(0.2).train()(x)
    torch.manual_seed(3)
    b = Dropout(0.2).train()(x)
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        Dropout(1.0)


def test_same_state_dict_as_nn_dropout():
    a = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.1))
    b = nn.Sequential(nn.Linear(4, 4), Dropout(0.1))
    b.load_state_dict(a.state_dict())  # strict: no extra or missing keys
    assert list(a.state_dict()) == list(b.state_dict())
