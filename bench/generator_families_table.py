"""The generator-family table of BENCHMARKS.md: ``python bench/generator_families_table.py RUN``.

RUN: a ``phenogen demo --out RUN`` run whose ``RUN/families/`` ``bench/generator_families.sh`` filled (and, if
wanted, a ``phenogen demo --config thesis --out RUN/families/thesis`` on the same clade). Prints the table
(:func:`phenogen.report.families.markdown_table`: trait RMSE ± SE per split with the best in bold, held-out
retrieval, FID/KID, training minutes, sampling images/s, diversity; the baselines below) and the best
generator per split — the same rows ``phenogen report --run RUN`` shows.
"""

from __future__ import annotations

import sys

from phenogen.report.families import collect, markdown_table, verdicts

if __name__ == "__main__":
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    rows, notes = collect(sys.argv[1])
    print(markdown_table(rows))
    print()
    print("\n".join(f"- {line}" for line in verdicts(rows) + notes))
