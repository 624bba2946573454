"""Migration helper: enable pgvector, or explain clearly why it cannot be."""

from __future__ import annotations

from typing import Any

from django.core.exceptions import ImproperlyConfigured


def enable_pgvector(apps: Any, schema_editor: Any) -> None:
    with schema_editor.connection.cursor() as cursor:
        cursor.execute("SELECT default_version FROM pg_available_extensions WHERE name = 'vector'")
        row = cursor.fetchone()
        if row is None:
            raise ImproperlyConfigured(
                "The PostgreSQL server at DATABASE_URL does not have the pgvector extension "
                "installed. Install pgvector (https://github.com/pgvector/pgvector) on that "
                "server, or unset DATABASE_URL to use the embedded PostgreSQL, which includes it."
            )
        cursor.execute("CREATE EXTENSION IF NOT EXISTS vector")
