"""Fault injection: an outage loses nothing; a killed encoder actor loses no row.
(Killed jobs resuming to identical results: test_crash.py.)"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from conftest import FLAGS, KillWhen, corpus_rows, write_jsonl
from culturesim_ray.config import EmbedConfig
from culturesim_ray.pipeline.embed import run_embed, scan_written

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]

ROOT = Path(__file__).resolve().parents[2]


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
