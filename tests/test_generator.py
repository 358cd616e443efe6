"""Generation with the real base model: answers come back parsed, or as a flagged fallback, never an exception;
the fast path (merged adapter, batches, bfloat16 where native) answers what the plain path answers."""

import pytest

from ragtune.llm.generator import FALLBACK_PREFIX, Generator, load_model, to_answer
from ragtune.precision import bf16_native, resolve_dtype

DOCS = [
    [{"doc_id": "org/ner-model", "title": "NER model", "text": "org/ner-model tags people and places in text."}],
    [
        {
            "doc_id": "acme/asr",
            "title": "Speech recognition",
            "text": "acme/asr turns English speech into text. Call pipeline('automatic-speech-recognition', model='acme/asr').",
        },
        {"doc_id": "acme/tts", "title": "Speech synthesis", "text": "acme/tts reads text aloud."},
    ],
    [{"doc_id": "vision/det", "title": "Object detection", "text": "vision/det finds objects in images and draws boxes."}],
]
QUESTIONS = [
    "Which model tags people in text?",
    "How do I transcribe a recording?",
    "What finds cars in a photo?",
    "Which model reads text aloud?",
]
PROMPTS = [(q, DOCS[i % len(DOCS)]) for i, q in enumerate(QUESTIONS)]


def trained_like_adapter(base_model, folder, seed: int = 0):
    """A LoRA whose B matrices are not zero, so merging it changes the weights (an untrained one would not)."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    torch.manual_seed(seed)
    model = get_peft_model(
        AutoModelForCausalLM.from_pretrained(base_model),
        LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"], task_type="CAUSAL_LM"),
    )
    with torch.no_grad():
        for name, param in model.named_parameters():
            if "lora_B" in name:
                param.normal_(0, 0.02)
    model.save_pretrained(folder)
    return folder


def test_to_answer_parses_or_falls_back():
    assert to_answer('{"answer": "Use x.", "citations": ["d1"]}') == ("Use x.", ["d1"], True)
    answer, citations, valid = to_answer("Use x, it is great.")
    assert not valid and citations == [] and answer == FALLBACK_PREFIX + "Use x, it is great."


def test_dtype_setting_resolves_and_refuses_unknown_values():
    assert resolve_dtype("float32") == "float32" and resolve_dtype("bfloat16") == "bfloat16"
    assert resolve_dtype("auto") == ("bfloat16" if bf16_native() else "float32")
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("float16x")


@pytest.mark.integration
def test_base_model_generates_a_bounded_reply(base_model):
    generator = Generator(base_model, max_new_tokens=12, constrained=False)
    result = generator.generate("Which model tags people in text?", DOCS[0])
    assert 0 < result.tokens <= 12 and result.seconds > 0 and result.raw
    assert result.valid == (to_answer(result.raw)[2]) and (result.valid or result.answer.startswith(FALLBACK_PREFIX))
    again = generator.generate("Which model tags people in text?", DOCS[0])
    assert again.raw == result.raw  # greedy decoding is reproducible


@pytest.mark.integration
def test_merged_adapter_in_a_batch_answers_as_the_unmerged_one_alone(base_model, tmp_path):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    adapter = trained_like_adapter(base_model, tmp_path / "adapter")
    fast = Generator(base_model, str(adapter), max_new_tokens=24, dtype="float32", batch_size=4, constrained=False)
    batched = [g.raw for g in fast.generate_batch(PROMPTS)]

    slow = Generator(base_model, None, max_new_tokens=24, dtype="float32", batch_size=1, constrained=False)
    slow.model = PeftModel.from_pretrained(
        AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32), str(adapter)
    ).eval()
    alone = [slow.generate(q, d).raw for q, d in PROMPTS]
    assert batched == alone
    plain = Generator(base_model, None, max_new_tokens=24, dtype="float32", constrained=False)
    assert [g.raw for g in plain.generate_batch(PROMPTS)] != batched  # the adapter changes what is said

    # merging writes into a private copy: the base checkpoint on disk is byte for byte what it was
    import hashlib
    from pathlib import Path

    def digest() -> str:
        return hashlib.sha256(b"".join(p.read_bytes() for p in sorted(Path(base_model).glob("*.safetensors")))).hexdigest()

    before = digest()
    base = AutoModelForCausalLM.from_pretrained(base_model, dtype=torch.float32)
    merged = load_model(base_model, str(adapter), "float32")
    name = "model.layers.0.self_attn.q_proj.weight"
    assert not torch.equal(dict(base.named_parameters())[name], dict(merged.named_parameters())[name])
    assert digest() == before


def test_bfloat16_embeddings_agree_with_float32():
    """Cheap enough to check even where bfloat16 is emulated: the embedder is 22M parameters."""
    from ragtune.knowledge.embedder import Embedder
    from ragtune.settings import load_settings

    path = load_settings().embedder_path()
    texts = [q + " " + " ".join(d["text"] for d in docs) for q, docs in PROMPTS]
    f32, bf16 = Embedder(path, dtype="float32").embed(texts), Embedder(path, dtype="bfloat16").embed(texts)
    assert bf16.dtype == f32.dtype and (f32 * bf16).sum(axis=1).min() >= 0.99


def test_bfloat16_training_arguments_build_on_a_cpu(tmp_path):
    """transformers refuses bf16 without a GPU unless told the run is on the CPU."""
    from training.config import SftConfig
    from training.sft import training_arguments

    args = training_arguments(SftConfig(dtype="bfloat16", output_dir=str(tmp_path)))
    assert args.bf16 and (args.use_cpu or args.device.type == "cuda")


@pytest.mark.integration
@pytest.mark.skipif(
    not bf16_native(),
    reason="this CPU has no bfloat16 units (amx_bf16/avx512_bf16): bfloat16 is "
    "emulated here, about 100x slower than float32, and `auto` never chooses it",
)
def test_bfloat16_answers_as_float32(base_model):
    prompts = [(f"{q} Answer briefly.", DOCS[j]) for q in QUESTIONS for j in range(len(DOCS))]
    f32 = Generator(base_model, max_new_tokens=32, dtype="float32", batch_size=4, constrained=False).generate_batch(prompts)
    bf16 = Generator(base_model, max_new_tokens=32, dtype="bfloat16", batch_size=4, constrained=False).generate_batch(prompts)
    same = sum(a.raw == b.raw for a, b in zip(f32, bf16)) / len(prompts)
    assert same >= 0.9, [(a.raw, b.raw) for a, b in zip(f32, bf16) if a.raw != b.raw]
