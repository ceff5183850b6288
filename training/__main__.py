"""`python -m training SPEC.json` (see training.entrypoint)."""

from training.entrypoint import main

raise SystemExit(main())
