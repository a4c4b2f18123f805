"""MAPSSWE between two cell records on one split, directly (system A against system B).

The reports test each system against the 32-bit reference and, in the ablation section,
against uniform of the same suite; this compares any two records, e.g. across suites:

    python scripts/compare_records.py SPLIT A.json B.json
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from mpqbench.bench.stats import mapsswe


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("split")
    parser.add_argument("a", type=Path)
    parser.add_argument("b", type=Path)
    args = parser.parse_args()
    records = [json.loads(p.read_text()) for p in (args.a, args.b)]
    for path, record in zip((args.a, args.b), records, strict=True):
        if args.split not in record.get("splits", {}):
            raise ValueError(f"{path}: no split {args.split!r} in the record")
    ops = [{u["id"]: u["ops"] for u in r["splits"][args.split]["utterances"]} for r in records]
    test = mapsswe(ops[0], ops[1])
    wer = [100 * r["splits"][args.split]["wer"] for r in records]
    print(f"{args.split}: A {wer[0]:.2f}% vs B {wer[1]:.2f}%  z={test.z:.3f} "
          f"p={test.p_value:.3g} better={test.better}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
