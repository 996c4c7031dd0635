"""The melody LSTM trained with Ray Train (2 workers, DDP on gloo)."""

from __future__ import annotations

import pytest
import torch

from culturesim_ray.encoders.music import Vocabulary
from culturesim_ray.encoders.sequence import LSTMConfig, load_model, sample_continuation

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def test_two_workers_learn_and_save_a_loadable_model(ray_session, tmp_path):
    from culturesim_ray.pipeline.train_lstm import train_lstm_distributed

    seqs = [["n+0_1"] + ["n+2_0.5", "n+2_0.5", "n-4_1"] * (4 + i % 3) for i in range(24)]
    vocab = Vocabulary.build(seqs)
    cfg = LSTMConfig(len(vocab), 16, 32, 2)
    metrics = train_lstm_distributed([vocab.encode(s) for s in seqs], vocab, cfg,
                                     str(tmp_path / "lstm"), num_workers=2, epochs=15,
                                     batch_size=6, lr=1e-2)
    assert metrics["epoch"] == 14 and len(metrics["history"]) == 15
    assert metrics["history"][-1] < 0.5 * metrics["history"][0]
    model, v2 = load_model(tmp_path / "lstm")
    assert v2.itos == vocab.itos
    seed = ["n+0_1", "n+2_0.5", "n+2_0.5", "n-4_1", "n+2_0.5", "n+2_0.5"]
    cont = sample_continuation(model, v2, seed, steps=3, temperature=0)
    assert cont == ["n-4_1", "n+2_0.5", "n+2_0.5"]
    assert isinstance(next(model.parameters()), torch.Tensor)
