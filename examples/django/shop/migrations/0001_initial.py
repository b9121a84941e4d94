from django.db import migrations, models


class Migration(migrations.Migration):
    # Django reads these class attributes as they are (its migrations' own convention).
    initial = True
    dependencies: list[tuple[str, str]] = []  # noqa: RUF012

    operations = [  # noqa: RUF012
        migrations.CreateModel(
            name="Order",
            fields=[
                ("id", models.BigAutoField(primary_key=True, serialize=False)),
                ("item", models.CharField(max_length=100)),
                ("quantity", models.PositiveIntegerField()),
                ("receipt_job", models.UUIDField(null=True)),
                ("receipt_sent", models.BooleanField(default=False)),
            ],
        ),
    ]
