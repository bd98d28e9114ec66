"""The Typer layer: thin commands that parse, resolve settings, call stages and write files."""
