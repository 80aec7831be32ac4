"""`python -m nim4_edge.cli ...` = `nim4-edge ...`."""

import sys

from nim4_edge.cli import main

sys.exit(main())
