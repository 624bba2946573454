"""Build the offline stand-in models, or fetch and load the standard ones ahead of time."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser


class Command(BaseCommand):
    help = (
        "Build the offline models (small random-weight open_clip and Stable Diffusion of the real "
        "architectures) into DAR_MODEL_DIR; with --load, also load every model of the active "
        "profile once (downloads standard weights where a hub is reachable)."
    )

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--force", action="store_true", help="rebuild the offline models")
        parser.add_argument(
            "--load", action="store_true", help="load each model of the active profile once"
        )

    def handle(self, *args: Any, force: bool = False, load: bool = False, **options: Any) -> None:
        from workers.models.config import model_plan, model_settings
        from workers.models.offline import build_offline_models

        settings = model_settings()
        manifest = build_offline_models(settings.model_dir, force=force)
        self.stdout.write(f"offline models ready in {settings.model_dir}")
        for key, value in sorted(manifest.items()):
            if isinstance(value, str | int):
                self.stdout.write(f"  {key}: {value}")
        plan = model_plan(settings)
        self.stdout.write(f"active profile: {plan.profile} (encoder {plan.encoder_name})")
        if load:
            # Imported here: this is the one command of the web side that may load torch.
            from workers.models import registry

            for getter in (
                registry.get_encoder,
                registry.get_text_embedder,
                registry.get_refiner,
                registry.get_generator,
            ):
                model = getter()
                self.stdout.write(f"  loaded {getattr(model, 'name', type(model).__name__)}")
