"""`python -m bulkproc.cli`: the `bulkproc` command without its console script."""

from .main import main

main(prog_name="bulkproc")
