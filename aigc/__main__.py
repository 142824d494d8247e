"""``python -m aigc`` runs the command line."""

from .cli import main

main()
