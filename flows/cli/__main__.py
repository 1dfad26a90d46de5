"""`python -m flows.cli`: the same as the `coincap-pipeline` console script."""

from flows.cli import main

main()
