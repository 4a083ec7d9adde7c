"""Hand-built log-precision Transformers for ADD, IterADD and MUL, run by the project's own model.

    from constructions import build
    c = build("add", base=10, n=8)            # a Construction: spec, config, params, residual
    print(c.summary()); print(c.explain([123, 456]))

    python -m constructions.verify --task=add --base=10 --n=64 --format=bf16
    python -m constructions.frontier --task=add --base=10 --n=4,8,16,32,64

The house:

    craft/         the weight-writing toolkit: named residual subspaces, the parameter builder,
                   attention and MLP blocks, the carry chain, `Construction`
    column_add.py  ADD and IterADD at log precision, width independent of n
    lookup_add.py  ADD and IterADD with every width independent of n and k (Theorem 5.2)
    add_constant.py ADD at constant precision, O(n^2) width (Theorem 4.1)
    mul.py         MUL at log precision, O(n^2) MLP width (Theorem 5.3)
    check/         inputs, simulated decoding against Python integers, sizes, verdict logs,
                   the shared task-spec flags
    verify.py      the verifier (`python -m constructions.verify`)
    frontier/      the measured precision frontier (`python -m constructions.frontier`)
    certify/       precision certificates from the weights alone (`python -m constructions.certify`)
"""

from __future__ import annotations

from arith_precision import tasks
from constructions.craft.construction import Construction

VARIANTS = ("log", "constant", "lookup")


def build(task: str | tasks.TaskSpec, base: int | None = None, n: int | None = None,
          k: int = 2, l: int | None = None, variant: str = "log") -> Construction:
    """The construction for a task (a TaskSpec, or task name with base, n, k, l).

    variant "log" (default): constant width, O(log n) bits (ADD, IterADD, MUL). "constant": ADD
    only, O(n^2) width and a number of bits that does not grow with n (Theorem 4.1). "lookup":
    ADD and IterADD with d_model, d_ff, heads and layers independent of n and k (floors by
    attention lookups, `lookup_add`; Theorem 5.2), O(log(n k)) bits.
    """
    if variant not in VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; expected one of {VARIANTS}")
    if isinstance(task, tasks.TaskSpec):
        spec = task
    else:
        if base is None or n is None:
            raise ValueError("build(task, base, n, ...) needs base and n")
        spec = tasks.TaskSpec(task, base=base, n=n, k=k if task == "iter_add" else 2,
                              l=l if task == "mul" else None)
    if variant == "constant":
        if spec.task != "add":
            raise ValueError(f"variant='constant' exists for task 'add' only (constant "
                             f"precision cannot do {spec.task!r}: Theorems 4.2 and 4.3), got "
                             f"task={spec.task!r}")
        from constructions.add_constant import build_add_constant

        return build_add_constant(spec)
    if variant == "lookup":
        if spec.task not in ("add", "iter_add"):
            raise ValueError(f"variant='lookup' exists for tasks 'add' and 'iter_add' only, got "
                             f"task={spec.task!r}")
        from constructions.lookup_add import build_lookup_add

        return build_lookup_add(spec)
    if spec.task in ("add", "iter_add"):
        from constructions.column_add import build_column_add

        return build_column_add(spec)
    from constructions.mul import build_mul

    return build_mul(spec)


__all__ = ["VARIANTS", "Construction", "build"]
