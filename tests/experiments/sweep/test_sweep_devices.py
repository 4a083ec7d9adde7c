"""`--workers=auto` and GPU pinning (`experiments/sweep/devices.py`, `pool.run_parallel`): which
GPUs are visible, how many workers auto gives, and the environment each worker process really
receives before its JAX backend starts (checked on CPU with fake host devices)."""

import itertools
import os
import time

import pytest

from experiments.sweep import devices
from experiments.sweep import pool as sweep_pool

SMI = """GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-11111111-2222-3333-4444-555555555555)
GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-66666666-7777-8888-9999-000000000000)
  MIG 3g.20gb     Device  0: (UUID: MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee)
  MIG 3g.20gb     Device  1: (UUID: MIG-ffffffff-1111-2222-3333-444444444444)
GPU 2: NVIDIA H100 80GB HBM3 (UUID: GPU-77777777-2222-3333-4444-555555555555)
"""


def test_visible_gpus_follow_cuda_visible_devices_then_nvidia_smi():
    parse = devices.parse_cuda_visible_devices
    assert parse("0,1,2,3") == ["0", "1", "2", "3"]
    assert parse("2, 5") == ["2", "5"]
    assert parse("") == [] and parse("-1") == [] and parse("NoDevFiles") == []
    assert parse("1,-1,2") == ["1"]  # CUDA stops at the first entry that names no device
    assert parse("GPU-11111111-2222,3") == ["GPU-11111111-2222", "3"]
    assert devices.parse_nvidia_smi(SMI) == [
        "0", "MIG-aaaaaaaa-bbbb-cccc-dddd-eeeeeeeeeeee", "MIG-ffffffff-1111-2222-3333-444444444444",
        "2"]
    assert devices.parse_nvidia_smi("") == []
    calls = []

    def smi():
        calls.append(1)
        return SMI

    # The variable wins, even set to nothing: nvidia-smi is not asked.
    assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": "3,1"}, smi) == ["3", "1"]
    assert devices.visible_gpus({"CUDA_VISIBLE_DEVICES": ""}, smi) == []
    assert not calls
    assert len(devices.visible_gpus({}, smi)) == 4 and calls
    assert devices.visible_gpus({}, lambda: "") == []  # no nvidia-smi


def test_auto_is_one_worker_per_gpu_and_workers_are_pinned_in_turn():
    assert devices.resolve_workers("auto", ["0", "1", "2", "3"])[0] == 4
    assert "one per visible GPU (0, 1, 2, 3)" in devices.resolve_workers("auto", list("0123"))[1]
    # One GPU or none: today's default, cells one after another in the sweep's process.
    assert devices.resolve_workers("auto", ["0"]) == (
        1, "auto: 1 GPU visible (0), cells run one after another in this process")
    assert devices.resolve_workers("auto", []) == (
        1, "auto: no GPU visible, cells run one after another in this process")
    assert devices.resolve_workers("3", []) == (3, "as asked")
    assert devices.slot_envs(4, ["2", "5"]) == [
        {"CUDA_VISIBLE_DEVICES": "2"}, {"CUDA_VISIBLE_DEVICES": "5"},
        {"CUDA_VISIBLE_DEVICES": "2"}, {"CUDA_VISIBLE_DEVICES": "5"}]
    assert devices.slot_envs(2, ["0"]) == [{}, {}]  # one GPU: nothing to pin
    assert devices.slot_envs(1, ["0", "1"]) == [{}]  # in-process: sees every GPU, as before
    for bad in (0, -2, "0", "many", "", True, 2.5):
        with pytest.raises(ValueError, match="workers must be auto or an integer >= 1"):
            devices.parse_workers(bad)


def _record_env(job):
    """A pool runner that reports what its worker process sees (imported by spawned workers)."""
    start = time.time()
    import jax

    count = jax.device_count()  # starts this process's backend, after the slot's env was set
    time.sleep(0.5)  # so that a second job on the same slot would overlap if one could
    return {"name": job["name"], "status": "completed", "pid": os.getpid(), "start": start,
            "end": time.time(), "devices": count,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "xla_flags": os.environ.get("XLA_FLAGS", "")}


def test_each_worker_gets_its_slots_environment_before_jax_starts(tmp_path):
    # Two slots as `--workers=auto` makes them on two GPUs, plus a fake host device count per
    # slot: a worker's JAX seeing that many devices proves the variables arrived before its
    # backend started (CUDA_VISIBLE_DEVICES is read at the same moment, and changes nothing on a
    # CPU-only JAX).
    envs = devices.slot_envs(2, ["0", "1"])
    envs[0]["XLA_FLAGS"] = "--xla_force_host_platform_device_count=3"
    envs[1]["XLA_FLAGS"] = "--xla_force_host_platform_device_count=5"
    jobs = [{"name": f"job{i}", "dir": str(tmp_path / f"job{i}")} for i in range(3)]
    records = []
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    sweep_pool.run_parallel(jobs, 2, records.append, runner=_record_env, slot_envs=envs)
    assert os.environ.get("CUDA_VISIBLE_DEVICES") == before  # the sweep's own env untouched
    assert sorted(r["name"] for r in records) == ["job0", "job1", "job2"]
    assert len({r["pid"] for r in records}) == 3 and os.getpid() not in {r["pid"] for r in records}
    for r in records:
        assert (r["cuda_visible_devices"], r["devices"]) in (("0", 3), ("1", 5)), r
        # The pool's shared environment too: one XLA CPU thread per worker.
        assert "--xla_cpu_multi_thread_eigen=false" in r["xla_flags"]
    by_gpu = {}
    for r in records:
        by_gpu.setdefault(r["cuda_visible_devices"], []).append((r["start"], r["end"]))
    assert sorted(by_gpu) == ["0", "1"]
    for spans in by_gpu.values():  # one job at a time per GPU
        spans.sort()
        assert all(a_end <= b_start for (_, a_end), (b_start, _) in itertools.pairwise(spans))
    with pytest.raises(ValueError, match="3 slot environments for 2 workers"):
        sweep_pool.run_parallel(jobs, 2, records.append, runner=_record_env,
                                 slot_envs=[{}, {}, {}])


def test_env_cannot_be_set_once_the_backend_has_started():
    import jax

    jax.devices()  # this test process's backend is up
    with pytest.raises(RuntimeError, match="JAX backend has started"):
        sweep_pool.apply_env({"CUDA_VISIBLE_DEVICES": "0"})
    sweep_pool.apply_env({})  # nothing to set: fine
