"""The alert rules and the dashboard in ops/ load, do what they say, and name only metrics
the service exports; and the service's /metrics passes Prometheus' own lint.

promtool comes from Debian's prometheus package (.ci/run installs it); without it, the
promtool checks are skipped and the name checks still run.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import ROOT, Service

RULES = ROOT / "ops" / "prometheus" / "triage-rules.yml"
RULE_TESTS = ROOT / "ops" / "prometheus" / "triage-rules.test.yml"
DASHBOARD = ROOT / "ops" / "grafana" / "triage.json"
METRIC = re.compile(r"\btriage_[a-z0-9_]+")
PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool is not installed")
# What the issue asks the rules to catch, by the alert that catches it.
REQUIRED_ALERTS = {
    "TriageDown", "TriageNotReady",  # the service down or not ready
    "TriageOutboxFailures", "TriageOutboxStuck", "TriageOutboxBacklogGrowing",
    "TriagePageNotDelivered", "TriagePageFailed",
    "TriageEscalationPastLadder",
    "TriageSpoolNotEmpty",
    "TriageRotaGap", "TriageNobodyOnCall",
}


def promtool(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(  # noqa: S603 (promtool, with our own arguments)
        [PROMTOOL, *args], input=stdin, capture_output=True, text=True,
        timeout=60, check=False)


def rule_expressions(path: Path) -> list[str]:
    """Each `expr:` of a rules file, folded (`>-`) ones included. PyYAML is not a dependency,
    and the file's shape is ours: an expression is on its line or indented below it."""
    found: list[str] = []
    lines = path.read_text().splitlines()
    for i, line in enumerate(lines):
        head = re.match(r"^(\s*)expr:\s*(.*)$", line)
        if head is None:
            continue
        indent, rest = len(head.group(1)), head.group(2)
        if rest not in (">-", ">", "|", "|-"):
            found.append(rest)
            continue
        body = []
        for following in lines[i + 1:]:
            if following.strip() and len(following) - len(following.lstrip()) <= indent:
                break
            body.append(following.strip())
        found.append(" ".join(body))
    return found


def dashboard_expressions() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]


async def exported_names(svc: Service) -> tuple[set[str], str]:
    response = await svc.client.get("/metrics")
    assert response.status == 200
    text = await response.text()
    names = {s.name for f in text_string_to_metric_families(text) for s in f.samples}
    return names, text


@pytest.fixture
async def svc(start_service, fake_twilio) -> Service:
    return await start_service(fake_twilio)


async def test_every_metric_the_rules_and_dashboard_name_is_exported(svc: Service) -> None:
    names, _ = await exported_names(svc)
    rules, panels = rule_expressions(RULES), dashboard_expressions()
    assert len(rules) == 14 and len(panels) >= 20  # the parse found them all
    used = {m for expr in (*rules, *panels) for m in METRIC.findall(expr)}
    assert used - names == set()
    # And every figure the service exports is on the dashboard.
    families = {re.sub(r"_(total|bucket|sum|count|created)$", "", n) for n in names}
    on_dashboard = {re.sub(r"_(total|bucket|sum|count)$", "", m)
                    for expr in panels for m in METRIC.findall(expr)}
    assert families - on_dashboard == set()


def test_the_rules_raise_every_alert_the_issue_asks_for() -> None:
    alerts = set(re.findall(r"^\s*- alert: (\w+)$", RULES.read_text(), re.M))
    assert alerts >= REQUIRED_ALERTS
    assert 'up{job="triage"} == 0' in rule_expressions(RULES)


@needs_promtool
def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", "--lint=all", "--lint-fatal", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS: 14 rules found" in result.stdout


@needs_promtool
def test_the_rules_fire_as_their_unit_tests_say() -> None:
    # Each alert fires when it should, with its labels and its words, and not before.
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


@needs_promtool
async def test_the_scrape_passes_promtools_lint(svc: Service) -> None:
    await svc.sms("hello")
    await svc.outbox_idle()
    _, text = await exported_names(svc)
    result = promtool("check", "metrics", stdin=text)
    assert (result.returncode, result.stdout + result.stderr) == (0, "")
