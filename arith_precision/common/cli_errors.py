"""One error path for every command-line tool: `error: <flag or key>: <value>: <why>`, exit 2.

Bad input (a flag, a config-string key, a `--config.*` override, a config file, a workdir, an
output path, a size that cannot fit) raises `UsageError(key, value, why)` before any work starts;
`run_cli` / `parse_absl_flags` turn it into exactly one line on stderr and exit status 2. Anything
else is an internal error and keeps its traceback (exit 1), so bugs stay debuggable.

Exit codes shared by the CLIs: 0 success, 1 a check failed (e.g. the verifier found a wrong
answer) or an internal error (with a traceback), 2 bad input (one line, no traceback).

Sizes: `check_memory` rejects work whose estimated peak memory exceeds `memory_limit_bytes()`
(16 GiB; the environment variable ARITH_PRECISION_MAX_MEMORY_GB sets another limit), with the
estimate in the message. Each CLI estimates its own peak from its sizes (n, k, batch, num).
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from collections.abc import Callable, Sequence

EXIT_USAGE = 2
DEFAULT_MEMORY_LIMIT_GB = 16.0
MEMORY_LIMIT_ENV = "ARITH_PRECISION_MAX_MEMORY_GB"


class UsageError(ValueError):
    """Bad input: `key` (a flag like `--n` or a config key like `train.steps`), its value, why.

    A ValueError, so library callers that catch ValueError keep working. Also constructible from
    one message (third-party code re-raises `type(e)(message)`); then key is the whole message.
    """

    def __init__(self, key: str, value=None, why: str | None = None):
        self.key, self.value, self.why = key, value, why
        super().__init__(self.line())

    def line(self) -> str:
        if self.why is None:
            return str(self.key)
        return f"{self.key}: {_one_line(self.value)}: {self.why}"


def _one_line(value) -> str:
    text = str(value)
    if not text:
        return "''"
    return text if "\n" not in text else text.replace("\n", "\\n")


def usage_exit(err: UsageError | str) -> None:
    """Print `error: <line>` (one line) to stderr and exit with status 2."""
    line = err.line() if isinstance(err, UsageError) else str(err)
    print(f"error: {' '.join(line.split())}", file=sys.stderr, flush=True)
    sys.exit(EXIT_USAGE)


def run_cli(main: Callable[[], int | None]) -> int:
    """Run `main()`; a UsageError becomes one line and exit 2, anything else propagates."""
    try:
        return main() or 0
    except UsageError as e:
        usage_exit(e)
    return EXIT_USAGE  # not reached


# ---- checks ------------------------------------------------------------------------------------


def check_int(key: str, value, lo: int | None = None, hi: int | None = None) -> int:
    """`value` must be an int in [lo, hi] (either bound may be None)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UsageError(key, value, "must be an integer")
    if lo is not None and value < lo:
        raise UsageError(key, value, f"must be >= {lo}")
    if hi is not None and value > hi:
        raise UsageError(key, value, f"must be <= {hi}")
    return value


def memory_limit_bytes() -> int:
    raw = os.environ.get(MEMORY_LIMIT_ENV)
    if raw is None:
        return int(DEFAULT_MEMORY_LIMIT_GB * 2**30)
    try:
        gb = float(raw)
    except ValueError:
        gb = -1.0
    if not gb > 0:
        raise UsageError(MEMORY_LIMIT_ENV, raw, "must be a positive number of GiB")
    return int(gb * 2**30)


def format_bytes(n: float) -> str:
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


def check_memory(key: str, value, estimate_bytes: float, what: str) -> None:
    """Reject `key=value` when `what` is estimated to need more than the memory limit."""
    limit = memory_limit_bytes()
    if estimate_bytes > limit:
        raise UsageError(key, value, f"{what} needs an estimated {format_bytes(estimate_bytes)}, "
                         f"over the {format_bytes(limit)} limit (set {MEMORY_LIMIT_ENV} to "
                         "raise it)")


def check_writable_dir(key: str, path: str) -> str:
    """Create directory `path` if needed and check that a file can be written in it."""
    if not path:
        raise UsageError(key, repr(path), "is empty")
    if os.path.exists(path) and not os.path.isdir(path):
        raise UsageError(key, path, "exists and is not a directory")
    try:
        os.makedirs(path, exist_ok=True)
        probe = os.path.join(path, f".write_probe_{os.getpid()}")
        with open(probe, "w") as f:
            f.write("ok")
        os.remove(probe)
    except OSError as e:
        raise UsageError(key, path, f"cannot be written ({e.strerror or e})") from None
    return path


# ---- argparse ----------------------------------------------------------------------------------

_ARGPARSE_PATTERNS = (  # argparse's messages -> (flag, value, why)
    (re.compile(r"argument (\S+): invalid (\w+) value: '(.*)'$", re.S),
     lambda m: (m[1], m[3], f"not a valid {'integer' if m[2] == 'int' else m[2]}")),
    (re.compile(r"argument (\S+): invalid choice: '(.*?)' \(choose from (.*)\)$", re.S),
     lambda m: (m[1], m[2], f"expected one of {m[3]}")),
    (re.compile(r"argument (\S+): expected one argument$"),
     lambda m: (m[1], "(none)", "expects a value")),
    (re.compile(r"argument (\S+): ignored explicit argument '(.*)'$", re.S),
     lambda m: (m[1], m[2], "takes no value")),
    (re.compile(r"argument (\S+): not allowed with argument (\S+)$"),
     lambda m: (m[1], "(given)", f"not allowed with {m[2]}")),
    (re.compile(r"the following arguments are required: ([^,]+)(?:, .*)?$"),
     lambda m: (m[1], "(missing)", "is required")),
    (re.compile(r"unrecognized arguments: (\S+).*$", re.S),
     lambda m: (m[1].split("=", 1)[0], m[1].split("=", 1)[1] if "=" in m[1] else "(given)",
                "unknown argument")),
)


class ArgumentParser(argparse.ArgumentParser):
    """argparse whose errors are one `error: <flag>: <value>: <why>` line and exit status 2."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)  # --num must not silently mean --num-whatever
        super().__init__(*args, **kwargs)

    def parse_args(self, args=None, namespace=None):
        self._given = list(sys.argv[1:] if args is None else args)
        return super().parse_args(args, namespace)

    def error(self, message: str):
        # argparse reports a missing required flag before an unknown one; a misspelt flag
        # (--nu=2 for --num=2) is the more useful thing to name.
        for arg in getattr(self, "_given", ()):
            name = arg.split("=", 1)[0]
            if (name.startswith("-") and name not in self._option_string_actions
                    and not re.fullmatch(r"-[\d.e+-]+", name)):  # not a negative number
                usage_exit(UsageError(name, arg.split("=", 1)[1] if "=" in arg else "(given)",
                                      "unknown argument"))
        for pattern, parts in _ARGPARSE_PATTERNS:
            m = pattern.match(message)
            if m:
                usage_exit(UsageError(*parts(m)))
        usage_exit(message)


def int_list(key: str, text: str, lo: int = 1) -> list[int]:
    """A comma-separated list of integers >= lo (e.g. `--n=2,4,8`), each checked."""
    items = [x.strip() for x in text.split(",")]
    if not any(items):
        raise UsageError(key, text, "lists no values")
    out = []
    for item in items:
        if not item:
            raise UsageError(key, text, "has an empty item")
        try:
            value = int(item)
        except ValueError:
            raise UsageError(key, text, f"item {item!r} is not an integer") from None
        if value < lo:
            raise UsageError(key, text, f"item {value} must be >= {lo}")
        out.append(value)
    return out


# ---- absl flags --------------------------------------------------------------------------------

_HELP_FLAGS = ("--help", "-h", "-?", "--helpshort", "--helpfull", "--helpxml")
_FLAG_MESSAGE = re.compile(r"flag (--[\w.\-]+)=(.*?): (.*)$", re.S)
# Exceptions a config file or override raises on bad input (anything else keeps its traceback).
_CONFIG_INPUT_ERRORS = (OSError, KeyError, AttributeError, ValueError, TypeError, SyntaxError)


def _usage_in_chain(err: BaseException) -> UsageError | None:
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, UsageError) and err.why is not None:
            return err
        err = err.__cause__ or err.__context__
    return None


def _last_error_line(text: str) -> str:
    """The last 'SomeError: message' line of text that may hold a formatted traceback."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    for line in reversed(lines):
        if re.match(r"^[\w.]*(Error|Exception): ", line):
            return line.split(": ", 1)[1]
    return lines[-1] if lines else str(text)


def _flag_error_line(err: BaseException, argv: Sequence[str]) -> UsageError:
    found = _usage_in_chain(err)
    if found is not None:
        return found
    message = str(err)
    m = _FLAG_MESSAGE.match(message)
    if m and "must have a value other than None" in m[3]:
        return UsageError(m[1], "(missing)", "is required")
    if m:
        return UsageError(m[1], m[2], _last_error_line(m[3]))
    m = re.match(r"Unknown command line flag '([^']+)'", message)
    if m:
        given = next((a for a in argv if a.lstrip("-").split("=", 1)[0] == m[1]), m[1])
        return UsageError(f"--{m[1]}", given.split("=", 1)[1] if "=" in given else "(given)",
                          "unknown flag")
    return UsageError("flags", " ".join(argv[1:]), _last_error_line(message))


def _config_override_key(err: BaseException, argv: Sequence[str]) -> UsageError:
    """An override `--config.a.b=v` naming a key the config lacks: name the override."""
    message = str(err)
    hint = re.search(r"Did you mean \W*(\w+)\W* instead", message)
    why = "no such key in the config" + (f" (did you mean {hint[1]!r}?)" if hint else "")
    for arg in argv[1:]:
        name = arg.lstrip("-").split("=", 1)[0]
        if "." in name and f"'{name.rsplit('.', 1)[-1]}" in message.replace("\\", ""):
            return UsageError(f"--{name}", arg.split("=", 1)[1] if "=" in arg else "(given)", why)
    return UsageError("--config", "override", f"{why}: {_last_error_line(message)}")


def parse_absl_flags(argv: Sequence[str], config_flags: Sequence[str] = ("config",)):
    """An `app.run(main, flags_parser=...)` parser: flag and config errors as one line, exit 2.

    `--help` (and `-h`) exits 0. The config files named by `config_flags` are loaded here
    (ml_collections defers a missing file's error to first use), so a missing file is a flag
    error too.
    """
    from absl import flags

    argv = [a if a != "-h" else "--help" for a in argv]  # as argparse CLIs accept -h
    try:
        rest = flags.FLAGS(argv)
    except SystemExit:  # absl prints the help and exits 1; asking for help is no error
        if any(a.split("=", 1)[0] in _HELP_FLAGS for a in argv[1:]):
            sys.exit(0)
        raise
    except flags.Error as e:
        usage_exit(_flag_error_line(e, argv))
    except AttributeError as e:  # ml_collections: an override names a key the config lacks
        usage_exit(_usage_in_chain(e) or _config_override_key(e, argv))
    except _CONFIG_INPUT_ERRORS as e:
        usage_exit(_usage_in_chain(e) or UsageError(
            "--config", next((a.split("=", 1)[1] for a in argv if a.startswith("--config=")),
                             "(given)"), _last_error_line(str(e))))
    for name in config_flags:
        holder = flags.FLAGS[name]
        if holder.value is None:
            continue
        try:
            holder.value.keys()  # a config that failed to load raises here
        except _CONFIG_INPUT_ERRORS as e:
            path = (holder.config_filename if hasattr(holder, "config_filename")
                    else holder.serialize())
            usage_exit(UsageError(f"--{name}", path, f"cannot load the config file "
                                  f"({_last_error_line(str(e))})"))
    if len(rest) > 1:
        usage_exit(UsageError("argv", " ".join(rest[1:]), "unexpected positional arguments"))
    return rest
