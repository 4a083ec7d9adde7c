"""`python -m experiments.reproduce`: the command line of `pipeline.py`."""

import sys

from experiments.reproduce.pipeline import main

if __name__ == "__main__":
    sys.exit(main())
