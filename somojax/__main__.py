"""`python -m somojax` is the `somojax` command."""

import sys

from somojax.cli import main

sys.exit(main())
