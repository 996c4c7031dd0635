"""What two busy processes get out of this machine: the floor under any 2-worker /
1-worker time ratio of lockstep data parallelism (`train_scale.py`'s epoch line).

The same fixed torch work (1 thread: a matmul, a ReLU and an index_add, the kinds
of op a training step is made of) runs in one process alone, then in two
processes started together. One worker does the whole pass in t_alone per unit;
two workers each do half, and a lockstep step waits for the slower one, so with no
communication at all the ratio is max(t_a, t_b) / (2 t_alone): 0.5 on two equal
free cores, more where the cores give less when both are busy (a VM's vCPUs that
share a physical core, or a host that lends them unevenly).

    python benchmarks/cpu_pair.py [--seconds S] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

WORK = """
import sys, time, torch
torch.set_num_threads(1)
n, start = int(sys.argv[1]), float(sys.argv[2])
g = torch.Generator().manual_seed(0)
x = torch.randn(4096, 128, generator=g)
w = torch.randn(128, 128, generator=g) / 12
idx = torch.randint(0, 512, (4096,), generator=g)
while time.time() < start:
    time.sleep(0.001)
t = time.perf_counter()
for _ in range(n):
    torch.zeros(512, 128).index_add_(0, idx, torch.relu(x @ w))
print(time.perf_counter() - t)
"""


def timed(n: int, procs: int) -> list[float]:
    """Seconds each of `procs` processes took for n units, all started together."""
    start = time.time() + 4.0  # after every process has imported torch
    running = [subprocess.Popen([sys.executable, "-c", WORK, str(n), str(start)],
                                stdout=subprocess.PIPE, text=True) for _ in range(procs)]
    out = [p.communicate()[0] for p in running]
    if any(p.returncode for p in running):
        sys.exit("cpu_pair: a work process failed")
    return [float(o.strip().splitlines()[-1]) for o in out]


def pair_bound(seconds: float = 3.0) -> dict:
    """The work sized to about `seconds` alone; its time alone and in a pair, and
    the floor max(pair) / (2 alone)."""
    probe = 50
    n = max(probe, round(probe * seconds / timed(probe, 1)[0]))
    alone = timed(n, 1)[0]
    pair = timed(n, 2)
    return {"units": n, "alone_s": round(alone, 3), "pair_s": [round(t, 3) for t in pair],
            "floor_2w_over_1w": round(max(pair) / (2 * alone), 3)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--json")
    args = ap.parse_args()
    res = pair_bound(args.seconds)
    print(f"alone {res['alone_s']:.2f} s; two at once {res['pair_s'][0]:.2f} s and "
          f"{res['pair_s'][1]:.2f} s; floor of a 2-worker / 1-worker ratio: "
          f"{res['floor_2w_over_1w']:.2f}")
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
