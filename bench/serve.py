"""Serving under load: 4 concurrent clients against `ragtune serve`, compared with answering in-process.

A data home with --docs APIBench documents (through the importer and the index_refresh job)
and a champion adapter of the default training shape (LoRA r=16 on every projection,
untrained: the same compute as a trained one) is served by a real `ragtune serve` process
on loopback. --clients threads send --requests held-out APIBench questions in total, each
client one request at a time. The baseline, in the same run, answers the same questions
sequentially in this process (Answerer, no HTTP, no queue).

Reports: p50/p95 of /v1/ask as the client sees it (queue wait included) and as the server
measures it, retrieval's share of the server time, throughput (answers/s) against the
in-process baseline, requests lost (non-200 or no response; target 0), peak server memory.

    python bench/serve.py [--docs 300] [--clients 4] [--requests 24] [--max-new-tokens 64]
"""

import argparse
import os
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from common import APIBENCH, timer, write_result

from evaluation.metrics import percentile
from ragtune.jsonl import read_jsonl


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_shape_adapter(base_model: str, folder: Path) -> Path:
    import yaml
    from common import ROOT
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    shape = yaml.safe_load((ROOT / "training" / "configs" / "default.yaml").read_text())
    config = LoraConfig(
        r=shape["lora_r"], lora_alpha=shape["lora_alpha"], target_modules=shape["target_modules"], task_type="CAUSAL_LM"
    )
    get_peft_model(AutoModelForCausalLM.from_pretrained(base_model), config).save_pretrained(folder)
    return folder


def register_adapter(settings, folder: Path) -> str:
    """A real MLflow run logging the adapter folder, registered as a new version."""
    import mlflow

    from ragtune import registry

    experiment = registry.ensure_experiment(settings.tracking_uri, "bench", settings.artifact_root())
    with mlflow.start_run(experiment_id=experiment) as run:
        mlflow.log_artifacts(str(folder), "adapter")
    return registry.register_model(
        settings.tracking_uri, settings.registered_model, run.info.run_id, "adapter", {"dataset_hash": "bench"}
    )


def promote_adapter(settings, folder: Path) -> str:
    from ragtune import registry

    version = register_adapter(settings, folder)
    registry.promote(settings.tracking_uri, settings.registered_model, version, reason="serving benchmark")
    return version


def serving_home(tmp: Path, documents: int, max_new_tokens: int, requests: int):
    """A data home in `tmp` (RAGTUNE_HOME set) indexing `documents` APIBench HuggingFace documents; its settings,
    the base model's path and `requests` held-out questions in a seeded order."""
    from ragtune.cli.apibench import import_apibench
    from ragtune.cli.knowledge import refresh
    from ragtune.llm.base_model import resolve_base_model
    from ragtune.settings import load_settings

    os.environ["RAGTUNE_HOME"] = str(tmp / "home")
    data = tmp / "apibench"
    import_apibench(
        APIBENCH / "huggingface_api.jsonl",
        APIBENCH / "huggingface_eval.json",
        data,
        eval_fraction=0.2,
        seed=0,
        max_docs=documents,
    )
    settings = load_settings(serve_max_new_tokens=max_new_tokens)
    if not refresh(settings, str(data / "docs"), allow_empty=False, verbose=False).success:
        raise SystemExit("refresh failed")
    items = read_jsonl(data / "eval.jsonl")
    random.Random(0).shuffle(items)
    base_model = str(resolve_base_model(settings.base_model, settings.models_dir))
    return settings, base_model, [item["question"] for item in items][:requests]


class MemoryWatch(threading.Thread):
    """Peak resident memory of a process, sampled every 0.2 s."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        import psutil

        self.process, self.peak, self.stop = psutil.Process(pid), 0, threading.Event()

    def run(self):
        while not self.stop.wait(0.2):
            try:
                self.peak = max(self.peak, self.process.memory_info().rss)
            except Exception:
                return


def load(url: str, questions: list[str], clients: int) -> tuple[list[dict], float]:
    """Each client sends its share one at a time; returns one row per request and the wall time."""
    import httpx

    rows, lock = [], threading.Lock()
    shares = [questions[i::clients] for i in range(clients)]

    def client(n: int, share: list[str]):
        with httpx.Client(timeout=600) as http:
            for question in share:
                started = time.perf_counter()
                try:
                    response = http.post(f"{url}/v1/ask", json={"question": question, "user": f"bench-{n}"})
                    row = {"status": response.status_code, "body": response.json() if response.status_code == 200 else None}
                except httpx.HTTPError as exc:
                    row = {"status": None, "error": str(exc)}
                row["client_ms"] = (time.perf_counter() - started) * 1000
                with lock:
                    rows.append(row)

    threads = [threading.Thread(target=client, args=(n, share)) for n, share in enumerate(shares)]
    with timer() as wall:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    return rows, wall.seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--clients", type=int, default=4)
    parser.add_argument("--requests", type=int, default=24)
    parser.add_argument("--max-new-tokens", type=int, default=64)
    parser.add_argument("--workers", type=int, default=1, help="RAGTUNE_SERVE_WORKERS of the server")
    parser.add_argument("--name", default="serve")
    args = parser.parse_args()

    import httpx

    from ragtune.serving.answerer import Answerer

    with tempfile.TemporaryDirectory() as tmp:
        settings, base_model, questions = serving_home(Path(tmp), args.docs, args.max_new_tokens, args.requests)
        version = promote_adapter(settings, default_shape_adapter(base_model, Path(tmp) / "adapter"))

        # baseline: the same answers, in this process, one after another
        answerer = Answerer.from_settings(settings)
        answerer.answer(questions[0], user="warm-up")
        with timer() as baseline:
            direct = [answerer.answer(q, user="bench-direct") for q in questions]
        del answerer

        port = free_port()
        env = {
            **os.environ,
            "RAGTUNE_SERVE_MAX_NEW_TOKENS": str(args.max_new_tokens),
            "RAGTUNE_SERVE_WORKERS": str(args.workers),
            "RAGTUNE_SERVE_QUEUE": str(args.clients),
            "RAGTUNE_BASE_MODEL": base_model,
        }
        server = subprocess.Popen(
            [sys.executable, "-m", "ragtune.cli", "serve", "--port", str(port)],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=open(Path(tmp) / "server.log", "w"),
        )
        url = f"http://127.0.0.1:{port}"
        try:
            with timer() as startup:
                while True:
                    if server.poll() is not None:
                        raise SystemExit((Path(tmp) / "server.log").read_text()[-3000:])
                    try:
                        if httpx.get(f"{url}/healthz", timeout=2).json()["status"] == "ok":
                            break
                    except httpx.HTTPError:
                        time.sleep(0.5)
            memory = MemoryWatch(server.pid)
            memory.start()
            httpx.post(f"{url}/v1/ask", json={"question": questions[0], "user": "warm-up"}, timeout=600)
            rows, wall = load(url, questions, args.clients)
            memory.stop.set()
        finally:
            server.terminate()
            server.wait(timeout=60)

    answered = [r["body"] for r in rows if r["status"] == 200]
    lost = len(questions) - len(answered)
    server_ms = [b["latency_ms"] for b in answered]
    throughput, baseline_throughput = len(answered) / wall, len(direct) / baseline.seconds
    result = {
        "setup": {
            "documents": args.docs,
            "clients": args.clients,
            "requests": len(questions),
            "workers": args.workers,
            "max_new_tokens": args.max_new_tokens,
            "champion": version,
            "server_startup_s": round(startup.seconds, 1),
        },
        "client_latency_ms": {
            "p50": round(percentile([r["client_ms"] for r in rows], 50), 1),
            "p95": round(percentile([r["client_ms"] for r in rows], 95), 1),
        },
        "server_latency_ms": {"p50": round(percentile(server_ms, 50), 1), "p95": round(percentile(server_ms, 95), 1)},
        "retrieval_share": round(sum(b["retrieval_ms"] for b in answered) / max(sum(server_ms), 1e-9), 4),
        "tokens_mean": round(statistics.mean(b["tokens"] for b in answered), 1) if answered else None,
        "throughput_answers_per_s": round(throughput, 4),
        "baseline_in_process_answers_per_s": round(baseline_throughput, 4),
        "throughput_ratio_vs_in_process": round(throughput / baseline_throughput, 3),
        "baseline_latency_ms": {
            "p50": round(percentile([a.latency_ms for a in direct], 50), 1),
            "p95": round(percentile([a.latency_ms for a in direct], 95), 1),
        },
        "requests_lost": lost,
        "statuses": {str(s): sum(r["status"] == s for r in rows) for s in {r["status"] for r in rows}},
        "peak_server_rss_mb": round(memory.peak / 2**20, 1),
        "targets": {"requests_lost": 0},
        "met": {"requests_lost": lost == 0},
    }
    write_result(args.name, result)


if __name__ == "__main__":
    main()
