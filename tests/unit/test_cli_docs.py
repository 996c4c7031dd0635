"""The README's command tables equal what the argparse definitions generate."""

from __future__ import annotations

import argparse
from pathlib import Path

from culturesim_ray.cli_docs import BEGIN, END, command_tables, main, replace_in

README = Path(__file__).resolve().parents[2] / "README.md"


def test_readme_tables_equal_the_argparse_definitions():
    text = README.read_text(encoding="utf-8")
    assert replace_in(text, command_tables()) == text, "run `make readme`"
    assert main(["--check", str(README)]) == 0


def test_tables_follow_a_changed_parser(tmp_path):
    p = argparse.ArgumentParser(prog="culturesim")
    sub = p.add_subparsers(dest="command")
    q = sub.add_parser("embed", help="embed a corpus")
    q.add_argument("corpus", help="the corpus")
    q.add_argument("--actors", type=int, default=2, help="encoder actors")
    tables = command_tables(p)
    assert "| `--actors` | 2 | encoder actors |" in tables
    assert "| `CORPUS` | required | the corpus |" in tables
    doc = tmp_path / "README.md"
    doc.write_text(f"intro\n{BEGIN}\nold table\n{END}\nend\n")
    new = replace_in(doc.read_text(), tables)
    assert "old table" not in new and new.startswith("intro\n") and new.endswith("end\n")
    q.add_argument("--batch-size", type=int, default=64)
    assert command_tables(p) != tables  # a new flag changes the tables
