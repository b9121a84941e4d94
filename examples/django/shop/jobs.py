"""The shop's jobs; Soniq's Django app imports every installed app's ``jobs`` module at start."""

from __future__ import annotations

from soniq import Unique
from soniq.contrib.django import app

from .models import Order


@app.job(name="shop.send_receipt", queue="receipts", max_retries=2)
def send_receipt(order_id: int) -> str:
    # A plain def: the worker runs it in a thread, where the Django ORM works as in a view.
    order = Order.objects.get(pk=order_id)
    Order.objects.filter(pk=order_id).update(receipt_sent=True)
    return f"receipt: {order.quantity} x {order.item}"


@app.job(
    name="shop.restock",
    queue="stock",
    unique=Unique(key=lambda args: args["item"], on_conflict="raise"),
)
def restock(item: str) -> str:
    # One restock order per item while one is queued or running: a second raises DuplicateJob.
    return f"restock ordered: {item}"
