"""The errors tagworker raises; retryable ones are kept apart from permanent ones."""

from __future__ import annotations


class TagworkerError(Exception):
    """Base class: a message that says what went wrong and what to do."""


class ConfigurationError(TagworkerError):
    """A setting is missing or wrong; the process should not start."""


class ModelLoadError(ConfigurationError):
    """The embedding model cannot be loaded from where the settings point."""


class ServiceUnavailableError(TagworkerError):
    """PostgreSQL or Redis cannot be reached."""


class SearchError(TagworkerError):
    """A search that cannot run as asked: empty query, bad k, unknown item or tag, no active model."""


class TaxonomyError(TagworkerError):
    """A taxonomy file or a tag name that cannot be used."""


class CorrectionError(TagworkerError):
    """A tag correction that names an unknown item or tag, or contradicts itself."""


class ModelVersionError(TagworkerError):
    """A model version that does not exist or cannot be promoted or rolled back to."""


class ModelVersionRetired(TagworkerError):
    """A batch embedded by a version that a promotion or rollback retired meanwhile: it is not written, and is
    handed back to be embedded by the active version (the worker switches before its next batch)."""


class NotDeliverable(TagworkerError, ValueError):
    """A queue or in-flight entry that no queue can take; the message says why, for a person to act on.

    The broker transport catches it and moves the entry to the dead-letter list (see `worker.dead_letters`).
    """


class ThemeError(TagworkerError):
    """A theme name that cannot be used, or a theme that is unknown or retired."""
