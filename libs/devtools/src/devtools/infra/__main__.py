"""`python -m devtools.infra up|down|status|env|topics` (the Makefile's infra targets, compose's topic job)."""

import sys

from devtools.infra.commands import main

sys.exit(main())
