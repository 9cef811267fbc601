"""Entry point of ``python -m scaling.laws``; see :mod:`scaling.laws.cli`."""

import sys

from .cli import main

sys.exit(main())
