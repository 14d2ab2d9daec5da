"""tagworker: embed, tag and cluster marketing content and customer feedback."""

__version__ = "0.1.0"
