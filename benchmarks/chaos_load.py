"""The overload loop for `benchmarks/chaos.py` and tests/integration/test_serve.py:
a closed loop of N concurrent clients on 127.0.0.1 (each sends its next request as
soon as the last is answered), for a bounded time; every answer is classified."""

from __future__ import annotations

import statistics
import threading
import time
from collections import Counter
from typing import Any

import requests

QUERY = {"text": "Byzantine mosaics on gold backgrounds"}


def _ok_answer(res: requests.Response) -> bool:
    """200, or a clean shed: 429/503 with a Retry-After of whole seconds."""
    if res.status_code == 200:
        return True
    after = res.headers.get("Retry-After", "")
    return res.status_code in (429, 503) and after.isdigit()


def closed_loop(url: str, clients: int = 64, seconds: float = 10.0, timeout: float = 30.0,
                body: dict[str, Any] | None = None) -> dict[str, Any]:
    """Counts: requests, ok (200), shed (429/503 with Retry-After), bad (anything
    else, a dropped connection included), hangs (no answer within `timeout`)."""
    counts: Counter[str] = Counter()
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    deadline = time.time() + seconds

    def client() -> None:
        with requests.Session() as session:
            session.trust_env = False  # loopback, never a proxy
            while time.time() < deadline:
                try:
                    res = session.post(f"{url}/v1/similar", json=body or QUERY, timeout=timeout)
                    kind = ("ok" if res.status_code == 200 else "shed") if _ok_answer(res) \
                        else "bad"
                    code = res.status_code
                except requests.Timeout:
                    kind, code = "hangs", -2
                except requests.RequestException:
                    kind, code = "bad", -1  # a dropped or refused connection
                with lock:
                    counts[kind] += 1
                    counts["requests"] += 1
                    statuses[code] += 1
                if kind == "shed":
                    time.sleep(0.05)  # a polite client backs off a little

    threads = [threading.Thread(target=client, daemon=True) for _ in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=seconds + timeout + 30)
    out = {k: counts.get(k, 0) for k in ("requests", "ok", "shed", "bad", "hangs")}
    out["statuses"] = {str(k): v for k, v in sorted(statuses.items())}
    out["stuck_clients"] = sum(t.is_alive() for t in threads)
    return out


def median_latency(url: str, n: int = 10, body: dict[str, Any] | None = None) -> float:
    """Median seconds of n sequential requests (each must be a 200)."""
    times = []
    with requests.Session() as session:
        session.trust_env = False
        for _ in range(n):
            t = time.perf_counter()
            res = session.post(f"{url}/v1/similar", json=body or QUERY, timeout=60)
            res.raise_for_status()
            times.append(time.perf_counter() - t)
    return statistics.median(times)


def small_queues(config: dict[str, Any], retry_after_s: float = 2) -> dict[str, Any]:
    """A serve config (serve_configs/local.yaml's shape) with queues small enough for
    64 clients to overflow: the Ingress takes 4 at a time and queues 2, the Encoder
    takes 2 and queues 2, one replica each. Only deployment options change, so
    `serve deploy` applies it to the running replicas without restarting them."""
    shed = {"max_queued_requests": 2,
            "backpressure_config": {"status_code": 503, "retry_after_s": retry_after_s}}
    for dep in config["applications"][0]["deployments"]:
        if dep["name"] in ("Ingress", "Encoder"):
            dep.update(shed, max_ongoing_requests=4 if dep["name"] == "Ingress" else 2,
                       autoscaling_config={"min_replicas": 1, "max_replicas": 1})
    return config
