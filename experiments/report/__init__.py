"""The report layer: everything that turns rows into markdown, CSV, plots and REPORT.md.

The computing modules of `experiments/` (the sweep, the frontier phase, the quantization study,
the precision probe) produce rows, lists of dicts; the modules here render them and nothing else
does:

    plots     the one "metric against n" panel helper, the panel grid and the atomic savefig
    sweep     a sweep directory's cells.csv, results.csv, plots and report.md
    quant     the quantization study's CSV, tables and plots
    probe     the precision probe's JSON, tables and plot
    frontier  the frontier phase's table and plot (the plot is `constructions.frontier_report`'s)
    training  the training verdicts' paragraphs and the table of the training arms per seed
    claims    the paper's claims as structured verdicts (`Verdict`), each paragraph rendered from
              its verdict by a template
    document  REPORT.md, the main job's document

Atomic writes (`arith_precision.common.atomic`) and the one markdown-table helper
(`arith_precision.common.markdown`) are the library's: the training loop and the constructions need
them too, and neither may import `experiments`.

This file imports nothing so that the modules of the package can import each other without a
circle through it.
"""
