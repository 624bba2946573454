"""The Django project. Importing it loads nothing: ``dar_site.env`` is shared with the Django-free
model workers, and the Celery app is loaded by Django at startup (workers.apps) or by
``celery -A dar_site`` (which finds ``dar_site.celery``)."""
