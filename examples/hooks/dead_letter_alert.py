"""The hooks page's dead-letter alert, runnable: a message when a job fails its last attempt
(and so moves to the dead-letter queue), never on the attempts before it.

    SONIQ_DATABASE_URL=postgresql://localhost/myapp python examples/hooks/dead_letter_alert.py

Without SONIQ_DATABASE_URL, Soniq starts an embedded PostgreSQL (pip install 'soniq[embedded]').
Everything between the two ``---`` markers is the page's code, unchanged. ``send_slack_message``
is a stand-in that prints and keeps the messages in ``sent_messages``; replace it with your Slack
client (for example slack_sdk's ``AsyncWebClient.chat_postMessage``).
"""

import asyncio

from soniq import Soniq

app = Soniq()

sent_messages: list[str] = []


async def send_slack_message(text: str) -> None:
    """Stand-in for a real Slack call."""
    sent_messages.append(text)
    print(f"[slack] {text}")


# --- from the hooks page, "Slack alerting on dead-letter" ---
@app.on_error
async def alert_on_final_failure(job_name, job_id, error, attempt):
    # Look up the job's max_attempts from the registry
    job_meta = app._get_job_registry().get_job(job_name)
    if job_meta and attempt >= job_meta["max_retries"] + 1:
        await send_slack_message(f"Job {job_name} ({job_id}) moved to dead-letter queue: {error}")


# --- end of the page's code ---

_sync_attempts: list[int] = []


@app.job(max_retries=2, retry_backoff=0)
async def charge_card(order_id: int) -> None:
    raise RuntimeError(f"card declined for order {order_id}")


@app.job(max_retries=2, retry_backoff=0)
async def sync_inventory() -> str:
    _sync_attempts.append(1)
    if len(_sync_attempts) < 3:
        raise ConnectionError("warehouse API timed out")
    return "synced on the last attempt"


async def main() -> dict[str, str]:
    """A charge that fails all 3 attempts (one alert) and a sync that recovers (no alert)."""
    try:
        await app.setup()
        ids = {
            "charge_card": await app.enqueue(charge_card, order_id=42),
            "sync_inventory": await app.enqueue(sync_inventory),
        }
        await app.run_worker(run_once=True, install_signal_handlers=False)
        return ids
    finally:
        await app.close()


if __name__ == "__main__":
    asyncio.run(main())
