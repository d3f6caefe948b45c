"""``python -m tillsight`` runs the CLI."""

from .cli import main

raise SystemExit(main())
