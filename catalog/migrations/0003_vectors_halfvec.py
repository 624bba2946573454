"""Vectors in half precision: the column becomes ``halfvec`` (a cast, no re-embedding) and the
partial HNSW indexes are rebuilt over ``vector::halfvec(dim)``. Reversible."""

import pgvector.django
from django.db import migrations

from catalog.pgvector_setup import build_halfvec_indexes, build_vector_indexes, drop_hnsw_indexes


class Migration(migrations.Migration):
    dependencies = [("catalog", "0002_item_original")]

    operations = [
        migrations.RunPython(drop_hnsw_indexes, build_vector_indexes),
        migrations.AlterField(
            model_name="itemembedding",
            name="vector",
            field=pgvector.django.HalfVectorField(),
        ),
        migrations.RunPython(build_halfvec_indexes, drop_hnsw_indexes),
    ]
