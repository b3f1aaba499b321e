"""`python -m corral.cli`: corralctl."""

import sys

from corral.cli import main

sys.exit(main())
