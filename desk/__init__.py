"""desk: a unified support desk inbox for teams that live in the terminal."""

__version__ = "0.1.0"
