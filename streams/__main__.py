"""``python -m streams`` runs the ``leadscore`` command line."""

from streams.cli import main

main()
