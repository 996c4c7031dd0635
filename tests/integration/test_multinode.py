"""The embed and all-pairs jobs on a three-node Ray cluster (one head, two workers,
all on this machine, 127.0.0.1 only), input and output on S3 (moto's server):
the results equal a single-node run's row for row."""

from __future__ import annotations

import time

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import _start_ray, corpus_rows, write_jsonl
from culturesim_ray.config import AllPairsConfig, EmbedConfig
from culturesim_ray.pipeline.allpairs import run_allpairs
from culturesim_ray.pipeline.embed import read_embeddings, read_quarantine, run_embed
from culturesim_ray.pipeline.ray_env import set_safe_env

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(300)]

MiB = 1024**2
# head 1 CPU + two workers of 1 CPU: the embed job's two 1-CPU encoder actors
# (_auto_cpus_per_actor leaves one CPU for read/write tasks) cannot share a node
NODE = {"node_ip_address": "127.0.0.1", "num_cpus": 1, "object_store_memory": 128 * MiB}

EXTRA = {  # a fourth culture, and more themes: several heads and a combined one
    "Arab": ["The Abbasid caliphs founded the House of Wisdom in Baghdad.",
             "Arabic calligraphy adorns the walls of mosques in Cairo.",
             "Cardamom coffee is poured from a dallah in Arabia."],
}
FOOD = {
    "Turkish": ["Baklava is layered with pistachios and syrup in Gaziantep.",
                "Kebabs are grilled over charcoal in Adana."],
    "Greek": ["Feta cheese and olives are served with bread in Crete.",
              "Moussaka is baked with aubergine and bechamel."],
    "Persian": ["Saffron rice with barberries is served at Persian weddings.",
                "Fesenjan is a stew of walnuts and pomegranate."],
    "Arab": ["Hummus and falafel are eaten across the Levant.",
             "Dates and coffee welcome guests in the desert."],
}
CRAFT = {
    "Turkish": ["Ebru marbled paper is made by floating paint on water."],
    "Greek": ["Black-figure pottery shows heroes on red clay vases."],
    "Persian": ["Miniature painting illustrates the Shahnameh epic."],
    "Arab": ["Mashrabiya screens are carved from wood lattices."],
}


def quiet(*_a, **_k):
    return None


def corpus() -> list[dict]:
    rows = corpus_rows(with_image=False)
    for r in rows:
        r["themes"] = ["history", "craft"] if r["item_id"].endswith("-1") else ["history"]
    for culture, texts in EXTRA.items():
        for i, text in enumerate(texts):
            rows.append({"item_id": f"{culture.lower()}-{i}", "culture": culture,
                         "modality": "text", "text": text, "lang": "en",
                         "themes": ["history", "food"] if i == 2 else ["history"],
                         "source": "test"})
    for theme, by_culture in (("food", FOOD), ("craft", CRAFT)):
        for culture, texts in by_culture.items():
            for i, text in enumerate(texts):
                rows.append({"item_id": f"{culture.lower()}-{theme}-{i}", "culture": culture,
                             "modality": "text", "text": text, "lang": "en",
                             "themes": [theme], "source": "test"})
                # a generated variant of each: same culture and theme, other words
                rows.append({"item_id": f"{culture.lower()}-{theme}-{i}-v",
                             "culture": culture, "modality": "text",
                             "text": f"In {culture} tradition: {text.lower()}",
                             "lang": "en", "themes": [theme, "general-interest"],
                             "source": "generated"})
    rows += [  # rows the quarantine must hold, the same on both runs
        {"item_id": "bad-empty", "culture": "Greek", "modality": "text", "text": "  "},
        {"item_id": "bad-culture", "culture": "", "modality": "text", "text": "nobody's"},
        {"item_id": "bad-modality", "culture": "Arab", "modality": "video", "text": "?"},
        {"item_id": "turkish-0", "culture": "Turkish", "modality": "text", "text": "dup"},
    ]
    return rows


def _sorted(table: pa.Table, keys: list[str]) -> pa.Table:
    return table.sort_by([(k, "ascending") for k in keys])


def _vectors(table: pa.Table) -> np.ndarray:
    return np.stack(table.column("vector").to_numpy(zero_copy_only=False))


def _read_parquet(path: str, fs) -> pa.Table:
    if path.startswith("s3://"):
        with fs.open(path.split("://", 1)[1], "rb") as fh:
            return pq.read_table(fh)
    return pq.read_table(path)


def _results(embed_out: str, ap_out: str, cfg: EmbedConfig, fs) -> dict[str, pa.Table]:
    return {
        "embeddings": _sorted(read_embeddings(embed_out, "text", cfg=cfg)["text"], ["item_id"]),
        "quarantine": _sorted(read_quarantine(embed_out, cfg), ["item_id", "reason"]),
        "pairs": _sorted(_read_parquet(f"{ap_out}/pairs.parquet", fs),
                         ["theme", "culture_a", "rank"]),
        "cultures": _sorted(_read_parquet(f"{ap_out}/culture_embeddings.parquet", fs),
                            ["head", "culture"]),
    }


def _assert_same(single: dict[str, pa.Table], multi: dict[str, pa.Table]) -> None:
    a, b = single["embeddings"], multi["embeddings"]
    assert a.num_rows == b.num_rows
    assert a.column_names == b.column_names
    for col in a.column_names:
        if col != "vector":
            assert a.column(col).to_pylist() == b.column(col).to_pylist(), col
    np.testing.assert_allclose(_vectors(b), _vectors(a), rtol=0, atol=1e-6)
    assert multi["quarantine"].to_pylist() == single["quarantine"].to_pylist()
    a, b = single["pairs"], multi["pairs"]
    assert a.column_names == b.column_names and a.num_rows == b.num_rows
    for col in a.column_names:
        if col != "score":
            assert a.column(col).to_pylist() == b.column(col).to_pylist(), col
    np.testing.assert_allclose(b.column("score").to_numpy(), a.column("score").to_numpy(),
                               rtol=0, atol=1e-6)
    a, b = single["cultures"], multi["cultures"]
    assert a.column("head").to_pylist() == b.column("head").to_pylist()
    assert a.column("culture").to_pylist() == b.column("culture").to_pylist()
    np.testing.assert_allclose(_vectors(b), _vectors(a), rtol=0, atol=1e-6)


def _encoder_actor_nodes() -> set[str]:
    """The nodes Ray Data's encoder actors ran on, from the GCS actor table (dead
    actors stay listed; no dashboard needed)."""
    from ray._private.state import actors

    return {a["Address"]["NodeID"] for a in actors().values()
            if "MapWorker" in a["ActorClassName"] and a["Address"]["NodeID"]}


def test_three_node_cluster_matches_single_node(ray_session, s3_server, tmp_path):
    import ray
    from ray.cluster_utils import Cluster

    fs, bucket = s3_server["fs"], s3_server["bucket"]
    rows = corpus()
    fs.put(str(write_jsonl(tmp_path / "c.jsonl", rows)), f"{bucket}/multinode/c.jsonl")
    src = f"s3://{bucket}/multinode/c.jsonl"
    s3 = {"endpoint_url": s3_server["endpoint_url"], "key": "testing", "secret": "testing"}
    # a fixed pool of two encoder actors (min_actors=2: no autoscaling down to one)
    cfg = EmbedConfig(text_encoder="tfidf", tfidf_dim=8, num_actors=2, min_actors=2,
                      batch_size=4, blocks=6, rows_per_file=5, s3=s3)
    ap_cfg = AllPairsConfig(k=2, block_rows=2, s3=s3)  # 2 rows per task: many tasks

    clock = {"start": time.time()}
    # the single-node reference, on the shared local instance, output on local disk
    single_emb, single_ap = str(tmp_path / "emb"), str(tmp_path / "ap")
    ref = run_embed(src, single_emb, cfg, log=quiet)
    assert (ref.rows_in, ref.embedded, ref.quarantined) == (len(rows), len(rows) - 4, 4)
    ref_ap = run_allpairs(single_emb, single_ap, ap_cfg, log=quiet)
    single = _results(single_emb, single_ap, cfg, fs)
    clock["single"] = time.time()

    ray.shutdown()
    cluster = Cluster()
    try:
        # every raylet (and so every worker) gets the project's safety env, as
        # init_ray gives a local instance; the listeners are on 127.0.0.1
        node = {**NODE, "env_vars": set_safe_env()}
        cluster.add_node(**node, include_dashboard=False)
        cluster.add_node(**node)
        cluster.add_node(**node)
        cluster.wait_for_nodes()
        ray.init(address=cluster.address, log_to_driver=False)
        alive = [n for n in ray.nodes() if n["Alive"]]
        assert len(alive) == 3
        assert {n["NodeManagerAddress"] for n in alive} == {"127.0.0.1"}
        assert ray.cluster_resources()["CPU"] == 3
        clock["cluster up"] = time.time()

        multi_emb, multi_ap = f"s3://{bucket}/multinode/emb", f"s3://{bucket}/multinode/ap"
        rep = run_embed(src, multi_emb, cfg, log=quiet)
        assert (rep.rows_in, rep.embedded, rep.quarantined) == (
            ref.rows_in, ref.embedded, ref.quarantined)
        clock["embed"] = time.time()
        nodes = _encoder_actor_nodes()
        assert len(nodes) >= 2, f"encoder actors ran on {len(nodes)} node(s)"
        assert nodes <= {n["NodeID"] for n in alive}
        m = run_allpairs(multi_emb, multi_ap, ap_cfg, log=quiet)
        clock["allpairs"] = time.time()
        assert m["counts"].get("heads") == ref_ap["counts"].get("heads")
        assert fs.exists(f"{bucket}/multinode/emb/manifest.json")
        assert fs.exists(f"{bucket}/multinode/ap/manifest.json")
        _assert_same(single, _results(multi_emb, multi_ap, cfg, fs))
        ticks = list(clock.items())
        print("timings:", ", ".join(f"{k} {t - p:.1f}s" for (_, p), (k, t) in
                                    zip(ticks, ticks[1:], strict=False)),
              f"; encoder actors on {len(nodes)} nodes")
    finally:
        ray.shutdown()
        cluster.shutdown()
        _start_ray()
