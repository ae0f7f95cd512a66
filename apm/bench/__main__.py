"""`python -m apm.bench`: see `apm.bench.sections`."""

import sys

from .sections import main

sys.exit(main())
