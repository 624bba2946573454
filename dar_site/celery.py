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
    """Before each task, drop this thread's database connection if it cannot be trusted.

    Workers keep their connections from task to task (``CELERY_DB_REUSE_MAX``), so one that a
    database restart or a killed backend broke must not be handed to the next task. This is
    Django's ``close_if_unusable_or_obsolete`` without the age limit, which is the web process's
    (DB_CONN_MAX_AGE, 0 by default: a connection per request): no round trip unless the last task
    met a database error.
    """
    if task is None or getattr(task.request, "is_eager", False):
        return  # run in the caller's thread (tests): its connection is the caller's business
    from django.db import connections

    for conn in connections.all(initialized_only=True):
        if conn.connection is None:
            continue
        if conn.in_atomic_block or conn.get_autocommit() != conn.settings_dict["AUTOCOMMIT"]:
            conn.close()  # left mid-transaction by a task that did not finish cleanly
        elif conn.errors_occurred:
            if conn.is_usable():
                conn.errors_occurred = False
            else:
                conn.close()


app.autodiscover_tasks(["workers"])
