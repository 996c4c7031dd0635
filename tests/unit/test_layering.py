"""Everything outside culturesim_ray.pipeline imports with ray blocked."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

PKG = Path(__file__).resolve().parents[2] / "culturesim_ray"

BLOCK_RAY = """
import importlib, sys
class Block:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("ray is blocked outside culturesim_ray.pipeline")
        return None
sys.meta_path.insert(0, Block())
for mod in sys.argv[1:]:
    importlib.import_module(mod)
print("ok", len(sys.argv) - 1)
"""


def pure_modules() -> list[str]:
    mods = []
    for f in sorted(PKG.rglob("*.py")):
        rel = f.relative_to(PKG.parent).with_suffix("")
        parts = list(rel.parts)
        if "pipeline" in parts:
            continue
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods.append(".".join(parts))
    return mods


def test_pure_code_never_imports_ray():
    mods = pure_modules()
    assert "culturesim_ray.encoders.text" in mods and "culturesim_ray.schema" in mods
    res = subprocess.run([sys.executable, "-c", BLOCK_RAY, *mods], capture_output=True,
                         text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == f"ok {len(mods)}"


def test_no_cuda_calls_in_pure_code():
    for f in PKG.rglob("*.py"):
        assert ".cuda()" not in f.read_text(), f"{f}: choose the device at an entry point"
