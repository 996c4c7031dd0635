"""Fault injection: killed runs resume to identical results; an outage loses nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from conftest import FLAGS, KillWhen, corpus_rows, write_jsonl
from culturesim_ray.config import EmbedConfig
from culturesim_ray.pipeline.embed import run_embed, scan_written

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


def sorted_pairs(path: Path) -> pa.Table:
    return pq.read_table(path).sort_by([("theme", "ascending"), ("culture_a", "ascending"),
                                        ("rank", "ascending")])


def test_allpairs_killed_mid_run_resumes_to_identical_results(tmp_path):
    rng = np.random.default_rng(0)
    n, d = 3000, 64
    t = pa.table({"culture": [f"c{i:05d}" for i in range(n)], "head": ["general"] * n,
                  "vector": pa.array(rng.normal(size=(n, d)).astype(np.float32).tolist(),
                                     pa.list_(pa.float32(), d))})
    pq.write_table(t, tmp_path / "cultures.parquet")
    args = [sys.executable, str(ROOT / "jobs" / "allpairs.py"), str(tmp_path / "cultures.parquet"),
            "--block-rows", "50", "--similarity", "l1", "-k", "5", "--prefilter", "off"]
    env = {**os.environ, "RAY_ADDRESS": ""}
    env.pop("RAY_ADDRESS")
    # the uninterrupted reference
    subprocess.run([*args, "--out", str(tmp_path / "ref")], env=env, check=True,
                   capture_output=True, timeout=500)
    # a run killed once some blocks are written
    out = tmp_path / "out"
    proc = subprocess.Popen([*args, "--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 300
    while time.time() < deadline and len(list(out.glob("blocks/general/*.parquet"))) < 5:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    done_before = len(list(out.glob("blocks/general/*.parquet")))
    assert 5 <= done_before < 60, "the run should have been cut short"
    assert not (out / "pairs.parquet").exists()
    res = subprocess.run([*args, "--out", str(out)], env=env, capture_output=True, text=True,
                         timeout=500)
    assert res.returncode == 0, res.stderr[-2000:]
    import json

    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["counts"]["blocks_skipped"] >= done_before - 1  # one may have been mid-write
    assert manifest["counts"]["blocks_run"] + manifest["counts"]["blocks_skipped"] == 60
    assert sorted_pairs(out / "pairs.parquet").equals(sorted_pairs(tmp_path / "ref" / "pairs.parquet"))


def test_s3_outage_mid_run_fails_clearly_and_keeps_written_output(ray_session, tmp_path):
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    s3 = {"endpoint_url": f"http://{host}:{port}", "key": "testing", "secret": "testing"}
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing",
                           client_kwargs={"endpoint_url": s3["endpoint_url"]})
    fs.mkdir("outage")
    rows = corpus_rows(with_image=False)
    flag = (FLAGS / "greece.png").read_bytes()
    for i in range(60):
        fs.pipe(f"outage/img/{i}.png", flag)
        rows.append({"item_id": f"img-{i}", "culture": "Greek", "modality": "image",
                     "uri": f"s3://outage/img/{i}.png"})
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    out = tmp_path / "out"
    cfg = EmbedConfig(num_actors=1, batch_size=2, blocks=30, rows_per_file=2, s3=s3,
                      uri_roots=["s3://outage/img"])
    stopped = threading.Event()

    def cut_when_written() -> None:
        # the text rows come first and read nothing from S3: once they are written,
        # the storage goes away before the image files are fetched
        deadline = time.time() + 120
        while time.time() < deadline:
            if list(out.glob("embeddings/text/*.parquet")):
                break
            time.sleep(0.02)
        server.stop()
        stopped.set()

    watcher = threading.Thread(target=cut_when_written)
    watcher.start()
    try:
        with pytest.raises(Exception, match=r"reading s3://outage/img/\d+\.png"):
            run_embed(str(corpus), str(out), cfg, log=lambda *_: None)
    finally:
        watcher.join()
    assert stopped.is_set()
    written = scan_written(str(out), "image", cfg)
    # no image row was written as failed because the storage was down
    assert written.column("error").null_count == written.num_rows
    text = scan_written(str(out), "text", cfg)
    assert text.num_rows == 9  # what was written before the outage is still there, readable
    assert text.column("error").null_count == 9


def test_embed_with_an_encoder_actor_killed_mid_run_embeds_every_row_once(ray_session, tmp_path):
    rows = []
    for i in range(240):
        base = corpus_rows(with_image=False)[i % 9]
        rows.append({**base, "item_id": f"t{i}", "text": f"{base['text']} ({i})"})
    corpus = write_jsonl(tmp_path / "c.jsonl", rows)
    out = tmp_path / "out"
    cfg = EmbedConfig(num_actors=2, batch_size=4, blocks=40, rows_per_file=4,
                      text_encoder="minilm", max_length=32)
    with KillWhen("MapWorker", lambda: len(list(out.glob("embeddings/text/*.parquet"))) >= 3,
                  timeout=120) as killer:
        report = run_embed(str(corpus), str(out), cfg, log=lambda *_: None)
    assert killer.killed, "no encoder actor was found to kill"
    ids = scan_written(str(out), "text", cfg).column("item_id").to_pylist()
    assert len(ids) == len(set(ids)) == 240  # every row exactly once
    assert report.rows_in == report.embedded + report.quarantined == 240
    assert report.quarantined == 0
