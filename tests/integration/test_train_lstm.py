"""The melody LSTM trained with Ray Train (2 workers, DDP on gloo)."""

from __future__ import annotations

import pytest
import torch

from culturesim_ray.encoders.music import Vocabulary
from culturesim_ray.encoders.sequence import LSTMConfig, load_model, sample_continuation

pytestmark = [pytest.mark.ray, pytest.mark.timeout(300)]


def test_two_workers_learn_and_save_a_loadable_model(ray_session, tmp_path):
    from culturesim_ray.pipeline.train_lstm import train_lstm_distributed, write_sample

    seqs = [["n+0_1"] + ["n+2_0.5", "n+2_0.5", "n-4_1"] * (4 + i % 3) for i in range(24)]
    vocab = Vocabulary.build(seqs)
    cfg = LSTMConfig(len(vocab), 16, 32, 2)
    metrics = train_lstm_distributed(write_sample(seqs, tmp_path / "sample"), vocab, cfg,
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


def test_shards_of_a_parquet_sample(tmp_path):
    """Worker r of W takes a contiguous range of the parts laid end to end in name
    order: the shards are disjoint, cover the sample in order and differ in size by
    at most one; the defaults give it all."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from culturesim_ray.pipeline.train_lstm import read_sample_tokens, sample_size

    seqs = [[f"n+{i}_1"] * (1 + i % 4) for i in range(23)]
    sample = tmp_path / "sample"
    sample.mkdir()
    for j, (a, b) in enumerate([(0, 5), (5, 6), (6, 6), (6, 23)]):  # one part empty
        pq.write_table(pa.table({"tokens": pa.array(seqs[a:b], pa.list_(pa.string()))}),
                       sample / f"part-{j:05d}.parquet")
    assert sample_size(str(sample)) == 23
    assert read_sample_tokens(str(sample)) == seqs
    for world in (2, 3, 23):
        shards = [read_sample_tokens(str(sample), None, rank, world) for rank in range(world)]
        assert [s for shard in shards for s in shard] == seqs
        assert max(map(len, shards)) - min(map(len, shards)) <= 1


def test_workers_train_on_their_shards_of_the_sample(ray_session, tmp_path):
    """The embed job's form: the train config carries the sample's path, never a
    melody; long melodies are cut as the plain loop cuts them; never more workers
    than melodies."""
    from culturesim_ray.pipeline.train_lstm import train_lstm_distributed, write_sample

    seqs = [["n+0_1"] + ["n+2_0.5", "n+2_0.5", "n-4_1"] * (4 + i % 3) for i in range(24)]
    seqs[5] = seqs[5] * 40  # 640 tokens: cut to 256 ids in training
    vocab = Vocabulary.build(seqs)
    metrics = train_lstm_distributed(write_sample(seqs, tmp_path / "sample"), vocab,
                                     LSTMConfig(len(vocab), 16, 32, 2), str(tmp_path / "lstm"),
                                     num_workers=2, epochs=10, batch_size=6, lr=1e-2)
    assert metrics["history"][-1] < 0.5 * metrics["history"][0]
    assert load_model(tmp_path / "lstm")[1].itos == vocab.itos
    one = write_sample([seqs[0], []], tmp_path / "one")  # the empty melody is left out
    few = train_lstm_distributed(one, vocab, LSTMConfig(len(vocab), 8, 8, 1),
                                 str(tmp_path / "one-lstm"), num_workers=2, epochs=1)
    assert len(few["history"]) == 1
