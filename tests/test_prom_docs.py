"""docs/metrics.md stays true: its table names every family the code exposes, and its example
alerts are rules Prometheus accepts (checked by promtool)."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from soniq import Soniq
from soniq_prom import metrics_of, render_async
from tests.support.programs import require_program
from tests.support.waiting import running_worker

DOC = Path(__file__).resolve().parent.parent / "docs" / "metrics.md"


def _doc() -> str:
    return DOC.read_text()


async def test_the_table_documents_every_family_with_its_type(app: Soniq) -> None:
    @app.job(name="j")
    async def j() -> None:
        pass

    app.instrument(prometheus=True)
    async with running_worker(app):
        text = (await render_async(app)).body.decode()
    layer = metrics_of(app)
    assert layer is not None
    await layer.close()
    exposed = {
        f.name + ("_total" if f.type == "counter" else ""): f.type
        for f in text_string_to_metric_families(text)
        if not f.name.endswith("_created")
    }
    rows = re.findall(r"^\| `(soniq_\w+)` \| (\w+) \|", await asyncio.to_thread(_doc), re.M)
    assert dict(rows) == exposed


async def test_the_example_alerts_pass_promtool(tmp_path: Path) -> None:
    promtool_path = require_program("promtool", "prometheus")
    doc = await asyncio.to_thread(_doc)
    rules = re.search(r"```yaml\n(groups:.*?)```", doc, re.S)
    assert rules is not None
    path = tmp_path / "rules.yml"
    path.write_text(rules.group(1))
    promtool = await asyncio.create_subprocess_exec(
        promtool_path,
        "check",
        "rules",
        str(path),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    report, _ = await asyncio.wait_for(promtool.communicate(), 60)
    assert promtool.returncode == 0, report.decode()
    assert b"SUCCESS: 8 rules found" in report
