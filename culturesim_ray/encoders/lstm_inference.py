"""LSTM inference form (SPEC E2): frozen weights, no autograd, fused gates.

Built from a trained `torch.nn.LSTM` (batch_first or not). Per layer the
input and recurrent weights are concatenated into one (in + H, 4H) matrix and
the two biases summed, so one step is one matrix product:

    z = [x_t, h] @ W + b          (B, 4H), gates reordered to i, f, o | g
    s = sigmoid(z[:, :3H]) (one call), g = tanh(z[:, 3H:])
    c' = f * c + i * g;  h' = o * tanh(c')

`step(x_t, state)` carries (h, c) for streaming input; `forward(x, state)`
runs a whole (B, T, in) sequence. Outputs match `torch.nn.LSTM` to 1e-5.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

State = tuple[Tensor, Tensor]  # h, c: (layers, B, H) each, like torch.nn.LSTM


class LSTMInference:
    """Forward-only LSTM from `torch.nn.LSTM` weights (unidirectional, no projection)."""

    def __init__(self, lstm: nn.LSTM) -> None:
        if lstm.bidirectional or getattr(lstm, "proj_size", 0):
            raise ValueError("LSTMInference supports unidirectional LSTMs without projection")
        self.hidden = lstm.hidden_size
        self.layers = lstm.num_layers
        self.input_size = lstm.input_size
        self.weights: list[Tensor] = []  # per layer (in + H, 4H)
        self.biases: list[Tensor] = []  # per layer (4H,)
        with torch.no_grad():
            for k in range(self.layers):
                w_ih = getattr(lstm, f"weight_ih_l{k}").detach()
                w_hh = getattr(lstm, f"weight_hh_l{k}").detach()
                # torch's gate order is i, f, g, o; keep the three sigmoid gates together
                h = self.hidden
                order = torch.cat([torch.arange(0, 2 * h), torch.arange(3 * h, 4 * h),
                                   torch.arange(2 * h, 3 * h)]).to(w_ih.device)
                w = torch.cat([w_ih, w_hh], dim=1)[order]
                self.weights.append(w.T.contiguous())
                if lstm.bias:
                    b = getattr(lstm, f"bias_ih_l{k}").detach() + getattr(lstm, f"bias_hh_l{k}").detach()
                else:
                    b = torch.zeros(4 * h, dtype=w_ih.dtype, device=w_ih.device)
                self.biases.append(b[order].clone())
        self._xh: Tensor | None = None  # reused [x, h] buffer for batch-1 streaming

    @staticmethod
    def _cell(z: Tensor, c: Tensor, hidden: int) -> tuple[Tensor, Tensor]:
        """Gate pre-activations z (B, 4H) in i, f, o, g order -> new (c, h)."""
        gates = torch.sigmoid(z[:, : 3 * hidden])
        g = torch.tanh(z[:, 3 * hidden:])
        i, f, o = gates[:, :hidden], gates[:, hidden:2 * hidden], gates[:, 2 * hidden:]
        c = torch.addcmul(f * c, i, g)
        return c, o * torch.tanh(c)

    def zero_state(self, batch: int, like: Tensor | None = None) -> State:
        ref = like if like is not None else self.weights[0]
        z = torch.zeros(self.layers, batch, self.hidden, dtype=ref.dtype, device=ref.device)
        return z, z.clone()

    @torch.inference_mode()
    def step(self, x_t: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """One time step: x_t (B, in) -> (h_t of the top layer (B, H), new state)."""
        h0, c0 = state if state is not None else self.zero_state(x_t.shape[0], x_t)
        hs, cs = [], []
        inp = x_t
        H = self.hidden
        for k in range(self.layers):
            z = torch.addmm(self.biases[k], torch.cat([inp, h0[k]], dim=1), self.weights[k])
            c, h = self._cell(z, c0[k], H)
            hs.append(h)
            cs.append(c)
            inp = h
        return inp, (torch.stack(hs), torch.stack(cs))

    @torch.inference_mode()
    def forward(self, x: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """x (B, T, in), batch first -> (outputs (B, T, H) of the top layer, final state).

        Layer by layer: the input projection of a whole sequence is one matrix
        product; only the recurrent part runs step by step."""
        b, t, _ = x.shape
        h0, c0 = state if state is not None else self.zero_state(b, x)
        H = self.hidden
        seq = x
        hs, cs = [], []
        for k in range(self.layers):
            w_in, w_h = self.weights[k][: seq.shape[2]], self.weights[k][seq.shape[2]:]
            pre = torch.addmm(self.biases[k], seq.reshape(b * t, -1), w_in).view(b, t, 4 * H)
            h, c = h0[k], c0[k]
            outs = torch.empty(b, t, H, dtype=x.dtype, device=x.device)
            for s in range(t):
                z = torch.addmm(pre[:, s], h, w_h)
                c, h = self._cell(z, c, H)
                outs[:, s] = h
            hs.append(h)
            cs.append(c)
            seq = outs
        return seq, (torch.stack(hs), torch.stack(cs))

    __call__ = forward
