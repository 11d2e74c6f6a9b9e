"""``python -m minicomp``: the command line."""
import sys

from minicomp.cli import main

sys.exit(main())
