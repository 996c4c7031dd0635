"""Real crash tests: the embed and all-pairs jobs run as `culturesim` subprocesses,
SIGKILLed (driver, Ray head and workers at once) at seeded points while they write,
then rerun: the outputs equal an uninterrupted run's, no row lost or duplicated, and
no torn file is ever left for a reader. The melody-LSTM trainer with a worker
killed resumes at the epoch after its last checkpoint. (The many-kill version:
`benchmarks/chaos.py`.)"""

from __future__ import annotations

import json

import pytest

from benchmarks import chaos_kill as ck

pytestmark = [pytest.mark.ray, pytest.mark.slow, pytest.mark.timeout(600)]


def test_embed_killed_while_writing_resumes_to_the_uninterrupted_output(ray_session, tmp_path):
    corpus = ck.write_corpus(tmp_path / "corpus", n=48)
    ref = ck.embed_reference(corpus, tmp_path / "ref")
    trial = ck.embed_trial(tmp_path, corpus, ref, seed=16, kills=1)
    assert trial["kills"] == 1, "the job ended before the kill point"
    assert trial["rc"] == 0, trial["error"]
    assert trial["torn_files"] == 0  # every file a reader sees is whole
    assert (trial["rows_lost"], trial["rows_duplicated"]) == (0, 0)
    assert trial["identical"] and trial["balanced"]


def test_allpairs_killed_while_writing_resumes_to_the_uninterrupted_output(ray_session,
                                                                           tmp_path):
    cultures = ck.write_cultures(tmp_path / "in", n=2000)
    ref = ck.allpairs_reference(cultures, tmp_path / "ref")
    trial = ck.allpairs_trial(tmp_path, cultures, ref, seed=16, kills=1)
    assert trial["kills"] == 1, "the job ended before the kill point"
    assert trial["rc"] == 0, trial["error"]
    assert trial["torn_files"] == 0
    assert (trial["rows_lost"], trial["rows_duplicated"]) == (0, 0)
    assert trial["identical"]
    manifest = json.loads((tmp_path / "allpairs-16" / "manifest.json").read_text())
    assert manifest["counts"]["blocks_skipped"] >= 1  # it resumed, not restarted


def test_melody_lstm_with_a_worker_killed_resumes_at_the_next_epoch(ray_session, tmp_path):
    trial = ck.lstm_trial(tmp_path, seed=16, epochs=8)
    assert trial["kills"] == 1, "no training worker was found to kill"
    assert trial["resumed_at"], "the run did not resume from a checkpoint"
    # it resumed right after the last checkpoint it had when the worker died, and
    # trained every epoch exactly once
    assert trial["resumed_at"][0] in (trial["killed_at"][0], trial["killed_at"][0] + 1)
    assert trial["identical"] and trial["rows_lost"] == 0
    assert trial["history"][-1] < trial["history"][0]
