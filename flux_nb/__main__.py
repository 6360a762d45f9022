"""`python -m flux_nb ...` is the `flux-nb` command."""

from .cli import main

raise SystemExit(main())
