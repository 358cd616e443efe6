"""Training order: "not covered" examples spread over the epoch, batches still grouped by length."""

import random

import pytest

from ragtune.llm.prompting import NOT_COVERED, answer_json
from training.config import SftConfig
from training.order import abstains, longest_run, spread, stratified_order


def raft_like(n: int, share: float, seed: int = 0) -> tuple[list[int], list[bool]]:
    """Lengths and abstention flags shaped like a RAFT set: the abstentions are the short examples."""
    rng = random.Random(seed)
    flags = [rng.random() < share for _ in range(n)]
    lengths = [rng.randint(150, 300) if a else rng.randint(500, 1000) for a in flags]
    return lengths, flags


def padding_efficiency(order: list[int], lengths: list[int], batch: int) -> float:
    """Real tokens over padded tokens when batches are cut from `order` every `batch` examples."""
    padded = sum(max(lengths[i] for i in order[s : s + batch]) * len(order[s : s + batch]) for s in range(0, len(order), batch))
    return sum(lengths) / padded


def worst_window_share(flags: list[bool], steps: int, batch: int) -> float:
    span = steps * batch
    return max(sum(flags[s : s + span]) / span for s in range(0, len(flags) - span + 1, batch))


@pytest.mark.parametrize("n,share,batch", [(228, 0.22, 2), (671, 0.21, 2), (300, 0.4, 4), (50, 0.1, 2)])
def test_abstentions_are_spread_where_the_length_sampler_clusters_them(n, share, batch):
    import torch
    from transformers.trainer_pt_utils import LengthGroupedSampler

    lengths, flags = raft_like(n, share)
    order = stratified_order(lengths, flags, batch, seed=0)
    assert sorted(order) == list(range(n))
    ordered_flags = [flags[i] for i in order]
    overall = sum(flags) / n
    assert longest_run(ordered_flags, batch) <= 2
    # any 20 consecutive steps hold about the data set's share (window-local grouping only)
    assert worst_window_share(ordered_flags, 20, batch) <= overall + 0.2

    generator = torch.Generator().manual_seed(0)
    grouped = list(LengthGroupedSampler(batch, lengths=lengths, generator=generator))
    grouped_flags = [flags[i] for i in grouped]
    if n >= 200:  # the sampler this replaces: a megabatch sorted by length ends on a run of abstentions
        assert longest_run(grouped_flags, batch) >= 5
        assert worst_window_share(grouped_flags, 20, batch) > worst_window_share(ordered_flags, 20, batch)

    shuffled = random.Random(0).sample(range(n), n)  # grouping by length still saves padding over a shuffle
    assert padding_efficiency(order, lengths, batch) > padding_efficiency(shuffled, lengths, batch)


def test_order_is_seeded_and_checks_its_input():
    lengths, flags = raft_like(101, 0.2)
    assert stratified_order(lengths, flags, 4, seed=3) == stratified_order(lengths, flags, 4, seed=3)
    assert stratified_order(lengths, flags, 4, seed=3) != stratified_order(lengths, flags, 4, seed=4)
    # one window of 7 examples in batches of 3: the short batch (the shortest example) comes last
    order = stratified_order([50, 10, 70, 20, 60, 40, 30], [False] * 7, 3, seed=1)
    assert order[-1] == 1 and sorted(order[:3]) in ([0, 2, 4], [3, 5, 6])
    assert stratified_order([], [], 2, seed=0) == []
    with pytest.raises(ValueError, match="3 lengths for 2 examples"):
        stratified_order([1, 2, 3], [True, False], 2, seed=0)


def test_spread_keeps_each_lists_order_and_spaces_the_second():
    merged = spread(list(range(8)), [100, 101])
    assert [i for i in merged if i < 100] == list(range(8)) and [i for i in merged if i >= 100] == [100, 101]
    assert merged.index(100) in (2, 3) and merged.index(101) in (7, 8)
    assert spread([], [5, 6]) == [5, 6] and spread([1], []) == [1]


def test_abstention_targets_are_recognised():
    assert abstains(answer_json(NOT_COVERED, []))
    assert not abstains(answer_json("Use org/model-1.", ["org/model-1"]))


def test_an_unknown_order_is_refused():
    with pytest.raises(ValueError, match="batch_order 'sorted' is not one of stratified, length, random"):
        SftConfig(batch_order="sorted")


def test_stratified_order_needs_whole_examples():
    with pytest.raises(ValueError, match="packing merges them"):
        SftConfig(batch_order="stratified", packing=True)
    assert SftConfig(batch_order="random", packing=True).packing
    with pytest.raises(ValueError, match="batch_size must be at least 1"):
        stratified_order([1], [False], 0, seed=0)


@pytest.mark.integration
def test_the_trainer_batches_in_the_stratified_order(base_model, tokenizer, tmp_path):
    """Through TRL's own preparation and dataloader: the batches are the sampler's, drawn anew each epoch."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM

    from training.sft import LoraSFTTrainer, StratifiedSampler, training_arguments

    rows = [
        {
            "prompt": f"question {i} " + "document text " * (5 if i % 4 == 0 else 40 + i),
            "completion": answer_json(NOT_COVERED, []) if i % 4 == 0 else answer_json(f"Use m{i}.", [f"m{i}"]),
        }
        for i in range(40)
    ]
    config = SftConfig(output_dir=str(tmp_path), per_device_train_batch_size=2, max_steps=1, batch_order="stratified")
    trainer = LoraSFTTrainer(
        model=AutoModelForCausalLM.from_pretrained(base_model),
        args=training_arguments(config),
        train_dataset=Dataset.from_list(rows),
        processing_class=tokenizer,
        peft_config=config.lora_config(),
    )
    trainer.batch_order = "stratified"
    loader = trainer.get_train_dataloader()
    sampler = trainer._get_train_sampler()
    assert isinstance(sampler, StratifiedSampler) and sum(sampler.abstain) == 10
    assert sampler.longest_abstention_run() <= 1

    def batches():
        return [tuple(b["input_ids"][:, :4].flatten().tolist()) for b in loader]

    first = batches()
    expected = [i for i in sampler.order()]
    prepared = trainer.train_dataset["input_ids"]
    assert first == [tuple(sum((prepared[i][:4] for i in expected[s : s + 2]), [])) for s in range(0, 40, 2)]
    loader.set_epoch(1)  # what the Trainer does at each epoch
    assert batches() != first

    trainer.batch_order = "random"  # the other orders stay the Trainer's own samplers
    assert not isinstance(trainer._get_train_sampler(), StratifiedSampler)
