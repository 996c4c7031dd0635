"""Staged MoCo training of the fusion model on Ray Train (SPEC T1-T3).

On a cluster (outputs under --out: model.pt, model_config.json,
culture_embeddings.parquet for the all-pairs job, manifest.json):

    ray job submit --working-dir . -- \
        python jobs/train.py s3://bucket/runs/x/embed --out /mnt/runs/x/train --workers 4 --gpu

Locally:

    python jobs/train.py runs/demo/embed --out runs/demo/train
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from culturesim_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["train", *sys.argv[1:]]))
