import sys

from triage_router.policies.sim.cli import main

sys.exit(main())
