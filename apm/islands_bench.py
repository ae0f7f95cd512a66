"""`python -m apm.islands_bench`: the islands section of `python -m apm.bench` alone (`--only islands`: the views'
and one live frame's costs, in ms); any further arguments (`--threads N`) are passed on."""

import sys

from .bench.sections import main

if __name__ == "__main__":
    sys.exit(main(["--only", "islands", *sys.argv[1:]]))
