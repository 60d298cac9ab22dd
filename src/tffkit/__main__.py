"""``python -m tffkit`` runs the ``tff`` command line."""

from .cli import main

raise SystemExit(main())
