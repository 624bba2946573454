from django.db import migrations, models

import catalog.models


class Migration(migrations.Migration):
    dependencies = [("catalog", "0001_initial")]

    operations = [
        migrations.AddField(
            model_name="catalogitem",
            name="original",
            field=models.FileField(
                blank=True,
                max_length=200,
                storage=catalog.models.private_storage,
                upload_to=catalog.models.original_upload_path,
            ),
        ),
    ]
