"""Celery tasks for webhook deliveries: thin, idempotent (an attempt is claimed with a
compare-and-set, so a duplicate task does nothing), and the only place anything is sent."""

from celery import shared_task

from webhooks import services


@shared_task(acks_late=True)
def delivery_send(delivery_id: int) -> bool:
    """One attempt; a retry is a new task scheduled after the backoff."""
    retry_in = services.delivery_attempt(delivery_id=delivery_id)
    if retry_in is not None:
        delivery_send.apply_async(args=(delivery_id,), countdown=retry_in)
    return retry_in is None


@shared_task(acks_late=True)
def delivery_sweep() -> int:
    """Re-enqueue pending deliveries that are due; run it periodically (celery beat)."""
    due = services.deliveries_due()
    for delivery_id in due:
        delivery_send.delay(delivery_id)
    return len(due)
