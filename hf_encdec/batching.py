"""Cut examples into batches by a token budget (fairseq's `batch_by_size`), never dropping one.

A batch of padded sequences costs about `len(batch) * longest`, so sorting by length and
cutting when that product would pass `max_tokens` gives short inputs large batches and long
inputs small ones: the same memory, far less padding. Unlike fairseq (its issues #5036,
#5351) no example is ever dropped: one longer than the budget gets a batch of its own.
"""

from __future__ import annotations

from collections.abc import Sequence


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
    multiple = max(1, required_batch_size_multiple)
    batches: list[list[int]] = []
    batch: list[int] = []
    longest = 0
    for index in order:
        size = len(batch) + 1
        widest = max(longest, lengths[index])
        full = (max_sentences is not None and size > max_sentences) or (
            max_tokens is not None and size * widest > max_tokens)
        if batch and full:
            # Keep a multiple of `multiple` (tensor-core friendly shapes); the rest starts the next batch.
            keep = len(batch) - len(batch) % multiple if len(batch) > multiple else len(batch)
            batches.append(batch[:keep])
            batch = batch[keep:]
            longest = max((lengths[i] for i in batch), default=0)
        batch.append(index)
        longest = max(longest, lengths[index])
    if batch:
        batches.append(batch)
    return batches
