"""Celery tasks. They stay thin: each one calls a service function that owns the work.

Tasks named ``gpu.*`` are routed to the gpu queue (dar_site/celery.py), served by workers that
keep the models loaded.
"""

from . import catalog, search  # noqa: F401  (registers the tasks with Celery)
