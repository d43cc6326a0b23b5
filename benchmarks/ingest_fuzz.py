"""Count of the fuzzed ingest cases (issue 16): many damaged copies of the real EGMS burst through
ingest's file-level path without Spark (tests/ingest_fuzz.py: the header and parse functions the
Spark tasks call, and the Arrow conversion mapInPandas makes), with every distinct outcome.

Each case ends as exit 0 with input rows = pixels + quarantined, or exit 2 with one line naming
the file; anything else (an exception, rows that do not reconcile) is counted as a failure and
printed. The same mutations run through the real job on Spark in tests/test_ingest_fuzz.py.

    .venv/bin/python benchmarks/ingest_fuzz.py --cases 3000 --seed 0
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import traceback
import zipfile
from collections import Counter
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from conftest import EGMS_CSV_MEMBER, EGMS_ZIP  # noqa: E402
from ingest_fuzz import (MUTATIONS, check_outcome, damaged, dry_ingest, sample_burst,  # noqa: E402
                         with_text_cells, write_case)

log = logging.getLogger("benchmarks.ingest_fuzz")
_ALPHABET = list(",;\"'\n\r\t 0123456789.eE+-naifNAIF\x00\ufeff\u00e9\u2028x")


def random_case(burst: bytes, rng: np.random.Generator) -> tuple[str, dict[str, bytes]]:
    """(family, files): a named mutation, random byte edits (of the CSV or its ZIP), or random text
    in data cells, in equal shares."""
    family = rng.integers(3)
    if family == 0:
        name = sorted(MUTATIONS)[int(rng.integers(len(MUTATIONS)))]
        return name, MUTATIONS[name](burst, rng)
    if family == 1:
        edits = [(float(rng.random()), int(rng.integers(0, 13)), bytes(rng.integers(0, 256, int(rng.integers(0, 13)),
                                                                        dtype=np.uint8)))
                 for _ in range(int(rng.integers(1, 7)))]
        as_zip = bool(rng.integers(2))
        return f"byte edits ({'zip' if as_zip else 'csv'})", damaged(burst, edits, as_zip)
    texts = ["".join(rng.choice(_ALPHABET, int(rng.integers(0, 13)))) for _ in range(int(rng.integers(1, 9)))]
    return "text in cells", with_text_cells(burst, texts, rng)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cases", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    with zipfile.ZipFile(EGMS_ZIP) as zf:
        burst = sample_burst(zf.read(EGMS_CSV_MEMBER))
    rng = np.random.default_rng(args.seed)
    outcomes: Counter = Counter()
    families: Counter = Counter()
    failures = []
    t0 = time.perf_counter()
    for case in range(args.cases):
        family, files = random_case(burst, rng)
        families[family] += 1
        with tempfile.TemporaryDirectory() as tmp:
            folder = write_case(Path(tmp) / "input", files)
            try:
                outcome = dry_ingest(folder)
                check_outcome(outcome, folder)
                outcomes[outcome.kind] += 1
            except Exception:
                failures.append((case, family, traceback.format_exc(limit=3)))
                outcomes["FAILED"] += 1
    seconds = time.perf_counter() - t0
    log.info("%d cases in %.0f s (seed %d): %d families, %d failures", args.cases, seconds, args.seed,
             len(families), len(failures))
    log.info("\n| outcome | cases |\n|---|---|")
    for kind, n in outcomes.most_common():
        log.info("| %s | %d |", kind, n)
    for case, family, text in failures[:10]:
        log.info("case %d (%s) failed:\n%s", case, family, text)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
