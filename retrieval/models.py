"""Search sessions and everything a turn produced, kept for the shopper and the analysts."""

from __future__ import annotations

import uuid

from django.conf import settings
from django.db import models

from catalog.models import Catalog, CatalogItem


class SearchSession(models.Model):
    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    catalog = models.ForeignKey(Catalog, on_delete=models.CASCADE, related_name="sessions")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL
    )
    # Anonymous shoppers are identified by their Django session key, which is a credential (the
    # browser's cookie): only its keyed hash is stored (retrieval/services/owner_keys.py).
    session_key_hash = models.CharField(max_length=64, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Filters the shopper clicked ("picked": filter dicts, each with "at", the number of messages
    # before it) and chips removed ("removed": key -> that number): retrieval/turn/filters.py.
    filters = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.catalog} · {self.created_at:%Y-%m-%d %H:%M}"


class Turn(models.Model):
    class Status(models.TextChoices):
        QUEUED = "queued"
        RUNNING = "running"
        DONE = "done"
        FAILED = "failed"

    session = models.ForeignKey(SearchSession, on_delete=models.CASCADE, related_name="turns")
    index = models.PositiveIntegerField()
    message = models.TextField()
    # The dialogue the turn was built from: first message as caption, later ones as rounds.
    context = models.JSONField(default=list)
    # The shopper rewrote "what I understood" and sent it: the dialogue starts again from this
    # message (``context`` holds it alone), the earlier messages stay in the transcript.
    restates = models.BooleanField(default=False, db_default=False)
    refined_query = models.TextField(blank=True)
    prompts = models.JSONField(default=list, blank=True)
    refinement_fallback = models.BooleanField(default=False)
    question = models.TextField(blank=True)
    weights = models.JSONField(default=dict, blank=True)
    # The filters the turn ranks with ("active"), those relaxed because nothing matched them all
    # ("relaxed") and what the shopper is told of it ("notice"): retrieval/turn/filters.py.
    filters = models.JSONField(default=dict, blank=True)
    encoder_name = models.CharField(max_length=300, blank=True)
    timings = models.JSONField(default=dict, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.QUEUED)
    error_code = models.CharField(max_length=64, blank=True)
    error = models.TextField(blank=True)
    task_id = models.CharField(max_length=64, blank=True)
    attempts = models.PositiveIntegerField(default=0)
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["session", "index"]
        constraints = [
            models.UniqueConstraint(fields=["session", "index"], name="unique_turn_index")
        ]
        indexes = [models.Index(fields=["status", "created_at"])]

    def __str__(self) -> str:
        return f"turn {self.index}: {self.message[:60]}"


class Preview(models.Model):
    """An image the diffusion model painted of what the shopper means."""

    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="previews")
    index = models.PositiveSmallIntegerField()
    prompt = models.TextField()
    seed = models.BigIntegerField()
    image = models.ImageField(upload_to="previews/%Y/%m/%d/")

    class Meta:
        ordering = ["turn", "index"]
        constraints = [
            models.UniqueConstraint(fields=["turn", "index"], name="unique_preview_index")
        ]

    def __str__(self) -> str:
        return f"preview {self.index} of {self.turn}"


class TurnResult(models.Model):
    turn = models.ForeignKey(Turn, on_delete=models.CASCADE, related_name="results")
    item = models.ForeignKey(CatalogItem, on_delete=models.CASCADE, related_name="+")
    # Provisional (text-only) results are kept beside the final (fused) ones.
    final = models.BooleanField()
    rank = models.PositiveIntegerField()
    score = models.FloatField()

    class Meta:
        ordering = ["turn", "-final", "rank"]
        constraints = [
            models.UniqueConstraint(fields=["turn", "final", "rank"], name="unique_result_rank")
        ]

    def __str__(self) -> str:
        return f"#{self.rank} item {self.item_id} ({'final' if self.final else 'provisional'})"


class Feedback(models.Model):
    session = models.ForeignKey(SearchSession, on_delete=models.CASCADE, related_name="feedback")
    turn = models.ForeignKey(Turn, null=True, blank=True, on_delete=models.SET_NULL)
    item = models.ForeignKey(CatalogItem, on_delete=models.CASCADE, related_name="+")
    value = models.SmallIntegerField(choices=[(1, "like"), (-1, "dislike")])
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            # A shopper's latest opinion of an item replaces the earlier one.
            models.UniqueConstraint(fields=["session", "item"], name="unique_feedback_item")
        ]

    def __str__(self) -> str:
        return f"{'like' if self.value > 0 else 'dislike'} item {self.item_id}"


class ProductClick(models.Model):
    """A shopper opened a result (its product page, or its picture when the shop gave none).

    Written only by ``retrieval.services.clicks.record_click``; the analysts' funnel ends here.
    """

    session = models.ForeignKey(SearchSession, on_delete=models.CASCADE, related_name="clicks")
    # The latest turn whose results showed the item (kept if the turn is ever deleted).
    turn = models.ForeignKey(
        Turn, null=True, blank=True, on_delete=models.SET_NULL, related_name="clicks"
    )
    item = models.ForeignKey(CatalogItem, on_delete=models.CASCADE, related_name="+")
    # Where the click came from: the search page or a shop's embedded widget.
    source = models.CharField(max_length=16, default="page")
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)

    class Meta:
        ordering = ["session", "created_at"]

    def __str__(self) -> str:
        return f"click on item {self.item_id}"
