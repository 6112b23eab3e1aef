import sys

from triage_router.router.cli.main import main

sys.exit(main())
