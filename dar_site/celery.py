"""The Celery application shared by the web process (which only sends) and the workers."""

from __future__ import annotations

import os
from typing import Any

from celery import Celery
from celery.signals import task_prerun
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dar_site.settings")

app = Celery("dar_site")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.on_after_configure.connect
def _setup_queues(sender: Celery, **_: object) -> None:
    from django.conf import settings

    # Model work goes to the gpu queue, served by workers that hold the models in memory; the
    # text stage of a turn goes to the interactive queue, served by a worker that holds only the
    # encoder, so first results never wait behind another session's LLM work.
    sender.conf.task_queues = [
        Queue(settings.CELERY_GPU_QUEUE),
        Queue(settings.CELERY_INTERACTIVE_QUEUE),
        Queue(settings.CELERY_DEFAULT_QUEUE),
    ]
    sender.conf.task_default_queue = settings.CELERY_DEFAULT_QUEUE
    sender.conf.task_routes = {
        "gpu.*": {"queue": settings.CELERY_GPU_QUEUE},
        "interactive.*": {"queue": settings.CELERY_INTERACTIVE_QUEUE},
    }


@task_prerun.connect
def _replace_broken_connections(task: Any = None, **_: Any) -> None:
    """Before each task, drop this thread's database connections that cannot be trusted.

    Workers keep their connections from task to task (``CELERY_DB_REUSE_MAX``), so one that a
    database restart or a killed backend broke must not be handed to the next task.
    """
    if task is None or getattr(task.request, "is_eager", False):
        return  # run in the caller's thread (tests): its connection is the caller's business
    from django.db import connections

    from dar_site.connections import ready_for_next_task

    for conn in connections.all(initialized_only=True):
        ready_for_next_task(conn)


app.autodiscover_tasks(["catalog", "retrieval.turn"])
