"""Store a keyed hash of anonymous shoppers' session keys instead of the keys themselves.

Existing rows are hashed in place (the same HMAC as retrieval/services/owner_keys.py, with this
instance's SECRET_KEY), so their shoppers keep their sessions; then the raw column is dropped.
"""

from django.db import migrations, models
from django.utils.crypto import salted_hmac

SALT = "retrieval.SearchSession.session_key_hash"  # = owner_keys.SALT (frozen here on purpose)


def hash_keys(apps, schema_editor):
    SearchSession = apps.get_model("retrieval", "SearchSession")
    rows = SearchSession.objects.exclude(session_key="").only("pk", "session_key")
    batch = []
    for session in rows.iterator(chunk_size=2000):
        session.session_key_hash = salted_hmac(
            SALT, session.session_key, algorithm="sha256"
        ).hexdigest()
        batch.append(session)
        if len(batch) >= 2000:
            SearchSession.objects.bulk_update(batch, ["session_key_hash"])
            batch = []
    if batch:
        SearchSession.objects.bulk_update(batch, ["session_key_hash"])


class Migration(migrations.Migration):
    dependencies = [("retrieval", "0003_analysts_group")]

    operations = [
        migrations.AddField(
            model_name="searchsession",
            name="session_key_hash",
            field=models.CharField(blank=True, db_index=True, max_length=64),
        ),
        # A raw key cannot be turned back from its hash: the backward step leaves sessions
        # without an anonymous owner (they become unreachable, not someone else's).
        migrations.RunPython(hash_keys, migrations.RunPython.noop),
        migrations.RemoveField(model_name="searchsession", name="session_key"),
    ]
