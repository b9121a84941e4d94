"""An order and its receipt job, written in one transaction."""

from __future__ import annotations

import json

from django.db import transaction
from django.http import HttpRequest, JsonResponse
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from soniq.contrib.django import app

from .jobs import send_receipt
from .models import Order

STOCK = {"book": 10, "lamp": 3}


class OutOfStock(Exception):
    pass


@csrf_exempt
@require_POST
def create_order(request: HttpRequest) -> JsonResponse:
    data = json.loads(request.body)
    try:
        with transaction.atomic():
            order = Order.objects.create(item=data["item"], quantity=int(data["quantity"]))
            # On Django's connection, in this transaction: committed with the order or rolled
            # back with it, and the workers hear of it at commit.
            job_id = app.enqueue_sync(send_receipt, order_id=order.pk)
            Order.objects.filter(pk=order.pk).update(receipt_job=job_id)
            if order.quantity > STOCK.get(order.item, 0):
                raise OutOfStock(order.item)  # after the enqueue: both are rolled back
    except OutOfStock as exc:
        return JsonResponse({"error": f"not enough {exc} in stock"}, status=409)
    return JsonResponse({"order_id": order.pk, "job_id": job_id}, status=201)


@require_GET
def order_detail(request: HttpRequest, order_id: int) -> JsonResponse:
    order = Order.objects.get(pk=order_id)
    return JsonResponse({"item": order.item, "receipt_sent": order.receipt_sent})
