"""LSTMInference matches torch.nn.LSTM (1e-5), multi-layer, state carried across calls."""

from __future__ import annotations

import pytest
import torch

from culturesim_ray.encoders.lstm_inference import LSTMInference


def make(layers, inp=7, hidden=12, bias=True, seed=0):
    torch.manual_seed(seed)
    return torch.nn.LSTM(inp, hidden, num_layers=layers, batch_first=True, bias=bias).eval()


@pytest.mark.parametrize("layers", [1, 2, 3])
@pytest.mark.parametrize("bias", [True, False])
def test_forward_matches_torch(layers, bias):
    lstm = make(layers, bias=bias)
    x = torch.randn(5, 11, 7)
    with torch.no_grad():
        want, (wh, wc) = lstm(x)
    got, (h, c) = LSTMInference(lstm)(x)
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    torch.testing.assert_close(h, wh, atol=1e-5, rtol=0)
    torch.testing.assert_close(c, wc, atol=1e-5, rtol=0)


def test_streaming_steps_carry_state_across_calls():
    lstm = make(2)
    x = torch.randn(3, 20, 7)
    with torch.no_grad():
        want, _ = lstm(x)
    inf = LSTMInference(lstm)
    state = None
    outs = []
    for t in range(20):
        h, state = inf.step(x[:, t], state)
        outs.append(h)
    torch.testing.assert_close(torch.stack(outs, 1), want, atol=1e-5, rtol=0)
    # two calls of forward with the state handed over equal one call
    a, st = inf(x[:, :8])
    b, _ = inf(x[:, 8:], st)
    torch.testing.assert_close(torch.cat([a, b], 1), want, atol=1e-5, rtol=0)


def test_given_initial_state_and_float64():
    lstm = make(2).double()
    x = torch.randn(2, 6, 7, dtype=torch.float64)
    h0 = torch.randn(2, 2, 12, dtype=torch.float64)
    c0 = torch.randn(2, 2, 12, dtype=torch.float64)
    with torch.no_grad():
        want, _ = lstm(x, (h0, c0))
    got, _ = LSTMInference(lstm)(x, (h0, c0))
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)


def test_frozen_and_no_autograd():
    lstm = make(1)
    inf = LSTMInference(lstm)
    assert all(not w.requires_grad for w in inf.weights)
    out, _ = inf(torch.randn(1, 3, 7, requires_grad=True))
    assert not out.requires_grad
    before = inf.weights[0].clone()
    with torch.no_grad():
        lstm.weight_hh_l0.add_(1.0)  # later training of the source does not leak in
    assert torch.equal(inf.weights[0], before)


def test_rejects_bidirectional():
    with pytest.raises(ValueError, match="unidirectional"):
        LSTMInference(torch.nn.LSTM(3, 4, bidirectional=True))
