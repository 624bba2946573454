"""The Celery application shared by the web process (which only sends) and the workers."""

from __future__ import annotations

import os

from celery import Celery
from kombu import Queue

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "dar_site.settings")

app = Celery("dar_site")
app.config_from_object("django.conf:settings", namespace="CELERY")


@app.on_after_configure.connect
def _setup_queues(sender: Celery, **_: object) -> None:
    from django.conf import settings

    # Model work goes to the gpu queue, served by workers that hold the models in memory.
    sender.conf.task_queues = [
        Queue(settings.CELERY_GPU_QUEUE),
        Queue(settings.CELERY_DEFAULT_QUEUE),
    ]
    sender.conf.task_default_queue = settings.CELERY_DEFAULT_QUEUE
    sender.conf.task_routes = {"gpu.*": {"queue": settings.CELERY_GPU_QUEUE}}


app.autodiscover_tasks(["workers"])
