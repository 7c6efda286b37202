"""Write the Taylor (2003) half-hourly electricity demand as a wide CSV, a held-out check of the defaults.

    python benchmarks/make_taylor_csv.py --out runs/data/taylor.csv
    python benchmarks/crps_sum.py --csv runs/data/taylor.csv --prediction-length 48 --sde vsuld snaive rw \\
        --seeds 0 1 2 3 4 --jobs 2 --out runs/taylor

The series (England and Wales, Monday 5 June to Sunday 27 August 2000, 4032 half-hours, megawatts; Taylor,
"Short-term electricity demand forecasting using double seasonal exponential smoothing", JORS 2003) is the ``taylor``
data set of R's forecast package, which the PyPI package pmdarima carries inside its source
(``pmdarima/datasets/taylor.py``). This script downloads that wheel with pip (no install, no import: the numbers are
read from the file's text) unless ``--wheel`` names one, and writes ``date,demand``. Nothing of it is committed.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

import numpy as np
import pandas as pd

MEMBER = "pmdarima/datasets/taylor.py"
LENGTH = 4032


def taylor_values(wheel: Path) -> np.ndarray:
    """The 4032 demand values from ``taylor.py`` inside a pmdarima wheel."""
    text = zipfile.ZipFile(wheel).read(MEMBER).decode()
    body = text[text.index("np.array(["):text.index("])", text.index("np.array(["))]
    values = np.array([float(v) for v in re.findall(r"\d+(?:\.\d+)?", body)])
    if values.shape != (LENGTH,):
        raise ValueError(f"{wheel}: expected {LENGTH} values in {MEMBER}, found {values.size}")
    return values


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="CSV to write")
    p.add_argument("--wheel", help="a downloaded pmdarima wheel (default: pip downloads pmdarima==2.1.1)")
    args = p.parse_args(argv)
    with tempfile.TemporaryDirectory() as tmp:
        wheel = Path(args.wheel) if args.wheel else None
        if wheel is None:
            subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "pmdarima==2.1.1", "-d", tmp],
                           check=True)
            wheel = next(Path(tmp).glob("pmdarima-*.whl"))
        values = taylor_values(wheel)
    dates = pd.date_range("2000-06-05 00:00", periods=LENGTH, freq="30min")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"date": dates.strftime("%Y-%m-%d %H:%M"), "demand": values}).to_csv(out, index=False)
    print(f"wrote {out}: {LENGTH} half-hours, {dates[0]} to {dates[-1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
