"""The read-only "Analysts" group: view permissions on search sessions and everything in them.

Also creates ``retrieval.view_all_sessions``, which lifts the shop scoping of the admin (see
retrieval/analytics/scope.py): analysts review every shop's sessions, shop admins only their own.
"""

from django.contrib.auth.management import create_permissions
from django.db import migrations

GROUP = "Analysts"
MODELS = ("searchsession", "turn", "preview", "turnresult", "feedback")
VIEW_ALL = ("view_all_sessions", "Can view the search sessions of every shop")


def _ensure_default_permissions(apps, using):
    # Default permissions are normally created after all migrations ran (post_migrate); on a fresh
    # database they do not exist yet at this point, so create them now (idempotent).
    # create_permissions skips app configs without a models module, which migration-state stubs
    # never have; the flag only lives on this migration's throwaway state.
    config = apps.get_app_config("retrieval")
    if getattr(config, "models_module", None) is None:
        config.models_module = True
    create_permissions(config, verbosity=0, apps=apps, using=using)


def forwards(apps, schema_editor):
    Group = apps.get_model("auth", "Group")
    Permission = apps.get_model("auth", "Permission")
    ContentType = apps.get_model("contenttypes", "ContentType")
    _ensure_default_permissions(apps, schema_editor.connection.alias)
    session_type = ContentType.objects.get(app_label="retrieval", model="searchsession")
    view_all, _ = Permission.objects.get_or_create(
        content_type=session_type, codename=VIEW_ALL[0], defaults={"name": VIEW_ALL[1]}
    )
    views = Permission.objects.filter(
        content_type__app_label="retrieval",
        codename__in=[f"view_{model}" for model in MODELS],
    )
    group, _ = Group.objects.get_or_create(name=GROUP)
    group.permissions.add(view_all, *views)


def backwards(apps, schema_editor):
    apps.get_model("auth", "Group").objects.filter(name=GROUP).delete()
    apps.get_model("auth", "Permission").objects.filter(
        content_type__app_label="retrieval", codename=VIEW_ALL[0]
    ).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("retrieval", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
        ("contenttypes", "0002_remove_content_type_name"),
    ]

    operations = [migrations.RunPython(forwards, backwards)]
