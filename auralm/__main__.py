"""`python -m auralm ...`: the same command as `auralm ...`."""

import sys

from auralm.cli import main

if __name__ == "__main__":
    sys.exit(main())
