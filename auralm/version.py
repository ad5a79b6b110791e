"""auralm's version, in the lowest tier so that reports and the CLI can name it (pyproject.toml reads it too)."""

__version__ = "0.1.0"
