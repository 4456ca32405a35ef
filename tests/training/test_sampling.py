"""Token-budget training batches, length-sorted evaluation, and the loss under variable batches."""

from __future__ import annotations

import json
import logging
import random

import numpy as np
import pytest

import hf_encdec
from hf_encdec.errors import ConfigError
from hf_encdec.training.samplers import TokenBudgetBatchSampler, batch_cost, expected_padding, split_to_multiple


def skewed_lengths(n: int = 500, seed: int = 0) -> tuple[list[int], list[int]]:
    """Mostly short pairs, a few long ones: the distribution where fixed-size batches pad most."""
    rng = random.Random(seed)
    source = [rng.randint(3, 20) if rng.random() < 0.9 else rng.randint(60, 200) for _ in range(n)]
    target = [max(1, int(s * rng.uniform(0.7, 1.4))) for s in source]
    return source, target


def cost(batch, source, target) -> int:
    return batch_cost(len(batch), max(source[i] for i in batch), max(target[i] for i in batch))


@pytest.mark.parametrize("max_tokens", [64, 300, 2048])
@pytest.mark.parametrize("seed", [0, 7])
def test_every_example_exactly_once_per_epoch_within_the_budget(max_tokens, seed):
    source, target = skewed_lengths()
    sampler = TokenBudgetBatchSampler(source, target, max_tokens, seed=seed)
    for epoch in range(3):
        sampler.set_epoch(epoch)
        batches = list(sampler)
        assert len(batches) == len(sampler)
        assert sorted(i for b in batches for i in b) == list(range(len(source)))
        for batch in batches:
            assert cost(batch, source, target) <= max_tokens or len(batch) == 1


def _windows_cut_greedily(source, target, max_tokens, seed, pad_multiple):
    """The sampler's plan as it was cut before batching.cut_batches served it: each sorted window by hand."""
    source, target = np.asarray(source), np.asarray(target)
    window = max(1, int(3 * max_tokens / max(1.0, float((source + target).mean()))))
    order = np.random.default_rng([seed, 0, 0]).permutation(len(source))
    batches = []
    for start in range(0, len(order), window):
        part = order[start:start + window]
        part = part[np.lexsort((-(source[part] + target[part]), -np.maximum(source[part], target[part])))]
        batch, longest_source, longest_target = [], 0, 0
        for index in part.tolist():
            widest_source, widest_target = max(longest_source, source[index]), max(longest_target, target[index])
            if batch and batch_cost(len(batch) + 1, widest_source, widest_target, pad_multiple) > max_tokens:
                batches.append(batch)
                batch, widest_source, widest_target = [], source[index], target[index]
            batch.append(index)
            longest_source, longest_target = widest_source, widest_target
        batches.append(batch)
    return batches


@pytest.mark.parametrize("max_tokens, pad_multiple", [(40, 1), (256, 1), (256, 8), (1500, 8)])
@pytest.mark.parametrize("seed", [0, 5])
def test_the_shared_cutter_cuts_the_batches_the_sampler_cut_by_itself(max_tokens, pad_multiple, seed):
    rng = random.Random(seed)
    source = [rng.randint(1, 90) for _ in range(700)]
    target = [rng.randint(1, 120) for _ in range(700)]
    sampler = TokenBudgetBatchSampler(source, target, max_tokens, seed=seed, pad_multiple=pad_multiple)
    assert sampler.plan == _windows_cut_greedily(source, target, max_tokens, seed, pad_multiple)


def test_an_example_over_the_budget_gets_a_batch_of_its_own(caplog):
    source, target = [4] * 30 + [90], [4] * 30 + [80]
    with caplog.at_level(logging.WARNING, logger="hf_encdec.sampling"):
        batches = list(TokenBudgetBatchSampler(source, target, 100))
    assert [30] in batches
    assert sorted(i for b in batches for i in b) == list(range(31))
    assert "1 examples alone cost more than max_tokens=100" in caplog.text


def test_same_seed_same_batches_other_seed_or_epoch_other_batches():
    source, target = skewed_lengths()

    def epoch(seed, number):
        sampler = TokenBudgetBatchSampler(source, target, 256, seed=seed)
        sampler.set_epoch(number)
        return list(sampler)

    assert epoch(3, 1) == epoch(3, 1)
    assert epoch(3, 1) != epoch(4, 1)
    first, second = epoch(3, 0), epoch(3, 1)
    assert first != second
    assert {tuple(sorted(b)) for b in first} != {tuple(sorted(b)) for b in second}  # who shares a batch changes
    # ... but not what the batches cost, so every epoch has the same number of batches and the same shapes.
    assert sorted(cost(b, source, target) for b in first) == sorted(cost(b, source, target) for b in second)


def test_token_budget_pads_far_less_than_random_batches():
    source, target = skewed_lengths(2000)
    budget = expected_padding("token_budget", source, target, batch_size=32, max_tokens=1024)
    random_batches = expected_padding("random", source, target, batch_size=32)
    grouped = expected_padding("group_by_length", source, target, batch_size=32)
    assert budget < grouped < random_batches and budget < random_batches / 3


@pytest.mark.parametrize("replicas, accumulation", [(2, 1), (3, 2), (4, 4)])
def test_ranks_get_equal_batch_counts_and_together_every_example_once(replicas, accumulation):
    from accelerate.data_loader import BatchSamplerShard

    source, target = skewed_lengths(301)
    sampler = TokenBudgetBatchSampler(source, target, 400, seed=1, num_replicas=replicas,
                                      accumulation_steps=accumulation)
    assert len(sampler) % (replicas * accumulation) == 0  # whole optimizer steps on every rank
    sampler.set_epoch(2)
    # accelerate's own sharding, as Trainer.accelerator.prepare applies it on each process.
    shards = [list(BatchSamplerShard(sampler, num_processes=replicas, process_index=rank))
              for rank in range(replicas)]
    assert {len(shard) for shard in shards} == {len(sampler) // replicas}
    assert sorted(i for shard in shards for b in shard for i in b) == list(range(301))


def test_fewer_examples_than_processes_repeat_rather_than_stall():
    sampler = TokenBudgetBatchSampler([5, 6, 7], [5, 6, 7], 1000, num_replicas=4)
    assert len(sampler) == 4
    assert {i for b in sampler for i in b} == {0, 1, 2}


def test_halving_reaches_the_multiple_without_losing_an_example():
    batches = split_to_multiple([[0, 1, 2, 3, 4], [5, 6], [7]], 4)
    assert len(batches) == 4 and sorted(i for b in batches for i in b) == list(range(8))


# ----------------------------------------------------------------------------- through the Trainer


def _tiny_trainer(tmp_path, dataset, **args):
    import torch
    from transformers import DataCollatorForSeq2Seq, T5Config, T5ForConditionalGeneration

    from hf_encdec.config.training_args import EncDecTrainingArguments
    from hf_encdec.training.trainer import EncDecTrainer, token_level_loss

    torch.manual_seed(0)
    model = T5ForConditionalGeneration(T5Config(vocab_size=40, d_model=16, d_ff=32, d_kv=4, num_heads=2,
                                                num_layers=1, dropout_rate=0.0, decoder_start_token_id=0))

    class Tokenizer:  # what DataCollatorForSeq2Seq needs of a tokenizer
        pad_token_id = 0
        padding_side = "right"
        model_input_names = ("input_ids", "attention_mask")

        def pad(self, features, **kwargs):
            longest = max(len(f["input_ids"]) for f in features)
            return {"input_ids": torch.tensor([f["input_ids"] + [0] * (longest - len(f["input_ids"]))
                                               for f in features]),
                    "attention_mask": torch.tensor([[1] * len(f["input_ids"]) + [0] * (longest - len(f["input_ids"]))
                                                    for f in features])}

    seen = []

    def collate(features):
        seen.append([tuple(f["input_ids"]) for f in features])
        return DataCollatorForSeq2Seq(Tokenizer(), model=model)(features)

    defaults = {"output_dir": str(tmp_path), "report_to": "none", "learning_rate": 1e-3, "save_strategy": "no",
                "logging_steps": 1, "disable_tqdm": True, "use_cpu": True}
    trainer = EncDecTrainer(model=model, args=EncDecTrainingArguments(**{**defaults, **args}), train_dataset=dataset,
                            data_collator=collate, compute_loss_func=token_level_loss)
    return trainer, seen


def _dataset(n=48, seed=0):
    from datasets import Dataset

    rng = random.Random(seed)
    rows = [{"input_ids": [rng.randrange(2, 40) for _ in range(rng.choice([2, 3, 4, 12, 30]))] + [1],
             "labels": [rng.randrange(2, 40) for _ in range(rng.choice([1, 2, 5, 20]))] + [1]} for _ in range(n)]
    return Dataset.from_list(rows)


@pytest.mark.parametrize("batch_size, accumulation", [(4, 2), (2, 4)])
def test_loss_and_gradient_do_not_depend_on_how_a_batch_is_split(tmp_path, batch_size, accumulation):
    """The optimizer step sees the token-level mean of all its examples, however they are split into micro-batches."""
    dataset = _dataset(8)
    common = {"max_steps": 1, "learning_rate": 0.0, "train_sampling_strategy": "sequential"}
    whole, _ = _tiny_trainer(tmp_path / "a", dataset, per_device_train_batch_size=8, **common)
    split, _ = _tiny_trainer(tmp_path / "b", dataset, per_device_train_batch_size=batch_size,
                             gradient_accumulation_steps=accumulation, **common)
    reference, result = whole.train(), split.train()
    assert result.training_loss == pytest.approx(reference.training_loss, rel=1e-4)
    norms = [[e["grad_norm"] for e in t.state.log_history if "grad_norm" in e] for t in (whole, split)]
    assert norms[1] == pytest.approx(norms[0], rel=1e-4)


def test_resume_mid_epoch_replays_the_batches_the_run_would_have_seen(tmp_path):
    dataset = _dataset(60)
    args = {"train_sampling_strategy": "token_budget", "max_tokens": 400, "max_steps": 12, "save_strategy": "steps",
            "save_steps": 7, "seed": 5}
    full, seen_full = _tiny_trainer(tmp_path / "run", dataset, **args)
    full.train()
    steps_per_epoch = len(full.get_train_dataloader())
    assert 1 < steps_per_epoch < 7 and len({len(b) for b in seen_full}) > 1  # resumes mid-epoch 2; sizes vary
    resumed, seen_resumed = _tiny_trainer(tmp_path / "run", dataset, **args)
    resumed.train(resume_from_checkpoint=str(tmp_path / "run" / "checkpoint-7"))
    # Both runs also collate the batch the loop fetches ahead of its last step: the whole tail is the same.
    assert seen_resumed == seen_full[7:]


def test_predictions_come_back_in_dataset_order_though_generated_longest_first(tmp_path):
    dataset = _dataset(20, seed=3)
    trainer, _ = _tiny_trainer(tmp_path, dataset, per_device_eval_batch_size=3, predict_with_generate=True,
                               generation_max_length=5)
    from hf_encdec.training.trainer import find_length_sorted_sampler

    order = find_length_sorted_sampler(trainer.get_test_dataloader(dataset)).order
    lengths = [len(r) + len(t) for r, t in zip(dataset["input_ids"], dataset["labels"])]
    assert [lengths[i] for i in order] == sorted(lengths, reverse=True)
    received = []
    trainer.compute_metrics = lambda prediction: received.append(prediction.label_ids) or {}
    output = trainer.predict(dataset)
    for labels in (output.label_ids, received[0]):  # padded with -100 between batches, 0 (pad) by generate
        assert [[t for t in row if t not in (-100, 0)] for row in labels.tolist()] == list(dataset["labels"])
    assert len(output.predictions) == len(dataset)


# ----------------------------------------------------------------------------- public API


def test_training_with_a_token_budget_through_the_public_api(tiny_models, quick_args, caplog):
    with caplog.at_level(logging.INFO, logger="hf_encdec"):
        result = hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["bart"]), "max_tokens": 96,
                                  "max_steps": 6, "gradient_accumulation_steps": 2})
    assert "train batches (token_budget, max_tokens=96)" in caplog.text and "random batches of 16" in caplog.text
    assert ("batch: up to 96 padded tokens per device x 1 process(es) x 2 accumulation step(s) = 192 tokens per "
            "optimizer step") in caplog.text  # not the unused per_device_train_batch_size
    state = json.loads((result.output_dir / "trainer_state.json").read_text())
    assert state["global_step"] == 6
    rows = [json.loads(line) for line in (result.output_dir / "predictions.jsonl").read_text().splitlines()]
    assert [r["line"] for r in rows] == list(range(1, len(rows) + 1))
    import yaml

    saved = yaml.safe_load((result.output_dir / "run_config.yaml").read_text())
    assert saved["max_tokens"] == 96
    assert "| max_tokens | 96 (token-budget batches" in (result.output_dir / "README.md").read_text()


def test_group_by_length_runs_and_reports_its_padding(tiny_models, quick_args, caplog):
    with caplog.at_level(logging.INFO, logger="hf_encdec"):
        hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["t5"]), "max_steps": 2,
                         "train_sampling_strategy": "group_by_length", "test_file": None})
    assert "train batches (group_by_length, 16 examples)" in caplog.text


@pytest.mark.parametrize("bad, key", [({"train_sampling_strategy": "token_budget"}, "max_tokens"),
                                      ({"max_tokens": -5}, "max_tokens"),
                                      ({"max_tokens": 500, "train_sampling_strategy": "random"}, "max_tokens"),
                                      ({"max_tokens": 500, "pad_to_max_length": True}, "pad_to_max_length"),
                                      ({"train_sampling_strategy": "token-budget"}, "train_sampling_strategy")])
def test_contradictory_batching_keys_are_named(tiny_models, quick_args, bad, key):
    with pytest.raises(ConfigError) as err:
        hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["t5"]), **bad})
    assert err.value.key == key


def test_torch_compile_trains_and_saves_a_plain_model(tiny_models, quick_args):
    """torch_compile goes through dynamo (the eager backend here: inductor's C++ build takes minutes on 2 CPU cores)."""
    import torch._dynamo
    from safetensors import safe_open

    torch._dynamo.reset()
    torch._dynamo.utils.counters.clear()
    result = hf_encdec.train({**quick_args, "model_name_or_path": str(tiny_models["t5"]), "torch_compile": True,
                              "torch_compile_backend": "eager", "max_steps": 2, "max_tokens": 128, "test_file": None,
                              "max_eval_samples": 4})
    assert torch._dynamo.utils.counters["stats"]["unique_graphs"] > 0  # the training step ran compiled
    assert np.isfinite(result.metrics["train"]["train_loss"])
    with safe_open(result.output_dir / "model.safetensors", "pt") as weights:
        names = weights.keys()
    assert names and not [name for name in names if "_orig_mod" in name]  # saved as a plain model
