"""Launchers and studies over the library: they produce rows, `report/` renders them.

    main.py            python -m experiments.main: one training run
    sweep/             python -m experiments.sweep: a grid of runs, resumable, sharded
    configs/           ml_collections configs (one run, sweeps, the reproduction's modes)
    quant_study.py     post-training quantization, LoRA vs QLoRA on trained fp32 models
    precision_probe.py the bits trained models need, per region
    recipe_search.py   the recipe search's table
    reproduce/         python -m experiments.reproduce: the main job and its REPORT.md
    report/            renderers: tables and plots from rows
"""

__all__: list[str] = []
