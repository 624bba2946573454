"""HNSW indexes built once after a bulk load (catalog/services/index_builds.py): the builds that
wait for one, and a partial index that answers "is any item still pending?" in one probe."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('catalog', '0005_product_data'),
    ]

    operations = [
        migrations.CreateModel(
            name='DeferredIndex',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('space', models.CharField(choices=[('image', 'Image'), ('text', 'Text')], max_length=8)),
                ('model_name', models.CharField(max_length=300)),
                ('dim', models.PositiveIntegerField()),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('stored_at', models.DateTimeField()),
            ],
        ),
        migrations.AddIndex(
            model_name='catalogitem',
            index=models.Index(condition=models.Q(('status', 'pending')), fields=['catalog'], name='catalogitem_pending'),
        ),
        migrations.AddConstraint(
            model_name='deferredindex',
            constraint=models.UniqueConstraint(fields=('space', 'model_name', 'dim'), name='unique_deferred_index'),
        ),
    ]
