"""`python -m bulkproc.simulator`: serve the simulator in the foreground (see cli.py for the options)."""

from .cli import main

raise SystemExit(main())
