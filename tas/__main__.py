import sys

from tas.cli import main

sys.exit(main())
