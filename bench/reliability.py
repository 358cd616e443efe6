"""Reliability: `ragtune serve` under 16 concurrent clients, four faults, and a table of bad inputs.

One data home (--docs APIBench documents through the importer and the index_refresh job, a champion
adapter of the default training shape) and a real `ragtune serve` process on loopback.

- Load: --clients (16) and, in the same run, 4 clients each send their share of --requests held-out
  questions one at a time. A 503 must carry Retry-After; the client waits that long and asks again, so
  every request ends answered. Lost: a request never answered, or answered with anything else. After each
  round the interaction log must hold exactly one complete record per answer.
- Faults:
  1. SIGKILL of the server while requests are in flight: the log holds only complete records, and a
     restarted server answers at once (seconds from start to the first answer).
  2. The MLflow tracking server (the tracking-server profile) stopped for 30 s while serving: the server
     never swaps to the base model; /healthz is polled every 0.5 s and one question asked every 2 s.
  3. Disk full during a refresh: the data home on a small tmpfs (root only; skipped with the reason
     otherwise). The refresh fails with a clear error, and the live index still answers, unchanged.
  4. SIGKILL during `ragtune index purge` (after the index, before the data home): the rerun completes.
- Bad input: each kind tried (document files, HTTP bodies, CLI arguments, evaluation sets, log lines),
  with what came back. Clear means: an exit code of 2 or an HTTP 4xx with a message naming the problem,
  no traceback, and the good input beside it still processed.

    python bench/reliability.py [--docs 120] [--clients 16] [--requests 32] [--max-new-tokens 16]
"""

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
from common import APIBENCH, timer, write_result
from serve import default_shape_adapter, free_port, promote_adapter

from evaluation.metrics import percentile
from ragtune.jsonl import read_jsonl
from ragtune.knowledge.store import ChunkStore

RECORD_KEYS = ("id", "ts", "user", "question", "answer", "citations", "model_version", "index_version", "latency_ms")


def ragtune(home: Path, *argv: str, env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "ragtune.cli", *argv],
        env={**os.environ, "RAGTUNE_HOME": str(home), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


class Server:
    """A `ragtune serve` process on a free loopback port."""

    def __init__(self, home: Path, env: dict, log: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self.process = subprocess.Popen(
            [sys.executable, "-m", "ragtune.cli", "serve", "--port", str(self.port)],
            env={**os.environ, "RAGTUNE_HOME": str(home), **env},
            stdout=subprocess.DEVNULL,
            stderr=log.open("a"),
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 300) -> float:
        started = time.perf_counter()
        while time.perf_counter() - started < timeout:
            if self.process.poll() is not None:
                raise SystemExit(f"the server exited:\n{self.log.read_text()[-3000:]}")
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).json()["status"] != "loading":
                    return time.perf_counter() - started
            except (httpx.HTTPError, ValueError):
                pass
            time.sleep(0.2)
        raise SystemExit("the server did not come up")

    def health(self) -> dict:
        return httpx.get(f"{self.url}/healthz", timeout=30).json()

    def stop(self, sig=signal.SIGTERM) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, sig)
            self.process.wait(timeout=60)


def complete(record: dict) -> bool:
    """Every field of an answered interaction present and well formed: nothing half-written."""
    return all(record.get(k) is not None for k in RECORD_KEYS) and isinstance(record["citations"], list)


def load_round(url: str, questions: list[str], clients: int, user: str) -> dict:
    """`clients` threads send their share one at a time; a 503 is retried after its Retry-After."""
    rows, lock = [], threading.Lock()

    def client(n: int, share: list[str]):
        with httpx.Client(timeout=600) as http:
            for question in share:
                started, refusals, status, no_retry_after = time.perf_counter(), 0, None, 0
                for _ in range(200):
                    try:
                        response = http.post(f"{url}/v1/ask", json={"question": question, "user": user})
                    except httpx.HTTPError:
                        status = None
                        break
                    status = response.status_code
                    if status != 503:
                        break
                    refusals += 1
                    wait = response.headers.get("retry-after")
                    no_retry_after += wait is None
                    time.sleep(float(wait or 1))
                with lock:
                    rows.append(
                        {
                            "status": status,
                            "refusals": refusals,
                            "no_retry_after": no_retry_after,
                            "ms": (time.perf_counter() - started) * 1000,
                        }
                    )

    threads = [threading.Thread(target=client, args=(n, questions[n::clients])) for n in range(clients)]
    with timer() as wall:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    answered = [r for r in rows if r["status"] == 200]
    return {
        "clients": clients,
        "requests": len(questions),
        "answered": len(answered),
        "lost": len(questions) - len(answered),
        "refused_503": sum(r["refusals"] for r in rows),
        "refused_without_retry_after": sum(r["no_retry_after"] for r in rows),
        "p50_ms": round(percentile([r["ms"] for r in answered], 50), 1) if answered else None,
        "p95_ms": round(percentile([r["ms"] for r in answered], 95), 1) if answered else None,
        "throughput_per_s": round(len(answered) / wall.seconds, 4),
    }


def logged(home: Path, user: str) -> list[dict]:
    from ragtune.behaviour.interactions import InteractionLog

    return [r for r in InteractionLog(f"sqlite:///{home / 'interactions.db'}").records() if r["user"] == user]


# -- faults ------------------------------------------------------------------------------------------
def kill_in_flight(home: Path, env: dict, log: Path, questions: list[str]) -> dict:
    server = Server(home, env, log)
    server.wait_ready()
    before = len(logged(home, "kill"))
    threads = [threading.Thread(target=lambda q=q: load_round(server.url, [q], 1, "kill"), daemon=True) for q in questions[:4]]
    for t in threads:
        t.start()
    time.sleep(3)  # generation under way
    server.stop(signal.SIGKILL)
    records = logged(home, "kill")
    restarted = Server(home, env, log)
    with timer() as first:
        restarted.wait_ready()
        answer = httpx.post(f"{restarted.url}/v1/ask", json={"question": questions[5], "user": "after-kill"}, timeout=600)
    restarted.stop()
    return {
        "records_logged_before_kill": len(records) - before,
        "all_records_complete": all(complete(r) for r in records),
        "restart_to_first_answer_s": round(first.seconds, 1),
        "first_answer_status": answer.status_code,
        "passed": all(complete(r) for r in records) and answer.status_code == 200,
    }


def mlflow_outage(home: Path, env: dict, log: Path, questions: list[str], settings, seconds: float = 30) -> dict:
    from ragtune.cli.main import mlflow_server_command

    port = free_port()
    command = mlflow_server_command(settings, "127.0.0.1", port)

    def start_mlflow():
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log.open("a"), start_new_session=True)
        for _ in range(600):
            try:
                if httpx.get(f"http://127.0.0.1:{port}/health", timeout=2).status_code == 200:
                    return process
            except httpx.HTTPError:
                time.sleep(0.5)
        raise SystemExit("mlflow server did not start")

    mlflow = start_mlflow()
    server = Server(home, {**env, "RAGTUNE_MLFLOW_TRACKING_URI": f"http://127.0.0.1:{port}"}, log)
    server.wait_ready()
    champion = server.health()["model_version"]
    os.killpg(mlflow.pid, signal.SIGTERM)
    mlflow.wait(timeout=60)
    seen, statuses, answers, started = set(), set(), [], time.perf_counter()
    last_question = 0.0
    while time.perf_counter() - started < seconds:
        health = server.health()
        seen.add(health["model_version"])
        statuses.add(health["status"])
        if time.perf_counter() - last_question >= 2:
            last_question = time.perf_counter()
            response = httpx.post(
                f"{server.url}/v1/ask", json={"question": questions[len(answers) % len(questions)]}, timeout=600
            )
            answers.append((response.status_code, response.json().get("model_version")))
        time.sleep(0.5)
    mlflow = start_mlflow()
    recovered = None
    for _ in range(240):
        health = server.health()
        if health["status"] == "ok" and not health["reload_error"]:
            recovered = health
            break
        time.sleep(0.5)
    server.stop()
    os.killpg(mlflow.pid, signal.SIGTERM)
    never_base = seen == {champion} and all(v == champion for _, v in answers)
    return {
        "champion": champion,
        "outage_s": seconds,
        "model_versions_seen": sorted(seen),
        "health_statuses_seen": sorted(statuses),
        "answers_during_outage": len(answers),
        "answers_ok": sum(s == 200 for s, _ in answers),
        "recovered": recovered is not None,
        "passed": never_base and all(s == 200 for s, _ in answers) and champion != "base",
    }


def disk_full(data: Path, work: Path) -> dict:
    """A refresh that runs out of space on a tmpfs data home: a clear error, the live index intact."""
    if os.geteuid() != 0:
        return {"skipped": "needs root to mount a tmpfs", "passed": None}
    mount = work / "tmpfs"
    mount.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=128m", "tmpfs", str(mount)], capture_output=True)
    if mounted.returncode:
        return {"skipped": f"mount failed: {mounted.stderr.decode().strip()}", "passed": None}
    try:
        small = work / "small-docs"
        small.mkdir()
        for path in sorted((data / "docs").glob("*.md"))[:20]:
            shutil.copy(path, small / path.name)
        home = mount / "home"
        first = ragtune(home, "refresh", "--source", str(small), "--json")
        before = ChunkStore(home / "lancedb", "chunks").chunk_ids_by_doc()
        stat = os.statvfs(mount)
        left = stat.f_bavail * stat.f_frsize - (1 << 20)  # leave 1 MB: room for a little, not for every document
        with open(mount / "filler", "wb") as f:
            while left > 0:
                f.write(b"\0" * min(left, 1 << 20))
                left -= 1 << 20
        full = ragtune(home, "refresh", "--source", str(data / "docs"), "--json", env={"RAGTUNE_WRITE_BATCH": "32"})
        (mount / "filler").unlink()
        after = ChunkStore(home / "lancedb", "chunks").chunk_ids_by_doc()
        search = ragtune(home, "search", "image classification", "--json")
        error = (json.loads(full.stdout.splitlines()[-1]).get("error", "") if full.stdout.strip() else full.stderr)[:400]
        # intact: every chunk held before still there (batches that landed before the disk filled are kept whole)
        intact = all(after.get(doc, set()) >= chunks for doc, chunks in before.items())
        rerun = ragtune(home, "refresh", "--source", str(data / "docs"), "--json")
        return {
            "first_refresh_exit": first.returncode,
            "full_refresh_exit": full.returncode,
            "error": error,
            "traceback_shown": "Traceback" in full.stderr,
            "cause_named": "no space left" in error,
            "live_index_intact": intact,
            "chunks_before_after": [sum(map(len, before.values())), sum(map(len, after.values()))],
            "search_after_exit": search.returncode,
            "rerun_after_freeing_space_exit": rerun.returncode,
            "passed": full.returncode != 0
            and intact
            and search.returncode == 0
            and rerun.returncode == 0
            and "no space left" in error
            and "Traceback" not in full.stderr,
        }
    finally:
        subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def kill_during_purge(home: Path) -> dict:
    doc = json.loads(ragtune(home, "search", "text classification", "--k", "1", "--json").stdout)["hits"][0]["doc_id"]
    argv = ("index", "purge", "--doc", doc, "--reason", "reliability bench", "--json")
    killed = ragtune(home, *argv, env={"RAGTUNE_FAILPOINT": "purge:after_index", "RAGTUNE_FAILPOINT_KILL": "1"})
    rerun = ragtune(home, *argv)
    history = json.loads(ragtune(home, "index", "history", "--json").stdout)["history"]
    done = [e for e in history if e["action"] == "purge" and e["doc_ids"] == [doc]]
    return {
        "killed_exit": killed.returncode,
        "rerun_exit": rerun.returncode,
        "audit_entries": len(done),
        "passed": killed.returncode == -9 and rerun.returncode == 0 and len(done) == 1,
    }


# -- bad input ---------------------------------------------------------------------------------------
def bad_inputs(home: Path, work: Path, url: str) -> list[dict]:
    rows = []

    def cli(kind: str, case: str, *argv: str) -> None:
        done = ragtune(home, *argv)
        message = (done.stderr.strip() or done.stdout.strip()).splitlines()
        rows.append(
            {
                "kind": kind,
                "case": case,
                "outcome": f"exit {done.returncode}",
                "message": (message[-1] if message else "")[:160],
                "clear": done.returncode == 2 and "Traceback" not in done.stderr,
            }
        )

    def http(case: str, **request) -> None:
        response = httpx.post(f"{url}/v1/ask", timeout=120, **request)
        rows.append(
            {
                "kind": "HTTP body",
                "case": case,
                "outcome": f"HTTP {response.status_code}",
                "message": response.text[:160],
                "clear": 400 <= response.status_code < 500 and "error" in response.text,
            }
        )

    # document files: each bad one skipped with its reason, the good one indexed
    docs = work / "bad-docs"
    docs.mkdir()
    (docs / "good.md").write_text("---\ntitle: Good\n---\nA good document about image segmentation models.\n")
    (docs / "binary.md").write_bytes(b"\x00\x01\x02\xff binary")
    (docs / "frontmatter.md").write_text("---\ntitle: [unclosed\n---\ntext\n")
    (docs / "empty.md").write_text("")
    (docs / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (docs / "lines.jsonl").write_text('{"id": "j1", "title": "Kept", "text": "a good line"}\n{oops\n')
    refreshed = ragtune(work / "docs-home", "refresh", "--source", str(docs), "--json")
    report = json.loads(refreshed.stdout.splitlines()[-1])
    for skipped in report.get("skipped", []):
        rows.append(
            {
                "kind": "document file",
                "case": skipped["path"],
                "outcome": "skipped",
                "message": skipped["reason"][:160],
                "clear": refreshed.returncode == 0 and report.get("docs_added", 0) >= 2,
            }
        )

    http("malformed JSON", content=b"{not json", headers={"content-type": "application/json"})
    http("no question", json={"user": "x"})
    http("empty question", json={"question": "   "})
    http("question over the limit", json={"question": "why? " * 1000})
    http("wrong type", json={"question": ["a", "list"]})
    http("body over the limit", content=b'{"question": "' + b"a" * 200_000 + b'"}', headers={"content-type": "application/json"})

    cli("CLI argument", "refresh --source missing", "refresh", "--source", str(work / "missing"))
    cli("CLI argument", "search with an empty query", "search", "   ")
    cli("CLI argument", "import-apibench --eval-fraction 2", "import-apibench", "--api", str(APIBENCH / "huggingface_api.jsonl"),
        "--questions", str(APIBENCH / "huggingface_eval.json"), "--out", str(work / "x"), "--eval-fraction", "2")  # fmt: skip
    cli("CLI argument", "models history --at yesterday", "models", "history", "--at", "yesterday")
    cli("CLI argument", "forget --user ''", "forget", "--user", " ")
    cli("CLI argument", "feedback on an unknown id", "feedback", "no-such-id", "up")

    eval_set = work / "eval.jsonl"
    eval_set.write_text('{broken\n{"question": "q without the rest"}\n')
    cli("evaluation set", "no usable item", "eval", "--set", str(eval_set))
    log = work / "log.jsonl"
    log.write_text('{broken\n{"question": "only a question"}\n')
    imported = ragtune(home, "logs", "import", str(log), "--json")
    report = json.loads(imported.stdout.splitlines()[-1])
    for bad in report.get("bad_lines", []):
        rows.append(
            {
                "kind": "log line",
                "case": f"line {bad['line']}",
                "outcome": "skipped",
                "message": bad["reason"][:160],
                "clear": imported.returncode == 0,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--docs", type=int, default=120)
    parser.add_argument("--clients", type=int, default=16)
    parser.add_argument("--requests", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=16)
    parser.add_argument("--outage", type=float, default=30, help="seconds the MLflow server is down")
    args = parser.parse_args()

    from ragtune.cli.apibench import import_apibench
    from ragtune.cli.knowledge import refresh
    from ragtune.llm.base_model import resolve_base_model
    from ragtune.settings import load_settings

    work = Path(tempfile.mkdtemp(prefix="ragtune-bench-reliability-"))
    home = work / "home"
    os.environ["RAGTUNE_HOME"] = str(home)
    data = work / "apibench"
    import_apibench(
        APIBENCH / "huggingface_api.jsonl", APIBENCH / "huggingface_eval.json", data, eval_fraction=0.2, max_docs=args.docs
    )
    settings = load_settings()
    if not refresh(settings, str(data / "docs"), allow_empty=False, verbose=False).success:
        raise SystemExit("refresh failed")
    base_model = str(resolve_base_model(settings.base_model, settings.models_dir))
    promote_adapter(settings, default_shape_adapter(base_model, work / "adapter"))
    questions = [item["question"] for item in read_jsonl(data / "eval.jsonl")]
    env = {
        "RAGTUNE_BASE_MODEL": base_model,
        "RAGTUNE_SERVE_MAX_NEW_TOKENS": str(args.max_new_tokens),
        "RAGTUNE_SERVE_WORKERS": "1",
        "RAGTUNE_SERVE_QUEUE": "4",
        "RAGTUNE_SERVE_RELOAD_SECONDS": "0.5",
    }
    log = work / "server.log"

    server = Server(home, env, log)
    startup = server.wait_ready()
    httpx.post(f"{server.url}/v1/ask", json={"question": questions[0], "user": "warm-up"}, timeout=600)
    rounds = {}
    for clients, n in ((4, args.requests // 2), (args.clients, args.requests)):
        user = f"load-{clients}"
        rounds[str(clients)] = load_round(server.url, questions[:n], clients, user)
        records = logged(home, user)
        rounds[str(clients)]["logged"] = len(records)
        rounds[str(clients)]["logged_complete"] = sum(complete(r) for r in records)
    bad = bad_inputs(home, work, server.url)
    server.stop()

    faults = {
        "sigkill_server_in_flight": kill_in_flight(home, env, log, questions),
        "mlflow_down_while_serving": mlflow_outage(home, env, log, questions, settings, args.outage),
        "disk_full_during_refresh": disk_full(data, work),
        "sigkill_during_purge": kill_during_purge(home),
    }
    many, few = rounds[str(args.clients)], rounds["4"]
    write_result(
        "reliability",
        {
            "setup": {"documents": args.docs, "max_new_tokens": args.max_new_tokens, "workers": 1, "queue": 4},
            "server_startup_s": round(startup, 1),
            "load": rounds,
            "load_ratio": {
                "p50": round(many["p50_ms"] / few["p50_ms"], 2) if many["p50_ms"] and few["p50_ms"] else None,
                "throughput": round(many["throughput_per_s"] / few["throughput_per_s"], 3),
            },
            "faults": faults,
            "bad_input": {"tried": len(bad), "clear": sum(r["clear"] for r in bad), "cases": bad},
            "targets": {"lost": 0, "half_written": 0, "faults": "all passed", "bad_input": "all clear"},
            "met": {
                "lost": all(r["lost"] == 0 for r in rounds.values()),
                "half_written": all(r["logged"] == r["logged_complete"] == r["answered"] for r in rounds.values()),
                "faults": all(f["passed"] is not False for f in faults.values()),
                "bad_input": all(r["clear"] for r in bad),
            },
        },
    )
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
