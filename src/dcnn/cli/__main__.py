"""`python -m dcnn.cli`: the same as the `dcnn` command."""

from dcnn.cli import main

main()
