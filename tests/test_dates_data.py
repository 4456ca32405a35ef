"""The shipped quickstart data regenerates exactly, and every target is what its source says.

The parsers below are written independently of the generator (strptime, not its format
functions), so a generator bug cannot hide behind itself.
"""

import datetime as dt
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tasks" / "data" / "dates"
SCRIPT = ROOT / "scripts" / "make_dates_data.py"
SIZES = {"train": 12000, "validation": 500, "test": 500}

# strptime formats the generator's sources should match (strptime ignores case).
STRPTIME_FORMATS = [
    "%d %B %Y",  # 3 March 2021
    "%B %d, %Y",  # March 3, 2021
    "%b %d %Y",  # Mar 3 2021
    "%d %b %Y",  # 3 Mar 2021
    "%b. %d, %Y",  # Mar. 3, 2021
    "%m/%d/%Y",  # 3/14/2021
    "%d.%m.%Y",  # 14.03.2021
    "%Y/%m/%d",  # 2021/03/14
    "%A, %B %d, %Y",  # Wednesday, March 3, 2021
    "the %d of %B %Y",  # the 3rd of March 2021 (suffix removed first)
]
ORDINAL = re.compile(r"\b(\d{1,2})(st|nd|rd|th)\b", re.IGNORECASE)
TWO_DIGIT_YEAR = re.compile(r"(\d{2})-([A-Za-z]{3})-(\d{2})")


def read_split(directory: Path, split: str) -> list[dict]:
    with (directory / f"{split}.jsonl").open(encoding="utf-8") as f:
        return [json.loads(line) for line in f]


def parse(source: str) -> set[dt.date]:
    """Every date a reader could take `source` to mean, under the formats we know."""
    text = ORDINAL.sub(r"\1", source)
    dates = set()
    for fmt in STRPTIME_FORMATS:
        try:
            parsed = dt.datetime.strptime(text, fmt)
        except ValueError:
            continue
        if "%A" in fmt:
            # strptime does not check that the weekday fits the date; we must.
            assert parsed.strftime("%A").lower() == text.split(",")[0].lower(), source
        dates.add(parsed.date())
    match = TWO_DIGIT_YEAR.fullmatch(text)
    if match:
        # Our pivot: 50-99 -> 19xx, 00-49 -> 20xx (strptime's %y pivots at 69 instead).
        day, month, yy = match.groups()
        year = 1900 + int(yy) if int(yy) >= 50 else 2000 + int(yy)
        dates.add(dt.datetime.strptime(f"{day} {month} {year}", "%d %b %Y").date())
    return dates


@pytest.fixture(scope="module")
def shipped() -> dict[str, list[dict]]:
    return {split: read_split(DATA, split) for split in SIZES}


def test_shipped_files_regenerate_byte_identical(tmp_path):
    subprocess.run(
        [sys.executable, str(SCRIPT), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
    )
    for split in SIZES:
        name = f"{split}.jsonl"
        assert (tmp_path / name).read_bytes() == (DATA / name).read_bytes(), name


def test_split_sizes_and_no_shared_sources(shipped):
    sources = {}
    for split, rows in shipped.items():
        assert len(rows) == SIZES[split]
        assert all(set(row) == {"source", "target"} for row in rows)
        sources[split] = {row["source"] for row in rows}
        assert len(sources[split]) == len(rows), f"duplicate source in {split}"
    assert not sources["train"] & sources["validation"]
    assert not sources["train"] & sources["test"]
    assert not sources["validation"] & sources["test"]


def test_every_target_is_what_its_source_means(shipped):
    for rows in shipped.values():
        for row in rows:
            target = dt.date.fromisoformat(row["target"])
            assert target.isoformat() == row["target"]  # canonical YYYY-MM-DD
            assert 1950 <= target.year <= 2049
            # Exactly one reading, and it is the target: no ambiguous sources shipped.
            assert parse(row["source"]) == {target}, row


def test_formats_and_case_variants_are_varied(shipped):
    sources = [row["source"] for row in shipped["train"]]
    assert any(s.islower() and s[0].isalpha() for s in sources)
    assert any(s.isupper() for s in sources)
    assert any("/" in s and not s[:4].isdigit() for s in sources)  # US month/day/year
    assert any(TWO_DIGIT_YEAR.fullmatch(s) for s in sources)
    assert any(s.lower().startswith("the ") for s in sources)
