"""Training orders replayed on real RAFT sets: how long a stretch of training sees only "not covered".

    python bench/order.py --raft HOME/datasets/raft-*/train.jsonl [--raft ...] [--steps 55]

For each RAFT training file (as the raft_dataset asset wrote it) and each order, over several seeds:
the longest run of batches made only of abstention examples, the largest abstention share in any 10
consecutive steps of the first --steps (what a 15-minute run reaches), and padding efficiency (real
tokens over padded tokens). Orders: `stratified` (training/order.py, the default), `length`
(transformers' LengthGroupedSampler, the one it replaced) and `random` (a shuffle). No training:
lengths are token counts of prompt + completion under the bundled tokenizer.
"""

from __future__ import annotations

import argparse
import random
import statistics
from pathlib import Path

from common import machine, write_result

from ragtune.jsonl import read_jsonl
from ragtune.llm.base_model import resolve_base_model
from ragtune.settings import load_settings
from training.order import abstains, longest_run, stratified_order


def orders(lengths: list[int], flags: list[bool], batch: int, seed: int) -> dict[str, list[int]]:
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    grouped = LengthGroupedSampler(batch, lengths=lengths, generator=torch.Generator().manual_seed(seed))
    return {
        "stratified": stratified_order(lengths, flags, batch, seed),
        "length": list(grouped),
        "random": random.Random(seed).sample(range(len(lengths)), len(lengths)),
    }


def measures(order: list[int], lengths: list[int], flags: list[bool], batch: int, steps: int) -> dict:
    ordered = [flags[i] for i in order]
    window = 10 * batch
    reach = ordered[: steps * batch]
    padded = sum(max(lengths[i] for i in order[s : s + batch]) * len(order[s : s + batch]) for s in range(0, len(order), batch))
    return {
        "longest_abstention_run": longest_run(ordered, batch),
        "max_share_10_steps": max(sum(reach[s : s + window]) / window for s in range(0, max(len(reach) - window, 0) + 1, batch)),
        "padding_efficiency": sum(lengths) / padded,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--raft", action="append", required=True, help="a RAFT train.jsonl (repeat for several)")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--steps", type=int, default=55, help="steps a 15-minute run reaches on 2 cores")
    parser.add_argument("--seeds", type=int, default=10)
    args = parser.parse_args()

    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(resolve_base_model("", load_settings().models_dir))
    sets = []
    for path in args.raft:
        rows = read_jsonl(Path(path))
        lengths = [len(ids) for ids in tokenizer([r["prompt"] + r["completion"] for r in rows])["input_ids"]]
        flags = [abstains(r["completion"]) for r in rows]
        runs = [
            {
                name: measures(o, lengths, flags, args.batch, args.steps)
                for name, o in orders(lengths, flags, args.batch, seed).items()
            }
            for seed in range(args.seeds)
        ]
        summary = {
            name: {
                key: {
                    "median": round(statistics.median(r[name][key] for r in runs), 3),
                    "max": round(max(r[name][key] for r in runs), 3),
                    "min": round(min(r[name][key] for r in runs), 3),
                }
                for key in runs[0][name]
            }
            for name in runs[0]
        }
        sets.append(
            {"raft": path, "examples": len(rows), "abstention_share": round(sum(flags) / len(rows), 3), "orders": summary}
        )
    write_result(
        "order",
        {
            "machine": machine(),
            "batch": args.batch,
            "steps": args.steps,
            "seeds": args.seeds,
            "sets": sets,
            "baseline": "length (transformers' LengthGroupedSampler) and random, the same data and seeds",
        },
    )


if __name__ == "__main__":
    main()
