"""
C{python3 -m muxframe.cli}: the C{muxframe-xtmp} command line.
"""

import sys

from muxframe.cli.main import main

sys.exit(main())
