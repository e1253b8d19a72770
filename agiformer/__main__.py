import sys

from agiformer.cli import main

sys.exit(main())
