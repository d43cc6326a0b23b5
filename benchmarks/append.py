"""An append run against a full run (issue 15): the real EGMS burst cut in two deliveries that
share six months of dates (tests/deliveries.py), the first ingested as a release, the second
appended (ingest --mode append), against ingesting the whole burst as a release, in one Spark
session, the same lake. Prints the times (best of --repeat, after a warm-up ingest), the ratio,
and checks that the appended dataset holds the whole burst's series (every pixel in both
deliveries, value for value).

    .venv/bin/python benchmarks/append.py --repeat 3
"""
from __future__ import annotations

import argparse
import logging
import sys
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from deliveries import write_deliveries  # noqa: E402

log = logging.getLogger("benchmarks.append")
EGMS_ZIP = ROOT.parent / "shared" / "data" / "egms" / "EGMS_L2b_022_0845_IW2_VV_2020_2024_1.zip"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    log.setLevel(logging.INFO)
    from insarlake.config import load_config
    from insarlake.ingest.stage import run_ingest
    from insarlake.lake import Run, read_table
    from insarlake.spark import get_session

    work = Path(tempfile.mkdtemp(prefix="insarlake-append-"))
    with zipfile.ZipFile(EGMS_ZIP) as archive:
        csv = archive.read(EGMS_ZIP.stem + ".csv")
    n = sum(1 for _ in csv.splitlines()) - 1
    cut = write_deliveries(work / "input", csv, None, slice(0, n // 50), slice(n // 50, n // 20),
                           slice(n // 20, n // 20 + n // 100), slice(n // 10, n // 10 + n // 100))
    config = load_config(overrides=[f"lake.path={work / 'lake'}", "spark.shuffle_partitions=8"])
    spark = get_session(config)

    def ingest(folder: str, dataset: str, mode: str):
        t0 = time.perf_counter()
        result = run_ingest(spark, config, str(cut["folder"] / folder), dataset, Run("ingest", config), mode=mode)
        return time.perf_counter() - t0, result

    ingest("whole", "warmup", "release")
    times = {"release of the first delivery": [], "append of the second": [], "release of the whole burst": []}
    for i in range(args.repeat):
        times["release of the first delivery"].append(ingest("first", f"appended{i}", "release")[0])
        seconds, appended = ingest("second", f"appended{i}", "append")
        times["append of the second"].append(seconds)
        seconds, whole = ingest("whole", f"whole{i}", "release")
        times["release of the whole burst"].append(seconds)
    # the appended dataset against the whole burst, pixel by pixel
    got = read_table(spark, config, "pixels", ["appended0"]).select("pixel_id", "disp").toPandas().set_index("pixel_id")
    frame = cut["whole"].set_index("pid")
    index = frame.index
    skipped = set(index[: n // 20 + n // 100][n // 50:])          # gone (not measured again) and off (quarantined)
    both = [p for p in index[n // 50:] if p not in skipped and p in got.index]
    want = frame.loc[both, cut["epochs"]].to_numpy(np.float32)
    have = np.stack([np.asarray(got.loc[p, "disp"], dtype=np.float32) for p in both])
    equal = bool(np.array_equal(have, want, equal_nan=True))

    print(f"EGMS burst: {n:,} points, {len(cut['epochs'])} epochs; second delivery: {appended.input_rows:,} rows "
          f"({appended.updated:,} updated, {appended.added:,} added, {appended.quarantined:,} quarantined)")
    print("| ingest | seconds (best of %d) |" % args.repeat)
    print("|---|---|")
    for name, values in times.items():
        print(f"| {name} | {min(values):.1f} |")
    ratio = min(times["append of the second"]) / min(times["release of the whole burst"])
    print(f"append / whole release: {ratio:.2f}; appended series equal to the whole burst's for "
          f"{len(both):,} pixels: {'yes' if equal else 'NO'}")
    return 0 if equal and whole.pixels == n else 1


if __name__ == "__main__":
    sys.exit(main())
