"""One module per command (``add_arguments`` / ``run``), registered in :data:`ebca_viz.cli.COMMANDS`."""
