"""A file or a Hub dataset becomes a `Split`: pairs picked, rows validated, splits carved, lengths reported.

read_file ──> select_pairs ──> validate_rows ──> Split   (load_file_split / load_hub_split)
carve_validation makes a validation split when the user gave none; length_stats and
format_data_report show how many rows will be truncated (we never truncate silently).
"""

from __future__ import annotations

import logging
import math
import random
from dataclasses import dataclass

from ..errors import ConfigError, DataError
from .columns import cell_text, pick_columns
from .reader import check_languages, read_file

logger = logging.getLogger("hf_encdec.data")

SHOW_EXAMPLES = 5  # how many bad rows a warning or error names


@dataclass
class Split:
    name: str  # "train" | "validation" | "test"
    origin: str  # the file path as given, or "DATASET_NAME[split]"
    sources: list[str]
    targets: list[str]
    lines: list[int]  # 1-based line (files) or row index (JSON array, parquet, Hub) of each row
    dropped: int = 0  # invalid rows removed by validate_rows

    def __len__(self) -> int:
        return len(self.sources)


# ----------------------------------------------------------------------------- columns


def select_pairs(
    name: str, origin: str, columns: list[str], records: list[dict], lines: list[int], *,
    source_column: str | None, target_column: str | None,
    source_lang: str | None, target_lang: str | None,
    candidates: list[tuple[str, str]], require_target: bool = True,
) -> Split:
    """Pick the source and target of every record (missing values stay None for validate_rows)."""
    if _use_translation(columns, records, source_column, target_column, source_lang, target_lang):
        return _translation_pairs(name, origin, records, lines, source_lang, target_lang)
    guesses = ([(source_lang, target_lang)] if source_lang and target_lang else []) + list(candidates)
    src, tgt = pick_columns(origin, columns, source_column=source_column, target_column=target_column,
                            guesses=guesses, require_target=require_target)
    sources = [cell_text(origin, line, src, record.get(src)) for record, line in zip(records, lines)]
    targets = [cell_text(origin, line, tgt, record.get(tgt)) if tgt else None for record, line in zip(records, lines)]
    return Split(name, origin, sources, targets, list(lines))


def _use_translation(columns, records, source_column, target_column, source_lang, target_lang) -> bool:
    """The WMT layout {"translation": {"en": ..., "de": ...}}, unless the given columns exist."""
    if "translation" not in columns or not (source_lang and target_lang):
        return False
    if source_column in columns and target_column in columns:
        return False
    return any(isinstance(record.get("translation"), dict) for record in records)


def _translation_pairs(name, origin, records, lines, source_lang, target_lang) -> Split:
    check_languages(source_lang, target_lang, "each 'translation' would give its source as its target")
    sources, targets = [], []
    for record, line in zip(records, lines):
        pair = record.get("translation")
        if pair is None:  # a missing row: validate_rows reports or drops it
            sources.append(None)
            targets.append(None)
            continue
        if not isinstance(pair, dict):
            raise DataError(f"'translation' is a {type(pair).__name__}, expected an object of languages", path=origin,
                            line=line, column="translation", hint='write {"translation": {"en": ..., "de": ...}}')
        for lang, out in ((source_lang, sources), (target_lang, targets)):
            if lang not in pair:
                present = ", ".join(map(str, pair)) or "none"
                raise DataError(f"has no language '{lang}' (present: {present})", path=origin, line=line,
                                column="translation", hint="set source_lang and target_lang to languages in the data")
            out.append(cell_text(origin, line, f"translation.{lang}", pair[lang]))
    return Split(name, origin, sources, targets, list(lines))


# ----------------------------------------------------------------------------- validation


def validate_rows(
    split_name: str, origin: str, sources: list, targets: list, lines: list[int], *,
    on_invalid: str, require_target: bool = True,
) -> Split:
    """Drop (or fail on) rows whose source or target is missing or blank."""
    if on_invalid not in ("drop", "fail"):
        raise ConfigError(f"invalid value '{on_invalid}', expected 'drop' or 'fail'", key="invalid_rows",
                          hint="set invalid_rows: drop or invalid_rows: fail")
    problems = [_problem(source, target, require_target) for source, target in zip(sources, targets)]
    bad = [i for i, why in enumerate(problems) if why]
    if not bad:
        return Split(split_name, origin, list(sources), list(targets), list(lines))
    examples = ", ".join(f"{origin}:{lines[i]} ({problems[i]})" for i in bad[:SHOW_EXAMPLES])
    first = bad[0]
    if on_invalid == "fail":
        raise DataError(f"{len(bad)} of {len(sources)} rows are invalid: {examples}", path=origin,
                        line=lines[first], hint="fix the rows or set invalid_rows: drop")
    if len(bad) == len(sources):
        raise DataError(f"all {len(sources)} rows are invalid, the first has {problems[first]}", path=origin,
                        line=lines[first], hint="check source_column / target_column and the file's contents")
    logger.warning("%s: dropped %d of %d %s rows with an empty or missing source/target: %s",
                   origin, len(bad), len(sources), split_name, examples)
    keep = [i for i, why in enumerate(problems) if not why]
    return _subset(Split(split_name, origin, sources, targets, lines), split_name, keep, dropped=len(bad))


def _problem(source, target, require_target: bool) -> str | None:
    roles = [("source", source), ("target", target)] if require_target else [("source", source)]
    for role, value in roles:
        if value is None:
            return f"missing {role}"
        if not value.strip():
            return f"empty {role}"
    return None


# ----------------------------------------------------------------------------- splits


def load_file_split(
    name: str, path: str, *, source_column: str | None, target_column: str | None,
    source_lang: str | None, target_lang: str | None, candidates: list[tuple[str, str]],
    on_invalid: str, max_samples: int | None = None, require_target: bool = True,
) -> Split:
    """Read a file, pick columns, validate, then keep the first max_samples valid rows."""
    columns, records, lines = read_file(path, source_lang, target_lang)
    return build_split(name, str(path), columns, records, lines, on_invalid=on_invalid, max_samples=max_samples,
                        require_target=require_target, source_column=source_column, target_column=target_column,
                        source_lang=source_lang, target_lang=target_lang, candidates=candidates)


def load_hub_split(
    name: str, dataset_name: str, dataset_config_name: str | None, split: str, *,
    revision: str | None = None, token: str | bool | None = None, cache_dir: str | None = None,
    source_column: str | None, target_column: str | None,
    source_lang: str | None, target_lang: str | None, candidates: list[tuple[str, str]],
    on_invalid: str, max_samples: int | None = None, require_target: bool = True,
) -> Split:
    """One split of a Hub dataset, or of a local folder / saved dataset that load_dataset accepts."""
    import datasets

    origin = f"{dataset_name}[{split}]"
    try:
        ds = datasets.load_dataset(dataset_name, dataset_config_name, split=split, revision=revision, token=token,
                                   cache_dir=cache_dir)
    except (OSError, ValueError) as e:  # not found, no network, unknown split or config
        reason = " ".join(str(e).split())[:300]
        raise DataError(f"cannot load the dataset ({type(e).__name__}: {reason})", path=origin,
                        hint="check dataset_name, dataset_config_name and the split; offline, point dataset_name "
                             "at a local folder of data files, or use train_file") from e
    if len(ds) == 0:
        raise DataError("split has no rows", path=origin, hint="choose another split or dataset")
    records = ds.to_list()
    return build_split(name, origin, list(ds.column_names), records, list(range(1, len(records) + 1)),
                        on_invalid=on_invalid, max_samples=max_samples, require_target=require_target,
                        source_column=source_column, target_column=target_column,
                        source_lang=source_lang, target_lang=target_lang, candidates=candidates)


def build_split(name, origin, columns, records, lines, *, on_invalid, max_samples, require_target, **pick) -> Split:
    """Records into a Split: pick the columns (`pick`: select_pairs' keys), validate, keep max_samples."""
    pairs = select_pairs(name, origin, columns, records, lines, require_target=require_target, **pick)
    split = validate_rows(name, origin, pairs.sources, pairs.targets, pairs.lines, on_invalid=on_invalid,
                          require_target=require_target)
    if max_samples is not None and len(split) > max_samples:  # after validation: max_samples counts usable rows
        split = _subset(split, name, list(range(max_samples)), split.dropped)
    return split


def carve_validation(train: Split, size: float, seed: int) -> tuple[Split, Split]:
    """Split train into (train, validation) reproducibly: size < 1 is a fraction, else a row count."""
    n, key = len(train), "validation_split_size"
    if n < 2:
        raise DataError(f"the training data has {n} row(s), too few to carve a validation split from",
                        path=train.origin, key=key, hint="add rows or give a validation_file")
    if size <= 0 or (size >= 1 and size != int(size)):
        raise DataError(f"invalid value {size}: use a fraction below 1 or a whole number of rows", key=key,
                        hint="e.g. validation_split_size: 0.05")
    count = max(1, math.ceil(n * size)) if size < 1 else int(size)
    if count >= n:
        raise DataError(f"a validation split of {count} rows leaves no training rows (train has {n})",
                        path=train.origin, key=key, hint="use a smaller validation_split_size or a validation_file")
    order = list(range(n))
    random.Random(seed).shuffle(order)  # a seeded RNG of our own: the same split on every run and machine
    held_out = set(order[:count])
    kept = [i for i in range(n) if i not in held_out]  # both halves keep the file's order
    return _subset(train, train.name, kept, train.dropped), _subset(train, "validation", sorted(held_out), 0)


def _subset(split: Split, name: str, rows: list[int], dropped: int) -> Split:
    return Split(name, split.origin, [split.sources[i] for i in rows], [split.targets[i] for i in rows],
                 [split.lines[i] for i in rows], dropped)


# ----------------------------------------------------------------------------- report


def length_stats(lengths: list[int], max_length: int) -> dict:
    """Nearest-rank percentiles of token lengths, and how many exceed max_length."""
    ordered = sorted(lengths)

    def rank(p: float) -> int:
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)] if ordered else 0

    over = sum(n > max_length for n in ordered)
    return {"p50": rank(50), "p90": rank(90), "p99": rank(99), "max": rank(100), "over_max": over}


def format_data_report(
    splits: dict[str, Split], source_lengths: dict[str, list[int]], target_lengths: dict[str, list[int]],
    max_source_length: int, max_target_length: int, batching: str | None = None,
) -> str:
    """A small table of rows and token lengths per split, a line for each split that will truncate
    rows, and `batching`: how training batches are cut and the padding to expect."""
    table = [f"{'split':<12}{'rows':>8}{'dropped':>9}  {'source p50/p90/p99/max':<24}target p50/p90/p99/max"]
    notes = []
    for name, split in splits.items():
        src = length_stats(source_lengths.get(name, []), max_source_length)
        tgt = length_stats(target_lengths.get(name, []), max_target_length)
        src_text = _quartet(src) if source_lengths.get(name) else "-"
        tgt_text = _quartet(tgt) if target_lengths.get(name) else "-"
        table.append(f"{name:<12}{len(split):>8}{split.dropped:>9}  {src_text:<24}{tgt_text}")
        over = [f"{n} of {len(split)} {what} (longer than {limit})" for n, what, limit in
                ((src["over_max"], "sources", f"max_source_length={max_source_length}"),
                 (tgt["over_max"], "targets", f"max_target_length={max_target_length}")) if n]
        if over:  # a line only where something is cut: a report of zeros hides the one that matters
            notes.append(f"{name}: will truncate {' and '.join(over)}")
    return "\n".join(table + notes + ([batching] if batching else []))


def _quartet(stats: dict) -> str:
    return f"{stats['p50']}/{stats['p90']}/{stats['p99']}/{stats['max']}"

