"""commuter: move AI coding-agent sessions between your machines."""

__version__ = "1.0.0"
