"""Celery worker: the app object, the training task and the sinks that write to the database."""

__all__ = ["celery_app", "sinks", "tasks", "training"]
