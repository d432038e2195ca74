"""`python -m vuegraf CONFIG` runs the daemon."""

import sys

from vuegraf.cli import main

sys.exit(main())
