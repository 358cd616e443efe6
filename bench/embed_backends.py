"""Raw encoding speed of the embedder on each backend, in one run, against today's float32 torch path.

Backends: torch float32 (today), torch bfloat16, ONNX Runtime float32 (exported with torch.onnx),
ONNX Runtime with its BERT graph fusions, and that fused graph dynamically quantized to int8.
Each encodes the same real chunks (APIBench HuggingFace, title + text as indexed); its vectors are
compared with float32 torch by cosine. The choice rule (issue 15): the fastest backend whose every
vector keeps cosine >= 0.99. Target: raw encoding >= 2x today's.

sentence-transformers' own ONNX/OpenVINO backends need optimum-onnx / optimum-intel, which pin
transformers < 4.58 (this project runs transformers 5), so the export and the fusions here use
torch.onnx and onnxruntime directly: the same ONNX Runtime kernels those backends run.

    python bench/embed_backends.py [--texts 512] [--batch 64]
"""

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
from common import import_corpus, write_result

from ragtune.knowledge.chunker import chunk_document
from ragtune.knowledge.documents import load_documents
from ragtune.knowledge.embedder import Embedder
from ragtune.knowledge.indexing import embedding_text
from ragtune.precision import bf16_native
from ragtune.settings import load_settings

MIN_COSINE = 0.99


def export_onnx(embedder: Embedder, folder: Path) -> dict[str, Path]:
    """The transformer as ONNX: plain, with ONNX Runtime's BERT fusions, and that quantized to int8."""
    import onnx
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from onnxruntime.transformers import optimizer

    bert = embedder.model[0].auto_model.eval()
    config = bert.config

    class Hidden(torch.nn.Module):  # keyword arguments: transformers 5 changed BertModel's positional ones
        def __init__(self, model):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask, token_type_ids):
            return self.model(input_ids=input_ids, attention_mask=attention_mask, token_type_ids=token_type_ids).last_hidden_state

    names = ["input_ids", "attention_mask", "token_type_ids"]
    sample = embedder.model.tokenizer(["a short text", "and a somewhat longer one"], padding=True, return_tensors="pt")
    paths = {"onnx": folder / "model.onnx", "onnx_fused": folder / "fused.onnx", "onnx_fused_int8": folder / "fused-int8.onnx"}
    torch.onnx.export(
        Hidden(bert),
        tuple(sample[n] for n in names),
        str(paths["onnx"]),
        input_names=names,
        output_names=["hidden"],
        dynamic_axes={n: {0: "batch", 1: "sequence"} for n in [*names, "hidden"]},
        opset_version=17,
        dynamo=False,
    )
    fused = optimizer.optimize_model(
        str(paths["onnx"]), model_type="bert", num_heads=config.num_attention_heads, hidden_size=config.hidden_size
    )
    fused.save_model_to_file(str(paths["onnx_fused"]))
    quantize_dynamic(
        str(paths["onnx_fused"]),
        str(paths["onnx_fused_int8"]),
        weight_type=QuantType.QInt8,
        per_channel=True,
        extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT},
    )
    return paths


def onnx_encoder(path: Path, tokenizer, max_length: int, batch: int):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])

    def encode(texts: list[str]) -> np.ndarray:
        order = np.argsort([-len(t) for t in texts])  # as sentence-transformers does: little padding per batch
        parts = []
        for start in range(0, len(texts), batch):
            picked = [texts[i] for i in order[start : start + batch]]
            tokens = tokenizer(picked, padding=True, truncation=True, max_length=max_length, return_tensors="np")
            hidden = session.run(
                None, {k: tokens[k].astype(np.int64) for k in ("input_ids", "attention_mask", "token_type_ids")}
            )[0]
            mask = tokens["attention_mask"][..., None].astype(np.float32)
            pooled = (hidden * mask).sum(1) / np.clip(mask.sum(1), 1e-9, None)
            parts.append(pooled / np.linalg.norm(pooled, axis=1, keepdims=True))
        out = np.concatenate(parts)
        return out[np.argsort(order)]

    return encode


def timed(encode, texts: list[str]) -> tuple[np.ndarray, float]:
    encode(texts[:16])  # warm up
    start = time.perf_counter()
    vectors = encode(texts)
    return vectors, time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--texts", type=int, default=512, help="chunks encoded per backend (default 512)")
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    settings = load_settings()
    work = Path(tempfile.mkdtemp(prefix="ragtune-bench-backends-"))
    import_corpus(work / "corpus")
    base = Embedder(settings.embedder_path(), batch_size=args.batch, dtype="float32")
    load = load_documents(work / "corpus" / "docs")
    chunks = [c for d in load.documents for c in chunk_document(d, base.counter, settings.chunk_tokens, settings.chunk_overlap)]
    texts = [embedding_text(c) for c in chunks[: args.texts]]

    reference, seconds = timed(base.embed, texts)
    backends = {"torch_float32": {"texts_per_s": len(texts) / seconds, "cosine_min": 1.0, "cosine_mean": 1.0}}
    runs = {}
    native = bf16_native()
    bf16 = Embedder(settings.embedder_path(), batch_size=args.batch, dtype="bfloat16")
    sample = texts if native else texts[:64]  # emulated bfloat16 is far slower: a sample tells enough
    runs["torch_bfloat16"] = (bf16.embed, sample)
    paths = export_onnx(base, work)
    for name, path in paths.items():
        runs[name] = (onnx_encoder(path, base.model.tokenizer, base.max_tokens, args.batch), texts)
    for name, (encode, subset) in runs.items():
        vectors, seconds = timed(encode, subset)
        cosine = (vectors * reference[: len(subset)]).sum(axis=1)
        backends[name] = {
            "texts_per_s": len(subset) / seconds,
            "cosine_min": float(cosine.min()),
            "cosine_mean": float(cosine.mean()),
        }
        if name == "torch_bfloat16" and not native:
            backends[name]["note"] = "this CPU has no bfloat16 units: emulated; measured on 64 texts"
    today = backends["torch_float32"]["texts_per_s"]
    for row in backends.values():
        row["speedup"] = round(row["texts_per_s"] / today, 3)
        row["texts_per_s"] = round(row["texts_per_s"], 1)
        row["cosine_min"], row["cosine_mean"] = round(row["cosine_min"], 5), round(row["cosine_mean"], 5)
    eligible = {name: row for name, row in backends.items() if row["cosine_min"] >= MIN_COSINE}
    chosen = max(eligible, key=lambda name: eligible[name]["texts_per_s"])
    write_result(
        "embed_backends",
        {
            "texts": len(texts),
            "batch": args.batch,
            "cpu_bf16": native,
            "backends": backends,
            "rule": f"fastest with every cosine to torch float32 >= {MIN_COSINE}",
            "chosen": chosen,
            "targets": {"raw_speedup": ">= 2.0"},
            "met": {"raw_speedup": backends[chosen]["speedup"] >= 2.0},
        },
    )


if __name__ == "__main__":
    main()
