"""``python -m cca_hil`` runs the command line."""

from cca_hil.cli import main

main()
