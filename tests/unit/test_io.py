"""Files in and out: existence checks, atomic writes, whole-folder publishing, local-only jobs."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from culturesim_ray import io


def test_existing_uris_local(tmp_path):
    (tmp_path / "x.png").write_bytes(b"1")
    found = io.existing_uris([str(tmp_path / "x.png"), str(tmp_path / "y.png")])
    assert found == {str(tmp_path / "x.png")}


def test_a_writer_killed_mid_write_leaves_the_file_whole(tmp_path):
    """SIGKILL while a file is being rewritten: readers still see the old file whole
    (an in-place write would leave it torn)."""
    import signal
    import subprocess
    import sys

    path = tmp_path / "t.parquet"
    io.write_table(pa.table({"x": [1, 2, 3]}), str(path))
    child = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom culturesim_ray import io\n"
         "with io.atomic_open(sys.argv[1]) as fh:\n"
         "    fh.write(b'PAR1 half a file'); fh.flush(); print('ready', flush=True)\n"
         "    time.sleep(60)\n", str(path)], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    child.send_signal(signal.SIGKILL)
    child.wait()
    assert pq.read_table(path).column("x").to_pylist() == [1, 2, 3]
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["t.parquet"]
    io.write_json({"a": 1}, str(tmp_path / "m.json"))
    assert io.read_json(str(tmp_path / "m.json")) == {"a": 1}


def test_publish_dir_replaces_a_folder_whole_or_leaves_it_as_it_was(tmp_path):
    from culturesim_ray.publish import publish_dir

    target = tmp_path / "models" / "lstm"
    with publish_dir(target) as d:
        (d / "a.txt").write_text("old a")
        (d / "b.txt").write_text("old b")
    assert sorted(p.name for p in target.iterdir()) == ["a.txt", "b.txt"]
    with pytest.raises(RuntimeError, match="killed"):
        with publish_dir(target) as d:
            (d / "a.txt").write_text("new a")
            raise RuntimeError("killed between two files")
    assert (target / "a.txt").read_text() == "old a"  # untouched, not half new
    with publish_dir(target) as d:
        (d / "a.txt").write_text("new a")
    assert [p.name for p in target.iterdir()] == ["a.txt"]  # the new folder, whole
    assert (target / "a.txt").read_text() == "new a"
    assert sorted(p.name for p in target.parent.iterdir()) == ["lstm"]  # no temp left


def test_jobs_that_need_local_run_directories_refuse_s3_before_doing_anything(tmp_path,
                                                                               monkeypatch,
                                                                               capsys):
    """train --out, evaluate, report, serve, align, adapt and add-theme read or write
    local files (memory-mapped, resumed from):
    an s3:// path is a clear error, not a local directory named 's3:' that the job
    writes while its summary names the bucket."""
    from culturesim_ray.io import require_local
    from culturesim_ray.pipeline.serve_deploy import run_local
    from culturesim_ray.pipeline.train import run_train
    from culturesim_ray.report.build import build_report
    from culturesim_ray.report.evaluate import run_evaluation

    monkeypatch.chdir(tmp_path)
    require_local(tmp_path / "run", "run", "reason")  # a local path passes
    with pytest.raises(ValueError, match=r"train --out s3://b/t: must be a local or mounted "
                                         r"path, not S3 \(the graph"):
        run_train(str(tmp_path / "embed"), "s3://b/t")
    with pytest.raises(ValueError, match="evaluate: run directory s3a://b/r: must be a local"):
        run_evaluation("s3a://b/r", "demo")
    with pytest.raises(ValueError, match="evaluate --out s3://b/e: must be a local"):
        run_evaluation(str(tmp_path), "demo", out="s3://b/e")
    with pytest.raises(ValueError, match="report: run directory s3://b/r: must be a local"):
        build_report("s3://b/r")
    with pytest.raises(ValueError, match="serve: run directory s3://b/r: must be a local"):
        run_local("s3://b/r", blocking=False)
    from culturesim_ray.cli_align import run_align
    from culturesim_ray.pipeline.adapt import run_adapt
    from culturesim_ray.pipeline.add_theme import run_add_theme

    with pytest.raises(ValueError, match="align --out s3://b/a: must be a local"):
        run_align("s3://b/a")
    with pytest.raises(ValueError, match="adapt --out s3://b/a: must be a local"):
        run_adapt(str(tmp_path / "corpus.jsonl"), "s3://b/a")
    with pytest.raises(ValueError, match="add-theme: run directory s3://b/r: must be a local"):
        run_add_theme("s3://b/r", "food")
    from culturesim_ray.cli import main

    assert main(["demo", "--out", "s3://b/d"]) == 2
    assert "demo --out s3://b/d: must be a local" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []  # nothing written, no 's3:' directory


