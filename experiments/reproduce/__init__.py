"""The main job: reproduce the paper's three claims in one command and write DIR/REPORT.md.

    python -m experiments.reproduce --workdir=DIR --quick     # (the modes: pipeline.py)
    from experiments import reproduce; reproduce.reproduce("runs/repro", "quick")

    pipeline.py   the phases in order (frontier, sweep, quant, probe, report), resumable, and
                  the command line
    frontier.py   the constructions' frontier phase (rows cached per task)
    progress.py   the whole-job progress line with an ETA, every 30 s
    claims.py     the paragraphs: what each claim's numbers show, by stated rules
    document.py   REPORT.md from the phases' rows (tables and plots by experiments/report/)
"""

from experiments.reproduce.pipeline import MODES, PHASES, SETTINGS, main, reproduce

__all__ = ["MODES", "PHASES", "SETTINGS", "main", "reproduce"]
