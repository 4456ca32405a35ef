"""Which examples share a batch: training batches cut by a token budget, evaluation batches by length.

The transformers Trainer batches a fixed number of examples, so with real data (a few tokens to
hundreds) most of a batch is padding; its `group_by_length` looks at source lengths only, and it
has nothing like fairseq's `--max-tokens` (transformers #10512, #34406). Here:

- `TokenBudgetBatchSampler` cuts batches so that each costs at most `max_tokens` padded tokens,
  source and target together: `len(batch) * (longest source + longest target)`, the size of the
  encoder input plus the decoder input in the padded tensors; `batching.cut_batches` cuts by that
  cost. Short examples share large batches, long ones small batches. It never drops an example
  (fairseq's `batch_by_size` does, its issues #5036, #5351): one longer than the budget gets a
  batch of its own.
- `LengthSortedSampler` orders evaluation and prediction longest first, so each generate() call
  pads little; `in_input_order` puts the predictions back in the order of the dataset.

Index logic over lengths only: the Trainer hooks that build them from a dataset are in trainer.py.
"""

from __future__ import annotations

import functools
import heapq
import logging
from collections.abc import Iterator, Sequence

import numpy as np

from ..batching import cut_batches

logger = logging.getLogger("hf_encdec.sampling")

# Batches' worth of examples sorted together: larger windows pad less, smaller ones mix lengths more.
# Measured by scripts/bench_train.py (8000 Multi30k pairs, 5% long, the same target tokens for each):
# windows of 10 padded 15% but ended 0.13 above the Trainer's validation loss (homogeneous batches
# learn less a step); windows of 3 pad 27% (the Trainer's random batches 82%), end 0.09 below it
# and are still 4.1x faster.
WINDOW_BATCHES = 3


def round_up(length: int, multiple: int) -> int:
    return -(-length // multiple) * multiple


def batch_cost(size: int, longest_source: int, longest_target: int, pad_multiple: int = 1) -> int:
    """Padded tokens of a batch: the encoder input plus the decoder input, as the collator pads them."""
    return size * (round_up(longest_source, pad_multiple) + round_up(longest_target, pad_multiple))


class TokenBudgetBatchSampler:
    """Batches of at most `max_tokens` padded source + target tokens, every example once per epoch.

    The plan, drawn once from `seed`: shuffle, sort windows of about `WINDOW_BATCHES` batches by
    length, cut each sorted window greedily at the budget. Then the number of batches is made a
    multiple of `num_replicas * accumulation_steps` by halving the largest batches (never by
    dropping or repeating an example), so every process gets the same number of batches and every
    optimizer step the same number of micro-batches (with too few examples for that, a multiple of
    `num_replicas`; the Trainer then ends the epoch with a shorter accumulation).

    Each epoch (`set_epoch`) re-deals examples among the planned slots of the same (source, target)
    length, which changes who shares a batch without changing any batch's cost, and shuffles the
    batch order; both from (seed, epoch) alone. The number of batches is therefore the same every
    epoch and the k-th batch of an epoch is known in advance: the Trainer's step counting and its
    resume (which skips the batches already seen in the epoch) depend on both.

    The processes all compute the same batches; accelerate hands process r the batches r, r+n, ...
    The one exception to "every example exactly once": with fewer examples than processes, some
    batches are repeated, since a process without a batch would stall the others.
    """

    def __init__(self, source_lengths: Sequence[int], target_lengths: Sequence[int], max_tokens: int, *,
                 seed: int = 0, num_replicas: int = 1, accumulation_steps: int = 1, pad_multiple: int = 1):
        if max_tokens <= 0:
            raise ValueError(f"max_tokens must be positive, got {max_tokens}")
        self.source_lengths = np.asarray(source_lengths, dtype=np.int64)
        self.target_lengths = np.asarray(target_lengths, dtype=np.int64)
        if len(self.source_lengths) != len(self.target_lengths):
            raise ValueError("source_lengths and target_lengths differ in length")
        self.max_tokens = max_tokens
        self.seed = seed
        self.pad_multiple = pad_multiple
        self.epoch = 0
        batches = self._cut(np.random.default_rng([seed, 0, 0]))
        for multiple in (num_replicas * accumulation_steps, num_replicas):
            if round_up(len(batches), multiple) <= len(self.source_lengths):  # reachable by halving
                batches = split_to_multiple(batches, multiple)
                break
        self.plan = repeat_to_multiple(batches, num_replicas)
        self.over_budget = sum(len(b) == 1 and self._cost(b) > max_tokens for b in self.plan)
        if self.over_budget:
            logger.warning("%d examples alone cost more than max_tokens=%d padded tokens; each gets a batch of its "
                           "own (raise max_tokens if they run out of memory)", self.over_budget, max_tokens)

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.plan)

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.epoch_batches(self.epoch))

    def epoch_batches(self, epoch: int) -> list[list[int]]:
        rng = np.random.default_rng([self.seed, 1, epoch])
        sizes = [len(b) for b in self.plan]
        slots = np.concatenate([np.asarray(b, dtype=np.int64) for b in self.plan])
        # Every slot gets a random example of its own (source, target) lengths: sort the slots by length
        # class, the same examples by class and then at random, and match the two orders.
        classes = self.source_lengths[slots] * (int(self.target_lengths.max()) + 1) + self.target_lengths[slots]
        by_class = np.argsort(classes, kind="stable")
        shuffled = np.lexsort((rng.random(len(slots)), classes))
        dealt = np.empty_like(slots)
        dealt[by_class] = slots[shuffled]
        batches = np.split(dealt, np.cumsum(sizes)[:-1])
        return [batches[i].tolist() for i in rng.permutation(len(batches))]

    def padding_fraction(self) -> float:
        """Share of the padded batch tokens that are padding, over one epoch."""
        real = int(self.source_lengths.sum() + self.target_lengths.sum())
        padded = sum(self._cost(b) for b in self.plan)
        return 1 - real / padded if padded else 0.0

    def _cost(self, batch: Sequence[int]) -> int:
        return batch_cost(len(batch), int(self.source_lengths[batch].max()), int(self.target_lengths[batch].max()),
                          self.pad_multiple)

    def _cut(self, rng: np.random.Generator) -> list[list[int]]:
        count = len(self.source_lengths)
        mean_cost = max(1.0, float((self.source_lengths + self.target_lengths).mean())) if count else 1.0
        window = max(1, int(WINDOW_BATCHES * self.max_tokens / mean_cost))
        order = rng.permutation(count)
        lengths = [self.source_lengths.tolist(), self.target_lengths.tolist()]
        cost = functools.partial(batch_cost, pad_multiple=self.pad_multiple)
        batches: list[list[int]] = []
        for start in range(0, count, window):
            part = order[start:start + window]
            source, target = self.source_lengths[part], self.target_lengths[part]
            # Longest first by the longer side, then by total: of the orders tried on Multi30k, the least padding.
            part = part[np.lexsort((-(source + target), -np.maximum(source, target)))]
            batches.extend(cut_batches(part.tolist(), lengths, cost, max_cost=self.max_tokens))
        return batches


def split_to_multiple(batches: list[list[int]], multiple: int) -> list[list[int]]:
    """Halve the largest batches until their number is a multiple of `multiple` (or each holds one example).

    Halving never raises a batch's cost, and its halves keep lengths alike (a batch is cut from a
    sorted window).
    """
    if multiple <= 1 or len(batches) % multiple == 0:
        return batches
    heap = [(-len(b), i, b) for i, b in enumerate(batches)]
    heapq.heapify(heap)
    next_id = len(batches)
    while len(heap) % multiple and -heap[0][0] > 1:
        _, _, largest = heapq.heappop(heap)
        half = len(largest) // 2
        for piece in (largest[:half], largest[half:]):
            heapq.heappush(heap, (-len(piece), next_id, piece))
            next_id += 1
    return [b for _, _, b in sorted(heap, key=lambda item: item[1])]


def repeat_to_multiple(batches: list[list[int]], multiple: int) -> list[list[int]]:
    """Fewer examples than processes: repeat batches, since every process needs one."""
    missing = -len(batches) % multiple
    if missing:
        logger.warning("%d training examples for %d processes: %d batches are repeated each epoch",
                       sum(map(len, batches)), multiple, missing)
    return batches + [batches[i % len(batches)] for i in range(missing)] if batches else batches


class LengthSortedSampler:
    """Dataset indices, longest (source + target) first; `order[k]` is the dataset row of position k."""

    def __init__(self, source_lengths: Sequence[int], target_lengths: Sequence[int]):
        source = np.asarray(source_lengths, dtype=np.int64)
        target = np.asarray(target_lengths, dtype=np.int64)
        # Stable: rows of equal length keep their dataset order.
        self.order = np.lexsort((np.arange(len(source)), -source, -(source + target)))

    def __len__(self) -> int:
        return len(self.order)

    def __iter__(self) -> Iterator[int]:
        return iter(self.order.tolist())


def in_input_order(rows, order: np.ndarray):
    """Rows produced in `order` (an array, or a tuple/list of arrays) put back in dataset order."""
    if rows is None:
        return None
    if isinstance(rows, (tuple, list)):
        return type(rows)(in_input_order(part, order) for part in rows)
    if len(rows) != len(order):
        raise ValueError(f"{len(rows)} prediction rows for {len(order)} examples: cannot restore their order")
    restored = np.empty_like(rows)
    restored[order] = rows
    return restored


def expected_padding(strategy: str, source_lengths: Sequence[int], target_lengths: Sequence[int], *,
                     batch_size: int, max_tokens: int | None = None, seed: int = 0, pad_multiple: int = 1,
                     pad_to: tuple[int, int] | None = None) -> float | None:
    """Share of padding in one epoch of training batches as `strategy` would cut them (None: not estimated).

    `pad_to` (max source, max target length) is pad_to_max_length: every batch has that shape.
    """
    source = np.asarray(source_lengths, dtype=np.int64)
    target = np.asarray(target_lengths, dtype=np.int64)
    real = int(source.sum() + target.sum())
    if not real:
        return None
    if pad_to is not None:
        return 1 - real / (len(source) * (pad_to[0] + pad_to[1]))
    if strategy == "token_budget" and max_tokens:
        return TokenBudgetBatchSampler(source, target, max_tokens, seed=seed, pad_multiple=pad_multiple) \
            .padding_fraction()
    rng = np.random.default_rng(seed)
    if strategy == "random":
        order = rng.permutation(len(source))
    elif strategy == "sequential":
        order = np.arange(len(source))
    elif strategy == "group_by_length":
        import torch
        from transformers.trainer_pt_utils import get_length_grouped_indices

        generator = torch.Generator().manual_seed(seed)
        order = np.asarray(get_length_grouped_indices(np.maximum(source, target).tolist(), batch_size,
                                                      generator=generator))
    else:
        return None
    padded = sum(batch_cost(len(b), int(source[b].max()), int(target[b].max()), pad_multiple)
                 for b in np.split(order, range(batch_size, len(order), batch_size)))
    return 1 - real / padded


def batching_report(strategy: str, source_lengths: Sequence[int], target_lengths: Sequence[int], *,
                    batch_size: int, max_tokens: int | None, seed: int, pad_multiple: int = 1,
                    pad_to: tuple[int, int] | None = None) -> str:
    """One line: how training batches are cut and the padding to expect, next to random batches'."""
    common = {"batch_size": batch_size, "seed": seed, "pad_multiple": pad_multiple}
    padding = expected_padding(strategy, source_lengths, target_lengths, max_tokens=max_tokens, pad_to=pad_to,
                               **common)
    how = (f"token_budget, max_tokens={max_tokens}" if strategy == "token_budget" else
           f"{'pad_to_max_length' if pad_to else strategy}, {batch_size} examples")
    line = f"train batches ({how}): " + ("padding not estimated" if padding is None else
                                          f"{100 * padding:.1f}% of batch tokens are padding")
    if strategy != "random" or pad_to:
        random = expected_padding("random", source_lengths, target_lengths, **common)
        line += "" if random is None else f" (random batches of {batch_size}: {100 * random:.1f}%)"
    return line
