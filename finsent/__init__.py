"""finsent: a streaming financial-sentiment monitor (see README.md and DESIGN.md)."""

__version__ = "0.1.0"
