"""Shared fixtures: one local Ray instance per test run, a real S3 endpoint on
loopback (moto's server), and small real corpora."""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from culturesim_ray.pipeline.ray_env import set_safe_env

set_safe_env()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_serve_config(run_dir: str | Path, port: int, ingress: dict | None = None) -> dict:
    """serve_configs/local.yaml, pointed at `run_dir` and `port` (ingress: user_config
    values of the Ingress deployment to override)."""
    import yaml

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "serve_configs" / "local.yaml").read_text())
    config["http_options"]["port"] = port
    app = config["applications"][0]
    app["args"]["run_dir"] = str(run_dir)
    if ingress:
        dep = next(d for d in app["deployments"] if d["name"] == "Ingress")
        dep["user_config"] = {**dep["user_config"], **ingress}
    return config


@contextmanager
def served(run_dir: str | Path) -> Iterator[str]:
    """The app deployed the way `serve run serve_configs/local.yaml` deploys it, on a
    free port; yields its base URL, shuts Serve down after."""
    from ray import serve

    from culturesim_ray.pipeline.serve_deploy import deploy_config

    port = free_port()
    deploy_config(local_serve_config(run_dir, port))
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        serve.shutdown()

FLAGS = Path(__file__).resolve().parents[1] / "culturesim_ray" / "data" / "flags"

TEXTS = {
    "Turkish": ["The Ottoman Empire ruled Anatolia and the Balkans from Istanbul.",
                "Iznik tiles decorate Ottoman mosques with tulips and carnations.",
                "Turkish coffee is brewed in a small pot called a cezve."],
    "Greek": ["Byzantine mosaics in Thessaloniki show saints on gold backgrounds.",
              "Ancient Greek drama was performed in open-air theatres.",
              "The Parthenon is a temple to Athena on the Acropolis of Athens."],
    "Persian": ["Hafez wrote ghazals in Persian that are still recited in Shiraz.",
                "Persian carpets are knotted by hand in Isfahan and Tabriz.",
                "The Safavid dynasty made Shia Islam the religion of Iran."],
}


def _start_ray() -> None:
    from ray.data import DataContext

    from culturesim_ray.pipeline.ray_env import init_ray

    init_ray(num_cpus=2, log_to_driver=False)
    DataContext.get_current().enable_progress_bars = False


@pytest.fixture(scope="session")
def _ray_instance() -> Iterator[None]:
    """One local Ray instance for the whole run (2 CPUs, 127.0.0.1 only)."""
    import ray

    _start_ray()
    yield
    ray.shutdown()


@pytest.fixture
def ray_session(_ray_instance: None) -> Iterator[None]:
    """The shared Ray instance, handed back whole: after each test, wait until its
    CPUs are free again; if a failed test left actors holding them, restart Ray so
    that one failure cannot starve (and hang) the tests after it."""
    import time

    import ray

    yield
    total = ray.cluster_resources().get("CPU", 0)
    deadline = time.time() + 30
    while time.time() < deadline:
        if ray.available_resources().get("CPU", 0) >= total:
            return
        time.sleep(0.5)
    ray.shutdown()
    _start_ray()


TUNES = {  # short folk-like phrases, different melodic habits per culture
    "Turkish": ["A2 B c | d2 c B | A4 |", "d c B A | G A B2 | A4 |"],
    "Greek": ["E F G A | B2 A G | E4 |", "G A B c | B A G F | E4 |"],
    "Persian": ["c d e f | g2 f e | d4 |", "e d c B | A B c2 | c4 |"],
}

@pytest.fixture(scope="session")
def trained_run(_ray_instance, tmp_path_factory):
    """A small run with all three modalities: embed/, train/ (1 worker, a short
    staged run) and allpairs/, shared by the serve, report and evaluate tests."""
    from culturesim_ray.config import AllPairsConfig, EmbedConfig
    from culturesim_ray.pipeline.allpairs import run_allpairs
    from culturesim_ray.pipeline.embed import run_embed
    from culturesim_ray.pipeline.train import run_train

    tmp = tmp_path_factory.mktemp("serve")
    rows = corpus_rows()
    for culture, tunes in TUNES.items():
        for i, tune in enumerate(tunes):
            path = tmp / f"{culture}-{i}.abc"
            path.write_text(f"X:{i}\nT:{culture} {i}\nM:4/4\nL:1/8\nK:C\n{tune}\n")
            rows.append({"item_id": f"{culture}-tune-{i}", "culture": culture,
                         "modality": "sequence", "uri": str(path), "themes": ["music"],
                         "source": "test"})
    corpus = write_jsonl(tmp / "c.jsonl", rows)
    run = tmp / "run"
    quiet = {"log": lambda *_: None}
    run_embed(str(corpus), str(run / "embed"), EmbedConfig(batch_size=8, lstm_epochs=2, uri_roots=[str(FLAGS)]), **quiet)
    run_train(str(run / "embed"), str(run / "train"), num_workers=1,
              stages=((1, 1), (2, 1), (3, 1)), steps_per_epoch=2, hidden=32, out_dim=16,
              queue_size=16, **quiet)
    run_allpairs(str(run / "embed"), str(run / "allpairs"), AllPairsConfig(k=2), **quiet)
    return run


def corpus_rows(with_image: bool = True) -> list[dict]:
    rows = []
    for culture, texts in TEXTS.items():
        for i, text in enumerate(texts):
            rows.append({"item_id": f"{culture.lower()}-{i}", "culture": culture,
                         "modality": "text", "text": text, "lang": "en",
                         "themes": ["history"], "source": "test"})
    if with_image:
        for culture, flag in (("Turkish", "turkey"), ("Greek", "greece"), ("Persian", "iran")):
            rows.append({"item_id": f"{culture.lower()}-flag", "culture": culture,
                         "modality": "image", "uri": str(FLAGS / f"{flag}.png"),
                         "themes": ["symbols"], "source": "flagpy"})
    return rows


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows),
                    encoding="utf-8")
    return path


def region_run(root: Path, prefix: str, seed: int, encoder: str = "test",
               dim: int = 8) -> Path:
    """An embed run for the metric tests (its vectors written, no encoder run): text
    items of 12 cultures, 4 items each, whose culture means differ along every
    dimension, and ROOT/gold.csv, whose distances (along a 'region' axis, dimension
    0) follow dimension 0 alone; the other dimensions are noise to it."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from culturesim_ray.layout import EmbedLayout

    rng = np.random.default_rng(seed)
    region = np.linspace(-1, 1, 12)
    centres = rng.normal(size=(12, dim))
    centres[:, 0] = 2 * region
    rows = []
    for c in range(12):
        for j in range(4):
            v = centres[c] + 0.1 * rng.normal(size=dim)
            rows.append({"item_id": f"{prefix}{c}-{j}", "culture": f"{prefix}{c}",
                         "modality": "text", "vector": v.astype(np.float32).tolist(),
                         "themes": ["t"], "error": None})
    layout = EmbedLayout(str(root / "embed"))
    d = Path(layout.embeddings("text"))
    d.mkdir(parents=True)
    pq.write_table(pa.Table.from_pylist(rows), d / "part-0.parquet")
    Path(layout.manifest).write_text(json.dumps({"encoders": {"text": {"name": encoder}}}))
    gold = root / "gold.csv"
    gold.write_text("culture_a,culture_b,score\n" + "".join(
        f"{prefix}{a},{prefix}{b},{abs(region[a] - region[b]):.4f}\n"
        for a in range(12) for b in range(a + 1, 12)))
    return root


@pytest.fixture
def fast_learned(monkeypatch):
    """A short LearnedSimilarity fit on one thread: the CV bookkeeping, not the fit, is tested."""
    import torch

    from culturesim_ray.ops.learned import LearnedSimilarity

    init = LearnedSimilarity.__init__
    monkeypatch.setattr(LearnedSimilarity, "__init__",
                        lambda self, **kw: init(self, **{"epochs": 20, **kw}))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def small_corpus(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "corpus.jsonl", corpus_rows())


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict]:
    """moto's S3 server on 127.0.0.1 (a real HTTP endpoint), with a bucket."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    creds = {"endpoint_url": endpoint, "key": "testing", "secret": "testing"}
    import s3fs

    fs = s3fs.S3FileSystem(key="testing", secret="testing",
                           client_kwargs={"endpoint_url": endpoint})
    fs.mkdir("culture-bucket")
    old = {k: os.environ.get(k) for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")}
    os.environ["AWS_ACCESS_KEY_ID"] = "testing"
    os.environ["AWS_SECRET_ACCESS_KEY"] = "testing"
    yield {**creds, "fs": fs, "bucket": "culture-bucket"}
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v
    server.stop()


class KillWhen:
    """In a thread: SIGKILL the first process whose command line contains `name`
    as soon as `ready()` holds (checked every `poll` s, for at most `timeout` s).
    Use as a context manager around the run under test; `killed` lists the pids."""

    def __init__(self, name: str, ready, timeout: float = 240, poll: float = 0.05) -> None:
        import threading

        self.name, self.ready, self.timeout, self.poll = name, ready, timeout, poll
        self.killed: list[int] = []
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import signal
        import time

        import psutil

        deadline = time.time() + self.timeout
        while time.time() < deadline:
            if self.ready():
                for p in psutil.process_iter(["pid", "cmdline"]):
                    if self.name in " ".join(p.info["cmdline"] or []):
                        os.kill(p.info["pid"], signal.SIGKILL)
                        self.killed.append(p.info["pid"])
                        return
            time.sleep(self.poll)

    def __enter__(self) -> KillWhen:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._thread.join()


def checked_corpus(corpus: str | Path) -> list[dict]:
    """A built corpus's rows, each checked against the corpus contract with its image
    and tune files looked up beside the corpus file (a row at fault fails the test)."""
    from culturesim_ray.schema import validate_rows
    from culturesim_ray.tables import read_corpus_rows

    rows = read_corpus_rows(str(corpus))
    root = Path(corpus).parent
    checked = validate_rows(rows, uri_exists=lambda uris: {u for u in uris
                                                           if (root / u).is_file()})
    assert not checked.bad, checked.reasons()
    return rows
