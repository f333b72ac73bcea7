"""Subcommands of the ``kerasseg`` CLI, one module each (see ``kerasseg.cli``)."""
