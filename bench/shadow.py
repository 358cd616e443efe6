"""Shadow answers: what shadowing a share of live questions with the challenger costs the callers.

A data home with --docs APIBench documents, a champion and a challenger adapter of the default
training shape (untrained: the same compute as trained ones), served by a real `ragtune serve` on
loopback, once per shadow share (0, each of --shares, then 0 again), each run with the same questions
in the same order. The baseline is the mean of the two runs without shadowing, one before and one after,
and their ratio is reported as `baseline_drift`: a machine whose speed changed during the benchmark
shows there, rather than as an effect of shadowing. --clients clients each send their share one request at a time with an exponential think
time (mean --think seconds) between requests, so the server has idle moments, as live traffic has;
shadow answers run only in those (a fully busy server skips every shadow, which shows nothing).

Reports per share: the caller-side p50/p95 and throughput, their ratios against no shadowing in the
same run, the shadow answers logged and skipped (from /healthz), requests lost.

    python bench/shadow.py [--docs 120] [--clients 2] [--requests 16] [--think 3] [--shares 0.1 0.5]
"""

import argparse
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import timer, write_result
from serve import default_shape_adapter, free_port, promote_adapter, register_adapter, serving_home

from evaluation.metrics import percentile


def paced_load(url: str, questions: list[str], clients: int, think: float, seed: int) -> tuple[list[dict], float]:
    """Each client sends its share one at a time, pausing Exp(mean `think`) s before each; rows and wall time."""
    import httpx

    rows, lock = [], threading.Lock()

    def client(n: int, share: list[str]):
        pause = random.Random(seed + n)
        with httpx.Client(timeout=600) as http:
            for question in share:
                time.sleep(pause.expovariate(1 / think))
                started = time.perf_counter()
                try:
                    response = http.post(f"{url}/v1/ask", json={"question": question, "user": f"bench-{n}"})
                    row = {"status": response.status_code}
                except httpx.HTTPError as exc:
                    row = {"status": None, "error": str(exc)}
                row["client_ms"] = (time.perf_counter() - started) * 1000
                with lock:
                    rows.append(row)

    threads = [threading.Thread(target=client, args=(n, questions[n::clients])) for n in range(clients)]
    with timer() as wall:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return rows, wall.seconds


def serve_with_share(share: float, env: dict, log: Path, questions: list[str], args) -> dict:
    import httpx

    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "ragtune.cli", "serve", "--port", str(port)],
        env={**env, "RAGTUNE_SHADOW_SHARE": str(share)},
        stdout=subprocess.DEVNULL,
        stderr=open(log, "w"),
    )
    url = f"http://127.0.0.1:{port}"
    try:
        while True:
            if server.poll() is not None:
                raise SystemExit(log.read_text()[-3000:])
            try:
                if httpx.get(f"{url}/healthz", timeout=2).json()["status"] == "ok":
                    break
            except httpx.HTTPError:
                time.sleep(0.5)
        httpx.post(f"{url}/v1/ask", json={"question": questions[0], "user": "warm-up"}, timeout=600)
        time.sleep(15 if share else 0)  # the warm-up's own shadow answer finishes before the clock starts
        before = httpx.get(f"{url}/healthz", timeout=30).json()["shadow"]
        rows, wall = paced_load(url, questions, args.clients, args.think, seed=0)
        time.sleep(15 if share else 0)  # let the last shadow answers land before counting
        after = httpx.get(f"{url}/healthz", timeout=30).json()["shadow"]
    finally:
        server.terminate()
        server.wait(timeout=60)
    answered = [r for r in rows if r["status"] == 200]
    return {
        "share": share,
        "client_latency_ms": {
            "p50": round(percentile([r["client_ms"] for r in answered], 50), 1),
            "p95": round(percentile([r["client_ms"] for r in answered], 95), 1),
        },
        "throughput_answers_per_s": round(len(answered) / wall, 4),
        "wall_s": round(wall, 1),
        "requests_lost": len(questions) - len(answered),
        "shadow": {k: after[k] - before[k] for k in ("answered", "skipped_busy", "no_challenger", "failed")},
        "challenger": after["challenger"],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=120)
    parser.add_argument("--clients", type=int, default=2)
    parser.add_argument("--requests", type=int, default=30)
    parser.add_argument("--think", type=float, default=3.0, help="mean pause before each request, seconds")
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--shares", type=float, nargs="+", default=[0.1, 0.5])
    parser.add_argument("--name", default="shadow")
    args = parser.parse_args()

    from ragtune import registry

    with tempfile.TemporaryDirectory() as tmp:
        settings, base_model, questions = serving_home(Path(tmp), args.docs, args.max_new_tokens, args.requests)
        champion = promote_adapter(settings, default_shape_adapter(base_model, Path(tmp) / "champion"))
        challenger = register_adapter(settings, default_shape_adapter(base_model, Path(tmp) / "challenger"))
        registry.set_challenger(settings.tracking_uri, settings.registered_model, challenger)
        env = {
            **os.environ,
            "RAGTUNE_SERVE_MAX_NEW_TOKENS": str(args.max_new_tokens),
            "RAGTUNE_SERVE_WORKERS": "1",
            "RAGTUNE_SERVE_QUEUE": str(args.clients),
            "RAGTUNE_BASE_MODEL": base_model,
        }
        shares = [0.0, *args.shares, 0.0]
        runs = [serve_with_share(share, env, Path(tmp) / f"server-{n}.log", questions, args) for n, share in enumerate(shares)]

    first, last = runs[0], runs[-1]
    baseline = {
        "p50": (first["client_latency_ms"]["p50"] + last["client_latency_ms"]["p50"]) / 2,
        "p95": (first["client_latency_ms"]["p95"] + last["client_latency_ms"]["p95"]) / 2,
        "throughput": (first["throughput_answers_per_s"] + last["throughput_answers_per_s"]) / 2,
    }
    for run in runs[1:-1]:
        run["p50_ratio_vs_no_shadow"] = round(run["client_latency_ms"]["p50"] / baseline["p50"], 3)
        run["p95_ratio_vs_no_shadow"] = round(run["client_latency_ms"]["p95"] / baseline["p95"], 3)
        run["throughput_ratio_vs_no_shadow"] = round(run["throughput_answers_per_s"] / baseline["throughput"], 3)
    write_result(
        args.name,
        {
            "setup": {
                "documents": args.docs,
                "clients": args.clients,
                "requests": len(questions),
                "think_s": args.think,
                "workers": 1,
                "max_new_tokens": args.max_new_tokens,
                "champion": champion,
                "challenger": challenger,
            },
            "runs": runs,
            "baseline_drift_p50": round(last["client_latency_ms"]["p50"] / first["client_latency_ms"]["p50"], 3),
            "requests_lost": sum(r["requests_lost"] for r in runs),
        },
    )


if __name__ == "__main__":
    main()
