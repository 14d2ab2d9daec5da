"""Pure pipeline steps: no Celery, no sessions, no global settings."""
