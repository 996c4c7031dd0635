"""How `culturesim report` grows with the number of cultures, in one run.

A report of every culture cannot be read (or opened) at 100,000 cultures; above
`--max-cultures` (1,000) it shows a selection (`report.selection`: cultures that
stand for the map's regions and their nearest neighbours). Measured as
`benchmarks/scale.py` measures a job: the `culturesim report` CLI process's own
peak RSS (psutil, sampled every --interval s), its wall time and the size of
report.html, at a small and a large culture count.

Data: C clustered culture vectors (`scale_data.write_culture_vectors`, d=384,
head general), then `culturesim allpairs` on them (not measured), then the
report. Sizes: full 500 and 20,000 cultures; --quick 500 and 5,000. At 500 the
report shows every culture, so the small run is the page as it always was.

    python benchmarks/report_scale.py [--quick] [--json PATH]
"""

from __future__ import annotations

import argparse
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.measure import add_measure_args, child_env, cli, measure, ratio, save_json  # noqa: E402
from benchmarks.scale_data import write_culture_vectors  # noqa: E402


def run_size(c: int, work: Path, ns: argparse.Namespace) -> dict[str, Any]:
    base = work / f"c{c}"
    base.mkdir(parents=True)
    print(f"\n{c:,} cultures: writing the vectors and their all-pairs output ...", flush=True)
    write_culture_vectors(base / "cultures.parquet", c, ns.seed)
    done = subprocess.run(cli() + ["allpairs", str(base / "cultures.parquet"), "--out",
                                   str(base / "allpairs")], env=child_env(),
                          capture_output=True, text=True, timeout=ns.timeout)
    if done.returncode != 0:
        sys.exit(f"allpairs failed on {c} cultures:\n{done.stderr[-3000:]}")
    m = measure(f"report_{c}", c, ["report", str(base / "allpairs"), "--out",
                                   str(base / "report")], work / "logs", ns.interval, ns.timeout)
    page = base / "report" / "report.html"
    shown = None  # the CLI's note when it shows a selection
    for line in (work / "logs" / f"report_{c}.stdout").read_text().splitlines():
        if "this report shows" in line:
            shown = int(line.split("this report shows ")[1].split(":")[0].replace(",", ""))
    return {"cultures": c, "shown": shown if shown is not None else c,
            "report": asdict(m), "html_mb": round(page.stat().st_size / 2**20, 2)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="500 and 5,000 cultures")
    add_measure_args(ap, 3600, "command")
    ns = ap.parse_args()
    small, large = (500, 5_000) if ns.quick else (500, 20_000)
    work = Path(tempfile.mkdtemp(prefix="culturesim-reportscale-", dir=ns.workdir))
    print(f"report scale: {small:,} and {large:,} cultures; {os.cpu_count()} CPUs; data in "
          f"{work}", flush=True)
    try:
        s = run_size(small, work, ns)
        lg = run_size(large, work, ns)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print("\nreport = the culturesim CLI process (peak RSS sampled)")
    print(f"{'run':<8}{'cultures':>10}{'shown':>8}{'peak RSS MB':>13}{'wall s':>9}"
          f"{'report.html MB':>16}")
    for label, r in (("small", s), ("large", lg)):
        print(f"{label:<8}{r['cultures']:>10,}{r['shown']:>8,}{r['report']['peak_rss_mb']:>13.0f}"
              f"{r['report']['wall_s']:>9.1f}{r['html_mb']:>16.1f}")
    rss = ratio(s["report"]["peak_rss_mb"], lg["report"]["peak_rss_mb"])
    wall = ratio(s["report"]["wall_s"], lg["report"]["wall_s"])
    page = ratio(s["html_mb"], lg["html_mb"])
    print(f"\nlarge/small (cultures x{large / small:.0f}): peak RSS x{rss}, wall x{wall}, "
          f"report.html x{page}")
    res = {"command": shlex.join([sys.executable, *sys.argv]), "quick": ns.quick,
           "sizes": [small, large], "cpus": os.cpu_count(),
           "report_rss_ratio": rss, "report_wall_ratio": wall, "report_html_ratio": page,
           "runs": {"small": s, "large": lg}}
    save_json(ns.json, res)


if __name__ == "__main__":
    main()
