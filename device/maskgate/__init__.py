"""maskgate: grant entry only to people wearing a face mask."""

__version__ = "0.1.0"
