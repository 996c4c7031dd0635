"""Embed a corpus with Ray Data (SPEC J1): corpus -> validate -> encode -> Parquet.

On a cluster (outputs land where --out says, e.g. on S3):

    ray job submit --working-dir . -- \
        python jobs/embed.py s3://bucket/corpora/ottoman/ --out s3://bucket/runs/ottoman/embed \
        --actors 4 --gpus-per-actor 1 --batch-size 128

Locally (starts a private Ray instance when RAY_ADDRESS is unset):

    python jobs/embed.py runs/demo/corpus/corpus.parquet --out runs/demo/embed

Every flag of `culturesim embed --help` applies; `--config jobs/configs/embed.yaml`
reads the same fields from YAML.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from culturesim_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["embed", *sys.argv[1:]]))
