"""`python -m aistack` runs the CLI."""

from aistack.cli import main

main()
