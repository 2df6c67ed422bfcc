import sys

from hca.cli import main

sys.exit(main())
