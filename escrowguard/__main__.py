"""``python -m escrowguard``: the CLI, for child processes started from this interpreter."""

from escrowguard.cli import main

main()
