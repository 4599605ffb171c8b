"""snnconv's command line (import name ``snnconv_cli``): typer commands over snnconv.workflows."""
