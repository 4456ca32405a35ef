"""Cut examples into batches by what a batch costs (fairseq's `batch_by_size`), never dropping one.

A batch of padded sequences costs about `len(batch) * longest`, so sorting by length and
cutting when that cost would pass a budget gives short inputs large batches and long inputs
small ones: the same memory, far less padding. `cut_batches` is the one cutter: its caller
says what a batch costs (generation: source tokens, `batch_by_size`; training: source plus
target tokens as the collator pads them, samplers.TokenBudgetBatchSampler). Unlike fairseq
(its issues #5036, #5351) no example is ever dropped: one over the budget gets a batch of its own.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence


def cut_batches(order: Iterable[int], lengths: Sequence[Sequence[int]], cost: Callable[..., int], *,
                max_cost: int | None = None, max_size: int | None = None, multiple: int = 1) -> list[list[int]]:
    """Index lists of consecutive batches of `order`, each within `max_cost` and `max_size`.

    `lengths` holds one column per padded dimension (source, target ...); a batch costs
    `cost(size, *longest)`, its size and the longest of each column in it. A batch closes when one
    more example would pass either limit; with `multiple`, it keeps a multiple of that many
    examples (tensor-core friendly shapes) and the rest starts the next batch.
    """
    batches: list[list[int]] = []
    batch: list[int] = []
    longest = [0] * len(lengths)
    for index in order:
        size = len(batch) + 1
        widest = [max(value, column[index]) for value, column in zip(longest, lengths)]
        full = (max_size is not None and size > max_size) or (max_cost is not None and cost(size, *widest) > max_cost)
        if batch and full:
            keep = len(batch) - len(batch) % multiple if len(batch) > multiple else len(batch)
            batches.append(batch[:keep])
            batch = batch[keep:]
            longest = [max((column[i] for i in batch), default=0) for column in lengths]
        batch.append(index)
        longest = [max(value, column[index]) for value, column in zip(longest, lengths)]
    if batch:
        batches.append(batch)
    return batches


def padded_tokens(size: int, longest: int) -> int:
    return size * longest


def batch_by_size(
    lengths: Sequence[int], *, max_tokens: int | None = None, max_sentences: int | None = None,
    required_batch_size_multiple: int = 1,
) -> list[list[int]]:
    """Index lists of batches, longest examples first, each within `max_tokens` padded tokens.

    Longest first: an out-of-memory error shows on the first batch rather than after an hour.
    Ties keep input order, so the same lengths always give the same batches (resumable runs
    rely on that to reproduce their outputs).
    """
    if max_tokens is None and max_sentences is None:
        raise ValueError("give max_tokens or max_sentences")
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    return cut_batches(order, [lengths], padded_tokens, max_cost=max_tokens, max_size=max_sentences,
                       multiple=max(1, required_batch_size_multiple))
