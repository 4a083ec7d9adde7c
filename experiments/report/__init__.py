"""The report layer's renderers: rows in, markdown, CSV and plots out; they compute nothing.

The computing modules of `experiments/` (the sweep, the reproduction's phases, the quantization
study, the precision probe) produce rows, lists of dicts; the modules here render them:

    plots     the one "metric against n" panel helper, the panel grid, learning curves and the
              atomic savefig
    quant     the quantization study's CSV, tables and plots
    probe     the precision probe's JSON, tables and plot
    frontier  the frontier phase's table and plot (the plot is `constructions.frontier.report`'s)
    training  the training verdicts' paragraphs and the table of the training arms per seed

A sweep directory's own files are rendered by `experiments.sweep.render`, REPORT.md by
`experiments.reproduce.document`. Atomic writes (`arith_precision.common.atomic`) and the one
markdown-table helper (`arith_precision.common.markdown`) are the library's.

This file imports nothing so that the modules of the package can import each other without a
circle through it.
"""

__all__: list[str] = []  # the modules are the face: plots, quant, probe, frontier, training
