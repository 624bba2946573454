from django.apps import AppConfig


class WorkersConfig(AppConfig):
    # Django sees this app only for its tasks and management commands; workers/models/ stays
    # free of Django so the model code can be used and tested on its own.
    name = "workers"
    verbose_name = "Model workers"

    def ready(self) -> None:
        # Load our Celery app at Django startup so @shared_task binds to it (and its settings)
        # in every process that sends tasks, not only in `celery worker`.
        import dar_site.celery  # noqa: F401
        import workers.warmup  # noqa: F401  (connects the worker_ready handler)
