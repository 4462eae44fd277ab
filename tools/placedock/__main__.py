import sys

from placedock.cli import main

sys.exit(main())
