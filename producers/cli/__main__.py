"""`python -m producers.cli ...` is `modelbus ...` (used to start workers as child processes)."""

from producers.cli import main

main()
