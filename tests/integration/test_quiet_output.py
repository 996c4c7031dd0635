"""What a researcher sees: `culturesim embed` + `culturesim allpairs` as console
commands print stage bars and a summary, no line of Ray's logger (Python or
C++) and no worker output, fewer than 60 lines; a failing stage prints one line
naming the stage, the cause and the log file."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]

BIN = Path(sys.executable).parent / "culturesim"
RAY_LINE = re.compile(
    r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d+\s+(DEBUG|INFO|WARNING|ERROR)"  # Ray's Python logger
    r"|^\[\d{4}-\d\d-\d\d [\d:,]+ [DIWEF] \d+ \d+\]"                       # Ray's C++ logger
    r"|\(\w[\w()]* pid=\d+\)", re.M)                                    # a worker's output


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    return subprocess.run([str(BIN), *args], capture_output=True, text=True, env=env,
                          timeout=500)


def test_embed_and_allpairs_print_a_few_readable_lines(tmp_path):
    corpus = _run("demo-corpus", "--out", str(tmp_path / "corpus"), "--per-culture", "2")
    assert corpus.returncode == 0, corpus.stderr
    embed = _run("embed", str(tmp_path / "corpus" / "corpus.parquet"), "--out",
                 str(tmp_path / "embed"), "--text-encoder", "tfidf")
    assert embed.returncode == 0, embed.stderr[-2000:]
    pairs = _run("allpairs", str(tmp_path / "embed"), "--out", str(tmp_path / "allpairs"))
    assert pairs.returncode == 0, pairs.stderr[-2000:]
    out = "".join(p.stdout + p.stderr for p in (embed, pairs))
    assert not RAY_LINE.search(out), RAY_LINE.search(out).group(0)
    assert "warning" not in out.lower()
    assert out.count("\n") < 60, out
    assert "embed: embedded" in embed.stdout and "all-pairs:" in pairs.stdout
    assert re.search(r"^embed +: 100%", embed.stderr, re.M)
    assert re.search(r"^all-pairs +: 100%", pairs.stderr, re.M)


def test_a_failing_stage_prints_one_line(tmp_path):
    bad = tmp_path / "corpus.jsonl"
    bad.write_text('{"item_id": "a", "culture": "X", "modality": "text", "text": "t"}\n{oops\n')
    res = _run("embed", str(bad), "--out", str(tmp_path / "embed"))
    assert res.returncode != 0
    lines = [ln for ln in (res.stdout + res.stderr).splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("culturesim:")]
    assert len(errors) == 1 and "embed failed" in errors[0] and "(log: " in errors[0], lines
    assert "corpus.jsonl" in errors[0] and "Traceback" not in res.stderr
    log = Path(errors[0].rsplit("(log: ", 1)[1].rstrip(")"))
    assert log.exists() and "stage embed failed" in log.read_text()
