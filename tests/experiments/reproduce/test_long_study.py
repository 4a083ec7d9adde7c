"""The long study's stages: fp32 first, then the low-precision arms with twice fp32's steps to
converge (same cell and seed), at most the cap; the whole cap where fp32 did not converge."""

from experiments import sweep
from experiments.configs import long_study, modes


def _fp32(task, base, n, seed, converged, status="completed"):
    return dict(task=task, base=base, n=n, seed=seed, precision="fp32", status=status,
                steps_to_converge=converged)


def _steps(config):
    return {c.name: int(c.config.train.steps) for c in sweep.expand(config)}


def test_low_precision_caps_are_twice_fp32s_convergence_step_at_most_the_cap():
    grid = long_study.GROUPS[0][1]  # IterADD base 2 n = 8, seeds 0, 1
    rows = [_fp32("iter_add", 2, 8, 0, 3000), _fp32("iter_add", 2, 8, 1, 15000),
            _fp32("iter_add", 2, 8, 2, None)]
    stage = long_study.stages()[1]
    steps = _steps(stage(rows))
    cap = long_study.cap("iter_add", 2)
    assert steps["iter_add_b2_n8_k3_pure_bf16_L2_s0"] == 6000
    assert steps["iter_add_b2_n8_k3_bf16_L2_s0"] == 6000
    assert steps["iter_add_b2_n8_k3_pure_bf16_L2_s1"] == cap == 16000  # 30000 capped
    assert len(steps) == 2 * len(grid["seeds"])
    seed2 = [s for s in long_study.stages() if dict(s([]).grid.ns) == {"iter_add_b2": (8,)}
             and tuple(s([]).grid.seeds) == (2,)]
    low = _steps(seed2[1](rows))
    assert low["iter_add_b2_n8_k3_bf16_L2_s2"] == cap  # fp32 did not converge


def test_a_failed_fp32_run_or_another_cell_gives_no_cap():
    stage = long_study.stages()[1]
    rows = [_fp32("iter_add", 2, 8, 0, 3000, status="error"), _fp32("add", 2, 8, 0, 500)]
    assert set(_steps(stage(rows)).values()) == {long_study.cap("iter_add", 2)}


def test_stages_run_fp32_first_and_the_decisive_cell_first():
    stages = long_study.stages()
    first, second = stages[0]([]), stages[1]([])
    assert tuple(first.grid.precisions) == ("fp32",)
    assert tuple(second.grid.precisions) == long_study.LOW_ARMS
    assert dict(first.grid.ns) == {"iter_add_b2": (8,)} and tuple(first.grid.seeds) == (0, 1)
    names = [c.name for stage in stages for c in sweep.expand(stage([]))]
    assert len(names) == len(set(names))  # no cell twice across the stages
    assert "iter_add_b2_n8_k3_pure_bf16_L2_s2" in names  # the third seed runs, later
    assert any("bf16_storage" in n for n in names) and any("mul_b10_n3" in n for n in names)
    configs = {c.name: c.config for stage in stages for c in sweep.expand(stage([]))}
    cell = configs["mul_b2_n4_fp32_L2_s0"]
    assert cell.early_stop.protocol == "iid" and cell.optim.final_lr_fraction == 1.0
    assert cell.train.steps == long_study.cap("mul", 2)


def test_long_mode_is_a_mode_with_stages():
    s = modes.SETTINGS["long"]()
    assert s.name == "long" and s.stages is long_study.stages
    assert tuple(s.sweep().grid.precisions) == ("fp32",)
