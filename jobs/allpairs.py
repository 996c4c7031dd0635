"""All-pairs culture similarity per theme (SPEC J2, J3): row blocks as Ray tasks.

On a cluster:

    ray job submit --working-dir . -- \
        python jobs/allpairs.py s3://bucket/runs/ottoman/embed --out s3://bucket/runs/ottoman/allpairs \
        --similarity cosine -k 20 --prefilter auto

Locally:

    python jobs/allpairs.py runs/demo/embed --out runs/demo/allpairs

Every flag of `culturesim allpairs --help` applies; `--config jobs/configs/allpairs.yaml`
reads the same fields from YAML. A rerun into the same --out skips finished blocks.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from culturesim_ray.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main(["allpairs", *sys.argv[1:]]))
