"""Run one CLI module on many argument lists fast: import the heavy libraries once, then fork.

    python tests/cli_harness.py MODULE PRELOAD < cases.json > results.json

Each case is a list of arguments; each runs in its own forked process exactly as
`python -m MODULE ARGS...` would (`runpy.run_module(MODULE, run_name="__main__")` with
`sys.argv` set, stdout and stderr on their own files, a 120 s alarm), and its exit status,
stdout and stderr are collected. PRELOAD is a comma-separated list of modules imported once in
the parent (jax, orbax, ...) so that a case costs milliseconds instead of a fresh interpreter's
seconds; MODULE itself is never imported in the parent (absl flags are defined per process).
"""

import importlib
import json
import os
import runpy
import signal
import sys
import tempfile


def run_case(module: str, args: list[str], tmp: str) -> dict:
    out_path, err_path = os.path.join(tmp, "out"), os.path.join(tmp, "err")
    pid = os.fork()
    if pid == 0:  # child
        code = 1
        try:
            out = os.open(out_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            err = os.open(err_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
            os.dup2(out, 1)
            os.dup2(err, 2)
            signal.alarm(120)
            sys.argv = [module, *args]
            try:
                runpy.run_module(module, run_name="__main__", alter_sys=True)
                code = 0
            except SystemExit as e:
                code = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
                if not isinstance(e.code, int) and e.code is not None:
                    print(e.code, file=sys.stderr)
            except BaseException:  # noqa: BLE001 -- what the interpreter would print
                import traceback

                traceback.print_exc()
                code = 1
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    with open(out_path, errors="replace") as f:
        stdout = f.read()
    with open(err_path, errors="replace") as f:
        stderr = f.read()
    return {"args": args, "returncode": code, "stdout": stdout, "stderr": stderr}


def main() -> None:
    module, preload = sys.argv[1], sys.argv[2]
    sys.path[0] = os.getcwd()  # the repository (as `python -m` has), not tests/
    for name in filter(None, preload.split(",")):
        importlib.import_module(name)
    cases = json.load(sys.stdin)
    with tempfile.TemporaryDirectory() as tmp:
        results = [run_case(module, args, tmp) for args in cases]
    json.dump(results, sys.stdout)


if __name__ == "__main__":
    main()
