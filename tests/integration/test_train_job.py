"""Staged MoCo training of the fusion model on Ray Train (2 workers) and its export."""

from __future__ import annotations

import json
from dataclasses import asdict

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from conftest import FLAGS, KillWhen, corpus_rows, write_jsonl
from culturesim_ray.config import AllPairsConfig, EmbedConfig
from culturesim_ray.models.culturesim import CultureSimConfig
from culturesim_ray.pipeline.allpairs import run_allpairs
from culturesim_ray.pipeline.embed import run_embed
from culturesim_ray.training.config import TrainConfig

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]


def test_two_workers_train_through_the_stages_and_export(ray_session, tmp_path):
    from culturesim_ray.pipeline.train import run_train

    rows = corpus_rows()
    rows += [{**r, "item_id": r["item_id"] + "-b", "text": r["text"] + " Again."}
             for r in corpus_rows(with_image=False)]
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    run_embed(str(corpus), str(tmp_path / "emb"), EmbedConfig(batch_size=8, uri_roots=[str(FLAGS)]),
              log=lambda *_: None)
    from culturesim_ray.progress import Stage
    with Stage("train", unit="steps") as st:  # the CLI's bar: the workers' steps
        manifest = run_train(str(tmp_path / "emb"), str(tmp_path / "train"), num_workers=2,
                             stages=((1, 2), (2, 2), (3, 2)), steps_per_epoch=4, hidden=32,
                             out_dim=16, queue_size=32, log=lambda *_: None)
    assert (st.done, st.total) == (manifest["counts"]["steps"], 24)
    hist = manifest["history"]
    assert manifest["input"] == str((tmp_path / "emb").absolute())  # serve TRAIN finds it
    assert [h["stage"] for h in hist][:4] == [1, 1, 2, 2]
    assert manifest["counts"]["steps"] == 4 * len(hist)
    table = pq.read_table(tmp_path / "train" / "culture_embeddings.parquet")
    heads = set(table.column("head").to_pylist())
    assert heads == {"general", "history", "symbols"}
    assert set(table.column("culture").to_pylist()) == {"Turkish", "Greek", "Persian"}
    # run_train's defaults: the general head carries the raw residual (raw_weight 0.9),
    # and so does each theme head (over the culture's items of that theme: theme_raw);
    # the culture map reads the learned part at 0.1
    mcfg = CultureSimConfig(**json.loads((tmp_path / "train" / "model_config.json").read_text()))
    assert mcfg.raw_weight == 0.9 and mcfg.raw_dim > 0 and mcfg.map_learned == 0.1
    assert mcfg.map_learned_share == 0.05  # the learned weight fitted to the raw spread
    # and each modality's raw means through the run's within-culture whitening
    from culturesim_ray.runs import read_map_whitening
    assert mcfg.map_whiten == 30.0
    white = read_map_whitening(str(tmp_path / "train"), asdict(mcfg))
    assert {m: w.shape for m, w in white.items()} == {m: (d, d) for m, d in mcfg.in_dims.items()}
    assert np.allclose(white["text"], white["text"].T, atol=1e-6)
    assert not np.allclose(white["text"], white["text"][0, 0] * np.eye(384), atol=1e-4)
    assert mcfg.theme_raw and mcfg.has_raw("history")
    dims = {h: len(v) for h, v in zip(table.column("head").to_pylist(),
                                      table.column("vector").to_pylist(), strict=True)}
    assert dims == {"general": mcfg.head_dim("general"), "history": mcfg.raw_dim + 16,
                    "symbols": mcfg.raw_dim + 16}
    # the serving state carries each item's culture and the query mix (TrainConfig.query)
    serving = json.loads((tmp_path / "train" / "serving" / "manifest.json").read_text())
    from culturesim_ray.ops.query_score import QueryMix
    assert QueryMix.from_dict(serving["query_mix"]) == TrainConfig().query
    # texts meet single items with the corpus's dominant directions removed (ops.abtt)
    assert serving["modalities"]["text"]["abtt_directions"] == 4  # MiniLM: 384 / 100
    assert serving["modalities"]["image"]["abtt_directions"] == 0
    assert serving["cultures"] == ["Greek", "Persian", "Turkish"]
    from culturesim_ray.runs import read_embeddings
    from culturesim_ray.serving.artifacts import read_item_ids
    for m in serving["modalities"]:
        assert (tmp_path / "train" / "serving" / m / "culture.npy").exists()
        # and each item's id, in the rows of the states (the answers' evidence)
        ids = read_item_ids(str(tmp_path / "train" / "serving" / m / "item_ids.arrow"))
        assert len(ids) == serving["modalities"][m]["items"]
        emb = read_embeddings(str(tmp_path / "emb"), m)[m]
        assert sorted(ids.to_pylist()) == sorted(emb.column("item_id").to_pylist())
    # per modality, among the cultures having it: 6 texts each, one flag each
    assert manifest["counts"]["culture_items"]["text"] == {"min": 6, "max": 6}
    assert manifest["counts"]["culture_items"]["image"] == {"min": 1, "max": 1}
    assert manifest["notes"] == []  # 6 texts against 1 flag is not an imbalance
    # the theme gate fitted on the training items as queries, written into the weights
    # (the serving state's digest follows them) and reported
    assert manifest["gate"] == serving["gate"]
    assert serving["gate"]["themes"] == ["history", "symbols"]
    assert serving["gate"]["train_items"] > 0
    from culturesim_ray.runs import load_fusion_model
    from culturesim_ray.serving.artifacts import load_serving_state
    load_serving_state(str(tmp_path / "train" / "serving"), str(tmp_path / "train" / "model.pt"))
    assert bool(load_fusion_model(tmp_path / "train").theme_heads.gate.weight.isfinite().all())
    # holdout 0.2: one of each culture's 6 texts (the single flag stays in training)
    held = pq.read_table(tmp_path / "train" / "holdout.parquet")
    assert held.num_rows == manifest["counts"]["held_out_items"] == 3
    assert set(held.column("modality").to_pylist()) == {"text"}
    assert sorted(held.column("culture").to_pylist()) == ["Greek", "Persian", "Turkish"]
    # the export is the all-pairs job's culture-level input
    ap = run_allpairs(str(tmp_path / "train" / "culture_embeddings.parquet"),
                      str(tmp_path / "ap"), AllPairsConfig(k=2), log=lambda *_: None)
    assert set(ap["counts"]["heads"]) >= {"general", "history", "symbols", "combined"}
    # every head of the run compared as its culture map: raw part over the shared
    # modalities, the learned part weighted to 0.05 of the raw term's spread (per head)
    recs = ap["head_similarity"]
    assert set(recs) == {"general", "history", "symbols"}
    assert all(s["learned_share"] == 0.05 and s["learned"] > 0 for s in recs.values())
    assert len({s["whitened"] for s in ap["head_similarity"].values()} - {None}) == 1
    # the general map is the in-process read-out with the run's whitening
    from culturesim_ray.runs import general_similarity, read_culture_embeddings
    names, vecs = read_culture_embeddings(tmp_path / "train" / "culture_embeddings.parquet")[
        "general"]
    x = torch.from_numpy(np.array(vecs))
    want = general_similarity(asdict(mcfg), vecs, white)(x, x).numpy()
    rows = pq.read_table(tmp_path / "ap" / "matrices" / "general.parquet").to_pylist()
    for r in rows:
        i, j = names.index(r["culture_a"]), names.index(r["culture_b"])
        assert r["score"] == pytest.approx(float(want[i, j]), abs=1e-5)
    # and the combined head sums those theme maps: its pairs are the dense combined
    # matrix's entries, the alpha-weighted theme matrices (a culture without a theme
    # adds 0 for it), not a cosine of the concatenated theme vectors
    def matrix(h: str) -> dict[tuple[str, str], float]:
        rows = pq.read_table(tmp_path / "ap" / "matrices" / f"{h}.parquet").to_pylist()
        return {(r["culture_a"], r["culture_b"]): r["score"] for r in rows}

    mats = {h: matrix(h) for h in ("history", "symbols", "combined")}
    comb = [r for r in pq.read_table(tmp_path / "ap" / "pairs.parquet").to_pylist()
            if r["theme"] == "combined"]
    assert len(comb) == 6 and {r["similarity"] for r in comb} == {"modality_cosine"}
    for r in comb:
        key = (r["culture_a"], r["culture_b"])
        assert r["score"] == pytest.approx(mats["combined"][key], abs=1e-5)
        assert r["score"] == pytest.approx(
            sum(a * mats[t].get(key, 0.0) for t, a in ap["alpha"].items()), abs=1e-5)


def test_killed_worker_resumes_at_the_same_step_with_the_same_queue(ray_session, tmp_path):
    from culturesim_ray.pipeline.train import run_train

    corpus = write_jsonl(tmp_path / "c.jsonl", corpus_rows())
    run_embed(str(corpus), str(tmp_path / "emb"), EmbedConfig(batch_size=8, uri_roots=[str(FLAGS)]),
              log=lambda *_: None)
    out = tmp_path / "train"
    def registered() -> int:  # checkpoints the controller has taken on, not just files
        snap = out / "ray_train" / "culturesim" / "checkpoint_manager_snapshot.json"
        try:
            return len(json.loads(snap.read_text())["checkpoint_results"])
        except (OSError, ValueError, KeyError):
            return 0

    from culturesim_ray.progress import Stage
    with (Stage("train", unit="steps") as st,
          KillWhen("RayTrainWorker", lambda: registered() >= 2, poll=0.1) as killer):
        manifest = run_train(str(tmp_path / "emb"), str(out), num_workers=2,
                             stages=((1, 3), (2, 2), (3, 2)), steps_per_epoch=3, hidden=32,
                             out_dim=16, queue_size=32, log=lambda *_: None)
    assert st.done == manifest["counts"]["steps"]  # the bar follows the resumed worker
    assert killer.killed, "no training worker was found to kill"
    assert manifest["resumes"], "the run did not resume from a checkpoint"
    resume = manifest["resumes"][0]
    hist = manifest["history"]
    before = [h for h in hist if h["step"] == resume["step"]]
    assert before and before[0]["queue_sum"] == pytest.approx(resume["queue_sum"], rel=1e-9)
    steps = [h["step"] for h in hist]
    assert steps == sorted(set(steps)) and steps == [3 * (i + 1) for i in range(len(steps))]
    assert manifest["counts"]["steps"] == steps[-1]


def test_step_progress_moves_the_bar_to_the_workers_step(ray_session):
    import time

    import ray

    from culturesim_ray.pipeline.trainer import StepTeller, step_progress
    from culturesim_ray.progress import Stage

    def shown(st: Stage, want: int) -> bool:
        deadline = time.time() + 10
        while st.done != want and time.time() < deadline:
            time.sleep(0.02)
        return st.done == want

    def gone(counter) -> bool:  # ray.kill returns before the actor has died
        deadline = time.time() + 30
        while time.time() < deadline:
            try:
                ray.get(counter.get.remote(), timeout=10)
            except ray.exceptions.RayActorError:
                return True
            time.sleep(0.05)
        return False

    with Stage("train", unit="steps") as st:
        with step_progress(10, interval=0.02) as counter:
            assert st.total == 10 and st.done == 0
            ray.get(counter.set.remote(4))
            assert shown(st, 4)
            ray.get(counter.set.remote(2))  # a resumed worker restarts from a checkpoint
            assert shown(st, 2)
            teller = StepTeller(counter, rank=0, every=3600)  # one call an hour at most...
            teller.tell(8)
            teller.tell(9)  # too soon: not sent (one caller's calls run in order)
            assert ray.get(counter.get.remote()) == 8
            teller.tell(10, wait=True)  # ... but a checkpoint's is always sent
            assert ray.get(counter.get.remote()) == 10
            counter.set.remote(7)  # not waited for: read once more at the end
        assert st.done == 7
        assert gone(counter)
        teller = StepTeller(counter, rank=0)  # a worker that cannot reach it trains on
        teller.tell(8, wait=True)
        assert teller.counter is None and StepTeller(object(), rank=1).counter is None
        with pytest.raises(ValueError, match="fit failed"), step_progress(5) as counter:
            raise ValueError("fit failed")
        assert gone(counter)


def test_hetero_training_with_a_relations_file_and_serving_its_model(ray_session, trained_run,
                                                                  tmp_path):
    """The hetero variant end to end: a relations file links texts to flags (one bad
    row quarantined), Ray Train trains it, and the serving predictor rebuilds the
    same graph from the run's manifest."""
    import numpy as np

    from culturesim_ray.pipeline.train import run_train
    from culturesim_ray.serving.predictor import FusionPredictor

    rel = tmp_path / "relations.csv"
    rel.write_text("src_item,dst_item,relation\n"
                   "turkish-0,turkish-flag,depicts\ngreek-1,greek-flag,depicts\n"
                   "persian-0,persian-9,depicts\n")
    embed = str(trained_run / "embed")
    manifest = run_train(embed, str(tmp_path / "train"), num_workers=1,
                         stages=((1, 1), (2, 1), (3, 1)), steps_per_epoch=2, hidden=32,
                         out_dim=16, queue_size=16, graph="hetero", relations=str(rel),
                         log=lambda *_: None)
    cfg = json.loads((tmp_path / "train" / "model_config.json").read_text())
    assert cfg["graph"] == "hetero"
    assert ["image", "depicts", "text"] in cfg["relations"]
    assert ["text", "depicts", "image"] in cfg["relations"]
    assert manifest["counts"]["relations_quarantined"] == 1
    bad = (tmp_path / "train" / "relations_quarantine.jsonl").read_text().splitlines()
    assert "'persian-9' is not an item" in json.loads(bad[0])["reason"]
    pred = FusionPredictor.from_run(str(tmp_path / "train"), embed)
    q = np.random.default_rng(0).normal(size=(2, 384)).astype(np.float32)
    # raw_weight 0.9 (run_train's default): the query's vector fills its modality's raw slot
    general = pred.general(pred.fuse("text", q), "text", q)
    head_dim = pred.model.cfg.head_dim("general")
    assert head_dim == 16 + pred.model.cfg.raw_dim > 16
    assert general.shape == (2, head_dim) and np.isfinite(general).all()
    np.testing.assert_allclose(np.linalg.norm(general, axis=1), 1.0, rtol=1e-5)


def test_gpu_training_on_a_cluster_without_gpus_fails_at_once(ray_session, trained_run):
    from culturesim_ray.pipeline.train import run_train

    with pytest.raises(ValueError, match=r"need one GPU each, but the Ray cluster has 0 GPU"):
        run_train(str(trained_run / "embed"), str(trained_run / "gpu-train"), num_workers=1,
                  use_gpu=True, log=lambda *_: None)


def test_training_on_a_single_culture_fails_with_a_clear_error(ray_session, tmp_path):
    from culturesim_ray.pipeline.train import run_train

    rows = [r for r in corpus_rows(with_image=False) if r["culture"] == "Greek"]
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    run_embed(str(corpus), str(tmp_path / "emb"), EmbedConfig(batch_size=8), log=lambda *_: None)
    with pytest.raises(ValueError, match=r"items of 1 culture\(s\) \['Greek'\]; the model learns "
                                         r"what tells cultures apart"):
        run_train(str(tmp_path / "emb"), str(tmp_path / "train"), num_workers=1,
                  log=lambda *_: None)
    assert not (tmp_path / "train" / "model.pt").exists()


def test_train_notes_a_corpus_whose_cultures_differ_tenfold(ray_session, tmp_path, capsys):
    """`culturesim train` on cultures of 1, 3 and 12 items: the closing lines say that
    the query score favours the big cultures there, and how to turn that off."""
    from culturesim_ray.cli import main

    base = corpus_rows(with_image=False)
    rows = [r for r in base if r["culture"] == "Persian"]
    rows += [{**r, "item_id": f"{r['item_id']}-{i}", "text": f"{r['text']} ({i})"}
             for r in base if r["culture"] == "Turkish" for i in range(4)]
    rows.append(next(r for r in base if r["culture"] == "Greek"))
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    run_embed(str(corpus), str(tmp_path / "emb"), EmbedConfig(batch_size=8),
              log=lambda *_: None)
    assert main(["train", str(tmp_path / "emb"), "--out", str(tmp_path / "train"),
                 "--workers", "1", "--stage-epochs", "1", "1", "1", "--steps-per-epoch", "1",
                 "--hidden", "16", "--out-dim", "8"]) == 0
    out = capsys.readouterr().out
    assert "train: note: cultures hold text items 1 to 12 (12x) per culture" in out
    assert "nearest: 0.0" in out
    manifest = json.loads((tmp_path / "train" / "manifest.json").read_text())
    assert manifest["counts"]["culture_items"] == {"text": {"min": 1, "max": 12}}
    assert len(manifest["notes"]) == 1
