"""Sanity queries: obvious English texts, each about one demo culture, answered by
the served model (POST /v1/similar, the general top-3) and by the raw baseline
(the query in the run's own text encoder, cosine against each culture's mean of
L2-normalised raw text item vectors). Top-1 / top-3 hit rates per method, per
culture, and the misses.

The queries are a fixed test set written from general knowledge, not tuned on
any answer; none names its culture, its country or a word stem of the demo
corpus's tagging regex for that culture (tests/unit/test_sanity_queries.py), so
the test is about meaning, not keywords.

--via http (default) starts `culturesim serve RUN_DIR` in a child process on
127.0.0.1 and a free port, waits for /healthz, sends the queries one at a time
(bounded timeouts), then stops it. --via inprocess answers with
`SimilarityService` in this process (same answers, no Ray).

    python benchmarks/sanity.py RUN_DIR [--via http|inprocess] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.sanity_queries import QUERIES  # noqa: E402

K = 3
VIAS = ("http", "inprocess")


# ----------------------------------------------------------------- the raw baseline
class RawMeans:
    """Each culture's mean of L2-normalised raw text item vectors (ops.pooling's
    general head), L2-normalised again so a dot product is the cosine."""

    def __init__(self, embed_dir: str) -> None:
        import numpy as np

        from culturesim_ray.ops.pooling import GENERAL, pool
        from culturesim_ray.runs import read_embeddings
        from culturesim_ray.vectors import as_matrix

        table = read_embeddings(embed_dir, "text").get("text")
        if table is None or table.num_rows == 0:
            raise ValueError(f"{embed_dir}: no embedded text items")
        items = as_matrix(table.column("vector"), f"{embed_dir} (text embeddings)")
        self.cultures, means = pool(items, table.column("culture").to_pylist())[GENERAL]
        self.means = means / np.maximum(np.linalg.norm(means, axis=1, keepdims=True), 1e-12)

    def topk(self, vectors: Any, k: int) -> list[list[tuple[str, float]]]:
        """vectors (B, d) -> per query the k nearest cultures (name, cosine), best first."""
        import numpy as np

        q = np.asarray(vectors, dtype=np.float32)
        q = q / np.maximum(np.linalg.norm(q, axis=1, keepdims=True), 1e-12)
        scores = q @ self.means.T  # (B, C)
        order = np.argsort(-scores, axis=1, kind="stable")[:, :k]
        return [[(self.cultures[j], float(scores[i, j])) for j in row]
                for i, row in enumerate(order)]


def raw_answers(encoders: Any, means: RawMeans, texts: Sequence[str],
                k: int = K) -> list[list[tuple[str, float]]]:
    """The queries through the run's text encoder (`QueryEncoders`), ranked by RawMeans."""
    res = encoders.encode("text", list(texts))
    bad = [(t, e) for t, e in zip(texts, res.errors, strict=True) if e]
    if bad:
        raise ValueError(f"the text encoder rejected {len(bad)} queries, e.g. {bad[0]}")
    return means.topk(res.vectors, k)


# ----------------------------------------------------------------- the served model
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def http_json(url: str, body: dict | None = None, timeout: float = 60.0) -> Any:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise RuntimeError(f"{url}: HTTP {exc.code}: {exc.read()[:500]!r}") from exc


class ServedApp:
    """`culturesim serve RUN_DIR` in a child process (its own session, so it can be
    stopped as a group) on 127.0.0.1 and a free port; a context manager that waits
    for /healthz (at most `startup_s`) and stops the app on exit (SIGINT, which
    `culturesim serve` answers with serve.shutdown(), then SIGTERM/SIGKILL)."""

    def __init__(self, run_dir: str, precision: str = "auto", startup_s: float = 600.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = Path(tempfile.mkdtemp(prefix="csr-sanity-")) / "serve.log"
        cmd = [sys.executable, "-c", "import sys; from culturesim_ray.cli import main; "
               "sys.exit(main(sys.argv[1:]))", "serve", run_dir, "--host", "127.0.0.1",
               "--port", str(self.port), "--precision", precision]
        self._fh = self.log.open("w")
        self.proc = subprocess.Popen(cmd, stdout=self._fh, stderr=subprocess.STDOUT,
                                     start_new_session=True)
        self.startup_s = startup_s

    def wait_healthy(self) -> dict:
        deadline = time.monotonic() + self.startup_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"culturesim serve exited with {self.proc.returncode}:\n"
                                   f"{self.tail()}")
            try:
                health = http_json(f"{self.url}/healthz", timeout=10)
                if health.get("status") == "ok":
                    return health
            except (OSError, RuntimeError, ValueError):
                pass
            time.sleep(1.0)
        raise TimeoutError(f"{self.url}/healthz not ok after {self.startup_s:.0f} s:\n"
                           f"{self.tail()}")

    def tail(self, n: int = 30) -> str:
        self._fh.flush()
        return "\n".join(self.log.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        """SIGINT to the CLI process alone (its Ray processes must outlive
        serve.shutdown()); what is left after 60 s gets SIGTERM, then SIGKILL, as a group."""
        for sig, wait_s in ((signal.SIGINT, 60), (signal.SIGTERM, 15), (signal.SIGKILL, 10)):
            if self.proc.poll() is not None:
                break
            try:
                if sig == signal.SIGINT:
                    self.proc.send_signal(sig)
                else:
                    os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(wait_s)
            except subprocess.TimeoutExpired:
                continue
        self._fh.close()

    def __enter__(self) -> ServedApp:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def general_top(answer: dict) -> list[tuple[str, float]]:
    return [(g["culture"], float(g["score"])) for g in answer["general"]]


def evidence_ids(answer: dict) -> list[str | None]:
    """Per ranked culture, the id of its corpus item nearest to the query (None: none)."""
    return [(g.get("evidence") or {}).get("item_id") for g in answer["general"]]


# ----------------------------------------------------------------- scoring
def score(answers: Sequence[Sequence[tuple[str, float]]],
          queries: Sequence[tuple[str, str]]) -> dict[str, Any]:
    """Top-1 / top-3 hit counts and rates, overall and per expected culture."""
    by: dict[str, dict[str, int]] = {}
    for ans, (_, want) in zip(answers, queries, strict=True):
        names = [c for c, _ in ans]
        b = by.setdefault(want, {"n": 0, "top1_hits": 0, "top3_hits": 0})
        b["n"] += 1
        b["top1_hits"] += int(names[:1] == [want])
        b["top3_hits"] += int(want in names[:K])
    n = len(queries)
    t1, t3 = sum(b["top1_hits"] for b in by.values()), sum(b["top3_hits"] for b in by.values())
    for b in by.values():
        b["top1"], b["top3"] = b["top1_hits"] / b["n"], b["top3_hits"] / b["n"]
    return {"n": n, "top1_hits": t1, "top3_hits": t3, "top1": t1 / n if n else 0.0,
            "top3": t3 / n if n else 0.0, "by_culture": dict(sorted(by.items()))}


def served_minus_raw(queries: Sequence[dict[str, Any]], seed: int = 0) -> dict[str, Any]:
    """Served top-1 / top-3 hit rate minus the raw means', with a paired 95% bootstrap
    interval over the queries (`report.ranking.paired_rate_difference`): whether a gap of
    a query or two on this suite can be read at all."""
    from culturesim_ray.report.ranking import paired_rate_difference

    def hits(method: str, k: int) -> list[bool]:
        return [q["expected"] in [c for c, _ in q[method][:k]] for q in queries]

    return {f"top{k}": paired_rate_difference(hits("served", k), hits("raw", k), seed=seed)
            for k in (1, K)}


def run_sanity(run_dir: str, queries: Sequence[tuple[str, str]] = QUERIES, via: str = "http",
               precision: str = "auto", startup_s: float = 600.0,
               request_s: float = 60.0) -> dict[str, Any]:
    """Every query through the served model (`via`: "http" or "inprocess") and the
    raw baseline. Queries whose expected culture the model does not know are
    skipped (listed). Returns {"methods": {"served": ..., "raw": ...} (score()),
    "queries": per-query answers, "chance", "skipped", "timing_s", ...}."""
    from culturesim_ray.serving.predictor import RunPaths
    from culturesim_ray.serving.query_encoders import QueryEncoders

    if via not in VIAS:
        raise ValueError(f"via {via!r}: expected one of {', '.join(VIAS)}")
    paths = RunPaths.of(run_dir)
    timing: dict[str, float] = {}
    t0 = time.perf_counter()
    app: ServedApp | None = None
    ask: Callable[[str], dict]
    if via == "http":
        app = ServedApp(run_dir, precision, startup_s)  # starts while the baseline loads
    try:
        if via == "inprocess":
            from culturesim_ray.serving.predictor import SimilarityService

            svc = SimilarityService(paths, precision=precision)
            encoders, cultures = svc.encoders, list(svc.cultures)

            def ask(q: str) -> dict:
                return svc.similar("text", q, k=K)
        else:
            encoders = QueryEncoders(paths.embed, precision=precision)
        means = RawMeans(paths.embed)
        if app is not None:
            app.wait_healthy()
            cultures = http_json(f"{app.url}/v1/cultures", timeout=request_s)["cultures"]
            url = f"{app.url}/v1/similar"

            def ask(q: str) -> dict:
                return http_json(url, {"text": q, "k": K}, timeout=request_s)
        timing["startup"] = time.perf_counter() - t0
        known = set(cultures)
        kept = [(q, c) for q, c in queries if c in known]
        skipped = [(q, c) for q, c in queries if c not in known]
        t = time.perf_counter()
        replies = [ask(q) for q, _ in kept]
        served = [general_top(a) for a in replies]
        timing["served"] = time.perf_counter() - t
    finally:
        if app is not None:
            app.stop()
    t = time.perf_counter()
    raw = raw_answers(encoders, means, [q for q, _ in kept])
    timing["raw"] = time.perf_counter() - t
    n_c = len(cultures)
    answers = [{"query": q, "expected": c, "served": s, "raw": r,
                "served_evidence": evidence_ids(a)}
               for (q, c), s, r, a in zip(kept, served, raw, replies, strict=True)]
    return {
        "run_dir": run_dir, "via": via, "k": K, "n_queries": len(kept), "cultures": n_c,
        "chance": {"top1": 1 / n_c, "top3": min(K, n_c) / n_c},
        "methods": {"served": score(served, kept), "raw": score(raw, kept)},
        "queries": answers,
        "served_minus_raw": served_minus_raw(answers),
        "skipped": [{"query": q, "expected": c} for q, c in skipped],
        "timing_s": timing,
    }


def print_report(res: dict[str, Any]) -> None:
    print(f"\nsanity queries on {res['run_dir']} (via {res['via']}), {res['n_queries']} queries, "
          f"{res['cultures']} cultures; chance top-1 {res['chance']['top1']:.2f}, "
          f"top-3 {res['chance']['top3']:.2f}")
    print(f"{'method':<10}{'top-1':>8}{'top-3':>8}{'n':>6}")
    for name, m in res["methods"].items():
        print(f"{name:<10}{m['top1']:>8.2f}{m['top3']:>8.2f}{m['n']:>6}")
    for k, d in res.get("served_minus_raw", {}).items():
        print(f"served - raw, {k}: {d['delta']:+.3f} [paired 95% CI {d['delta_lo']:+.3f}, "
              f"{d['delta_hi']:+.3f}]")
    cultures = sorted({c for m in res["methods"].values() for c in m["by_culture"]})
    print(f"\n{'culture':<10}" + "".join(f"{n + ' top-1/top-3':>18}" for n in res["methods"]))
    for c in cultures:
        cells = []
        for m in res["methods"].values():
            b = m["by_culture"].get(c, {"top1_hits": 0, "top3_hits": 0, "n": 0})
            cells.append(f"{b['top1_hits']}/{b['top3_hits']} of {b['n']}".rjust(18))
        print(f"{c:<10}{''.join(cells)}")
    for name in res["methods"]:
        misses = [q for q in res["queries"] if [c for c, _ in q[name][:1]] != [q["expected"]]]
        print(f"\n{name}: {len(misses)} top-1 misses (query | expected | answered top-{K}"
              + (", each with its nearest item)" if name == "served" else ")"))
        for q in misses:
            ev = q.get(f"{name}_evidence") or [None] * len(q[name])
            shown = [c if e is None else f"{c} ({e})" for (c, _), e in zip(q[name], ev,
                                                                            strict=False)]
            print(f"  {q['query']} | {q['expected']} | {', '.join(shown)}")
    if res["skipped"]:
        print(f"\nskipped (culture not in the model): {len(res['skipped'])}")


def main() -> None:
    from culturesim_ray.encoders.base import PRECISIONS

    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run_dir", help="a run with embed/ and train/ (culturesim demo --out RUN)")
    ap.add_argument("--via", default="http", choices=VIAS)
    ap.add_argument("--json", help="write the full result here")
    ap.add_argument("--precision", default="auto", choices=PRECISIONS,
                    help="the query text encoder's dtype, in the service and the baseline")
    ap.add_argument("--startup-timeout", type=float, default=600.0,
                    help="seconds to wait for the Serve app's /healthz (http)")
    ap.add_argument("--request-timeout", type=float, default=60.0)
    args = ap.parse_args()
    from culturesim_ray.pipeline.ray_env import set_safe_env

    set_safe_env()  # offline model hubs, as the service runs
    res = run_sanity(args.run_dir, via=args.via, precision=args.precision,
                     startup_s=args.startup_timeout, request_s=args.request_timeout)
    print_report(res)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
