"""The one `key=value` argument language of config files (`--config=FILE:ARGS`).

In the style of big_vision's `parse_arg`: ARGS is a comma-separated list of `key=value` and bare
switches, e.g. `quick,tasks=add;mul,seeds=2` (lists inside a value use ';'). The training config
(`configs/train.py`) and every sweep config (`paper_fig2.py`, `formats.py`) parse with `parse`;
what each key means is the config's business.
"""

from __future__ import annotations

from collections.abc import Iterable

from arith_precision.common.cli_errors import UsageError


def parse(arg: str | None, *, keys: Iterable[str], switches: Iterable[str] = (),
          what: str = "config") -> dict[str, str]:
    """'quick,tasks=add;mul' -> {'quick': '', 'tasks': 'add;mul'} (switches map to '').

    Raises UsageError (a ValueError naming the key, the value and why) for an item that is
    neither key=value nor a known switch, a switch given a value, an unknown key, or a key
    given twice.
    """
    keys, switches = set(keys), set(switches)
    known = f"known keys: {', '.join(sorted(keys))}" + (
        f"; switches: {', '.join(sorted(switches))}" if switches else "")
    out: dict[str, str] = {}
    for item in (arg or "").split(","):
        item = item.strip()
        if not item:
            continue
        key, eq, value = (s.strip() for s in item.partition("="))
        if not eq:
            if key not in switches:
                raise UsageError(f"{what} argument", item, f"is neither key=value nor a switch "
                                 f"({known})")
        elif key in switches:
            raise UsageError(key, value, f"is a switch: write '{key}', with no value")
        elif key not in keys:
            raise UsageError(key, value, f"unknown {what} key; {known}")
        if key in out:
            raise UsageError(key, value, "given twice")
        out[key] = value
    return out
