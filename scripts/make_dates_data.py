"""Generate the quickstart dataset: dates in many human formats -> ISO `YYYY-MM-DD`.

    python scripts/make_dates_data.py [--out tasks/data/dates] [--seed 0]

Writes train.jsonl (12000 rows), validation.jsonl (500) and test.jsonl (500), each row
{"source": "the 3rd of March 2021", "target": "2021-03-03"}. The task is small enough for
a tiny model trained from scratch on a CPU, and exact match tells at a glance whether it
learned. The output is deterministic for a seed (stdlib `random.Random`, English names
spelled out here rather than taken from the locale), and no source string appears in more
than one split. tests/test_dates_data.py checks that the shipped files regenerate exactly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
from collections.abc import Callable
from pathlib import Path

SPLITS = {"test": 500, "validation": 500, "train": 12000}  # generated in this order
FIRST_DAY = dt.date(1950, 1, 1)
LAST_DAY = dt.date(2049, 12, 31)

MONTHS = [
    "January", "February", "March", "April", "May", "June",
    "July", "August", "September", "October", "November", "December",
]  # fmt: skip
WEEKDAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]


def ordinal(n: int) -> str:
    """1 -> 1st, 2 -> 2nd, 11 -> 11th, 23 -> 23rd."""
    suffix = "th" if 11 <= n % 100 <= 13 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def month(d: dt.date) -> str:
    return MONTHS[d.month - 1]


def mon(d: dt.date) -> str:
    return MONTHS[d.month - 1][:3]


def us_slash(d: dt.date) -> str | None:
    # Month first is only unambiguous when the day cannot be a month.
    return f"{d.month}/{d.day}/{d.year}" if d.day > 12 else None


def two_digit_year(d: dt.date) -> str:
    # Years 1950-2049 map one-to-one onto 50-99, 00-49 (the pivot the targets assume).
    return f"{d.day:02d}-{mon(d)}-{d.year % 100:02d}"


# Each format turns a date into a source string, or None when it would be ambiguous.
FORMATS: list[Callable[[dt.date], str | None]] = [
    lambda d: f"{d.day} {month(d)} {d.year}",  # 3 March 2021
    lambda d: f"{month(d)} {d.day}, {d.year}",  # March 3, 2021
    lambda d: f"{mon(d)} {d.day} {d.year}",  # Mar 3 2021
    lambda d: f"{d.day} {mon(d)} {d.year}",  # 3 Mar 2021
    lambda d: f"{mon(d)}. {d.day}, {d.year}",  # Mar. 3, 2021
    us_slash,  # 3/14/2021
    lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",  # 14.03.2021
    lambda d: f"{d.year}/{d.month:02d}/{d.day:02d}",  # 2021/03/14
    lambda d: f"{WEEKDAYS[d.weekday()]}, {month(d)} {d.day}, {d.year}",  # Wednesday, March 3, 2021
    lambda d: f"the {ordinal(d.day)} of {month(d)} {d.year}",  # the 3rd of March 2021
    lambda d: f"{ordinal(d.day)} {month(d)} {d.year}",  # 3rd March 2021
    two_digit_year,  # 03-Mar-21
]


def random_date(rng: random.Random) -> dt.date:
    days = (LAST_DAY - FIRST_DAY).days
    return FIRST_DAY + dt.timedelta(days=rng.randint(0, days))


def random_case(rng: random.Random, text: str) -> str:
    # Mostly as written; some all-lowercase or all-caps so the model must not key on case.
    roll = rng.random()
    if roll < 0.15:
        return text.lower()
    if roll < 0.25:
        return text.upper()
    return text


def generate(seed: int) -> dict[str, list[dict[str, str]]]:
    """Rows for every split; sources are unique across the whole dataset."""
    rng = random.Random(seed)
    seen: set[str] = set()
    splits: dict[str, list[dict[str, str]]] = {}
    for split, size in SPLITS.items():
        rows = splits[split] = []
        while len(rows) < size:
            date = random_date(rng)
            source = rng.choice(FORMATS)(date)
            if source is None:
                continue
            source = random_case(rng, source)
            if source in seen:
                continue
            seen.add(source)
            rows.append({"source": source, "target": date.isoformat()})
    return splits


def write_jsonl(path: Path, rows: list[dict[str, str]]) -> None:
    # Fixed encoding and line endings so the files are byte-identical on every platform.
    with path.open("w", encoding="utf-8", newline="\n") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("tasks/data/dates"))
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)

    args.out.mkdir(parents=True, exist_ok=True)
    for split, rows in generate(args.seed).items():
        path = args.out / f"{split}.jsonl"
        write_jsonl(path, rows)
        print(f"{split}: {len(rows)} rows -> {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
