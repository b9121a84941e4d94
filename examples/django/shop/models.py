from django.db import models


class Order(models.Model):
    item = models.CharField(max_length=100)
    quantity = models.PositiveIntegerField()
    receipt_job = models.UUIDField(null=True)
    receipt_sent = models.BooleanField(default=False)
