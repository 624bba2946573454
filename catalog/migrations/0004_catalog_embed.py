"""The embeddable widget's fields on catalogs: a publishable key (unique, rotatable) and the exact
origins allowed to embed the catalog. Existing catalogs each get their own random key."""

import django.contrib.postgres.fields
from django.db import migrations, models

import catalog.models


def give_keys(apps, schema_editor):
    Catalog = apps.get_model("catalog", "Catalog")
    for row in Catalog.objects.filter(publishable_key__isnull=True).only("pk"):
        row.publishable_key = catalog_key()
        row.save(update_fields=["publishable_key"])


def catalog_key():
    return catalog.models.new_publishable_key()


class Migration(migrations.Migration):
    dependencies = [("catalog", "0003_vectors_halfvec")]

    operations = [
        # Nullable first: a callable default is evaluated once for all existing rows.
        migrations.AddField(
            model_name="catalog",
            name="publishable_key",
            field=models.CharField(editable=False, max_length=64, null=True),
        ),
        migrations.RunPython(give_keys, migrations.RunPython.noop),
        migrations.AlterField(
            model_name="catalog",
            name="publishable_key",
            field=models.CharField(
                default=catalog.models.new_publishable_key,
                editable=False,
                max_length=64,
                unique=True,
            ),
        ),
        migrations.AddField(
            model_name="catalog",
            name="embed_origins",
            field=django.contrib.postgres.fields.ArrayField(
                base_field=models.CharField(max_length=300),
                blank=True,
                default=list,
                help_text="Exact origins (scheme://host[:port]) of the shop's pages that may "
                "embed this catalog's search widget, one per line, e.g. https://shop.example",
                size=None,
                verbose_name="allowed origins",
            ),
        ),
    ]
