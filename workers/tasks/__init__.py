"""Celery tasks of the search turn. They stay thin: each one calls a service function that owns the
work. The catalog's tasks (``gpu.embed_items``, ``catalog.sync_feed``...) live in catalog/tasks.py.

Tasks named ``gpu.*`` are routed to the gpu queue (dar_site/celery.py), served by workers that
keep the models loaded; ``interactive.*`` (a turn's text stage) to the interactive queue, served by
a worker that keeps only the encoder, so that first results never wait behind LLM work.
"""

from . import search  # noqa: F401  (registers the tasks with Celery)
