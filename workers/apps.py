from django.apps import AppConfig


class WorkersConfig(AppConfig):
    # Django sees this app only for its tasks and management commands; workers/models/ stays
    # free of Django so the model code can be used and tested on its own.
    name = "workers"
    verbose_name = "Model workers"
