"""``python -m snnconv`` runs the command line."""
from snnconv_cli.main import run

run()
