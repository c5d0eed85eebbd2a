"""crossdock: move records between business systems as tracked tasks."""

__version__ = "0.1.0"
