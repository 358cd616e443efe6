"""`python -m ragtune.cli`."""

import sys

from ragtune.cli.main import main

sys.exit(main())
