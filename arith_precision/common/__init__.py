"""Small shared utilities every layer may use (they import nothing else of the project).

    atomic.py       atomic file writes (write to a temporary file, then rename)
    markdown.py     the one markdown-table helper of every report
    cli_errors.py   `UsageError` (a ValueError naming a flag or key, its value and why), the
                    command lines' one error path (one line on stderr, exit status 2), size checks
    config_args.py  the shared `key=value,...` parser of config-file arguments
"""

from arith_precision.common import atomic, cli_errors, config_args, markdown

__all__ = ["atomic", "cli_errors", "config_args", "markdown"]
