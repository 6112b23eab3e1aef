import sys

from policies.sim.cli import main

sys.exit(main())
