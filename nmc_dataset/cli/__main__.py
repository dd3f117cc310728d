"""``python -m nmc_dataset.cli``: the console script."""

import sys

from nmc_dataset.cli._main import main

sys.exit(main())
