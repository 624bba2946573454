from django.apps import AppConfig


class CatalogConfig(AppConfig):
    name = "catalog"
    verbose_name = "Catalogs"

    def ready(self) -> None:
        from . import signals  # noqa: F401  (connects the file clean-up on delete)
        from .services.validation import configure_pillow

        configure_pillow()
