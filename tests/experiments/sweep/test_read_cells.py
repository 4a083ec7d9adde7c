"""A committed cells.csv read back into rows (`results.read_cells`): numbers typed, readings of
an earlier rule marked, and a write-read round trip that keeps them."""

import csv

from arith_precision.common import atomic
from experiments.sweep import results

OLD_COLUMNS = ("task", "base", "n", "k", "l", "precision", "accumulation", "layers", "seed",
               "status", "exact_match", "digit_accuracy", "diverged_at_step", "steps",
               "steps_to_converge", "convergence", "validation_last", "wall_time_s", "name",
               "error")


def _old_csv(path):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(OLD_COLUMNS)
        w.writerow(["mul", 2, 4, 2, 0, "fp32", "once", 2, 0, "completed", 0.5, 0.9, "", 4000, "",
                    "flat", 0.5, 10.0, "mul_b2_n4_fp32_L2_s0", ""])
        w.writerow(["add", 2, 8, 2, 0, "fp32", "once", 2, 1, "completed", 1.0, 1.0, "", 2750,
                    2750, "converged", 1.0, 5.0, "add_b2_n8_fp32_L2_s1", ""])


def test_old_rows_are_typed_and_their_readings_marked(tmp_path):
    path = str(tmp_path / "cells.csv")
    _old_csv(path)
    rows = results.read_cells(path)
    assert rows[0]["n"] == 4 and rows[0]["exact_match"] == 0.5 and rows[0]["steps"] == 4000
    assert rows[0]["exact_match_iid"] is None and rows[0]["steps_to_converge"] is None
    assert rows[0]["convergence"] == "flat (earlier rule)"
    assert rows[1]["convergence"] == "converged@2750"


def test_written_rows_read_back_the_same(tmp_path):
    path = str(tmp_path / "cells.csv")
    _old_csv(path)
    rows = results.read_cells(path)
    again = str(tmp_path / "again.csv")
    atomic.write_csv(again, results.CELL_COLUMNS, rows)
    back = results.read_cells(again)
    assert [r["convergence"] for r in back] == ["flat (earlier rule)", "converged@2750"]
    assert [{k: r[k] for k in results.CELL_COLUMNS} for r in back] == \
        [{k: r[k] for k in results.CELL_COLUMNS} for r in rows]
