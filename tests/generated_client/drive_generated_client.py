#!/usr/bin/env python3
"""Generate a Python client from carepay's OpenAPI document with openapi-python-client
(PyPI), then use it, as a facility's IT department would, against a running carepay:
every operation the generator covers is called, and what each one created is read back.

Usage: drive_generated_client.py FIXTURE_JSON WORK_DIR

FIXTURE_JSON holds what the Rust side prepared: the base URL, an admin token, the
document, wallets the sandbox operator has open, a statement file, citizen ID numbers and
terminal keys. The last line printed is a JSON report the Rust test checks.
"""

import datetime
import importlib
import json
import pkgutil
import subprocess
import sys
import time
from pathlib import Path

import httpx
from openapi_spec_validator import validate

PACKAGE = "carepay_client"


def generate(document_path: Path, work: Path) -> None:
    validate(json.loads(document_path.read_text()))
    out = work / PACKAGE
    result = subprocess.run(
        [sys.executable, "-m", "openapi_python_client", "generate", "--path", str(document_path),
         "--output-path", str(out), "--meta", "none", "--overwrite"],
        capture_output=True, text=True, check=False,
    )
    if result.returncode != 0:
        sys.exit(f"openapi-python-client failed:\n{result.stdout}\n{result.stderr}")
    sys.path.insert(0, str(work))


class Driver:
    def __init__(self, fixture: dict):
        self.fixture = fixture
        self.base = fixture["base_url"]
        self.client_mod = importlib.import_module(f"{PACKAGE}.client")
        self.models = importlib.import_module(f"{PACKAGE}.models")
        self.called: set[str] = set()

    def client(self, token: str):
        return self.client_mod.AuthenticatedClient(base_url=self.base, token=token, raise_on_unexpected_status=True,
                                                   timeout=httpx.Timeout(30.0))

    def model(self, name: str, data: dict):
        return getattr(self.models, name).from_dict(data)

    def call(self, operation: str, token: str, expect: int | set[int], **kwargs):
        """Call `api.<tag>.<operation>` with the generated client; returns the parsed answer."""
        tag, name = operation.split(".")
        module = importlib.import_module(f"{PACKAGE}.api.{tag}.{name}")
        response = module.sync_detailed(client=self.client(token), **kwargs)
        expected = {expect} if isinstance(expect, int) else expect
        if int(response.status_code) not in expected:
            sys.exit(f"{operation}: {int(response.status_code)} (wanted {sorted(expected)}): {response.content[:500]!r}")
        self.called.add(operation)
        return response.parsed

    def raw(self, method: str, path: str, token: str, expect: int, **kwargs) -> httpx.Response:
        """An operation the generator does not cover (a text/csv request body)."""
        response = httpx.request(method, self.base + path, headers={"authorization": f"Bearer {token}",
                                                                     **kwargs.pop("headers", {})},
                                 timeout=30.0, **kwargs)
        if response.status_code != expect:
            sys.exit(f"{method} {path}: {response.status_code} (wanted {expect}): {response.text[:500]}")
        return response

    def covered_operations(self) -> set[str]:
        api = importlib.import_module(f"{PACKAGE}.api")
        found = set()
        for tag in pkgutil.iter_modules(api.__path__):
            package = importlib.import_module(f"{PACKAGE}.api.{tag.name}")
            found.update(f"{tag.name}.{op.name}" for op in pkgutil.iter_modules(package.__path__))
        return found


def main() -> None:
    fixture = json.loads(Path(sys.argv[1]).read_text())
    work = Path(sys.argv[2])
    generate(Path(fixture["document"]), work)
    d = Driver(fixture)
    root = fixture["token"]
    wallet = fixture["merchant_wallet"]
    report: dict = {}

    # Directory.
    district = d.call("directory.create_region", root, 201,
                      body=d.model("CreateRegionType0", {"level": "district", "name": "吴江区"}))
    town = d.call("directory.create_region", root, 201,
                  body=d.model("CreateRegionType1", {"parent_id": district.id, "level": "town", "name": "松陵街道"}))
    assert d.call("directory.get_region", root, 200, id=town.id).parent_id == district.id
    assert {r.id for r in d.call("directory.list_regions", root, 200, limit=200).items} >= {district.id, town.id}
    org = d.call("directory.create_organisation", root, 201,
                 body=d.model("CreateOrganisation", {"region_id": town.id, "name": "颐家养老"}))
    assert d.call("directory.get_organisation", root, 200, id=org.id).name == "颐家养老"
    assert org.id in {o.id for o in d.call("directory.list_organisations", root, 200).items}
    facility = d.call("directory.create_facility", root, 201, body=d.model("CreateFacility", {
        "region_id": town.id, "organisation_id": org.id, "name": "流虹助餐点", "kind": "meal_canteen",
        "merchant_wallet_id": wallet}))
    changed = d.call("directory.change_facility", root, 200, id=facility.id,
                     body=d.model("ChangeFacility", {"name": "流虹社区助餐点"}))
    assert changed.version == facility.version + 1
    assert d.call("directory.get_facility", root, 200, id=facility.id).name == "流虹社区助餐点"
    assert facility.id in {f.id for f in d.call("directory.list_facilities", root, 200).items}
    report.update(town=town.id, facility=facility.id)

    # Terminals.
    key, new_key = fixture["terminal_keys"]
    terminal = d.call("terminals.register_terminal", root, 201, body=d.model("RegisterTerminal", {
        "facility_id": facility.id, "label": "收银台 1", "public_key": key}))
    assert d.call("terminals.suspend_terminal", root, 200, id=terminal.id).status.value == "suspended"
    assert d.call("terminals.resume_terminal", root, 200, id=terminal.id).status.value == "active"
    rotated = d.call("terminals.rotate_terminal_key", root, 200, id=terminal.id,
                     body=d.model("RotateKey", {"public_key": new_key}))
    assert rotated.public_key == new_key and rotated.key_id != terminal.key_id
    assert d.call("terminals.get_terminal", root, 200, id=terminal.id).public_key == new_key
    assert [t.id for t in d.call("terminals.list_terminals", root, 200, facility_id=facility.id).items] == [terminal.id]
    report["terminal"] = terminal.id

    # Tokens.
    def issue(role: str, label: str):
        return d.call("tokens.issue_token", root, 201,
                      body=d.model("IssueToken", {"role": role, "region_id": town.id, "label": label}))
    clerk, approver, spare = issue("subsidy_clerk", "经办人"), issue("subsidy_approver", "审核人"), issue("auditor", "临时")
    assert d.call("tokens.get_token", root, 200, id=spare.token.id).label == "临时"
    assert d.call("tokens.revoke_token", root, 200, id=spare.token.id).status.value == "revoked"
    assert spare.token.id in {t.id for t in d.call("tokens.list_tokens", root, 200, limit=200).items}
    report["revoked_token"] = spare.token.id

    # Callbacks.
    created = d.call("callbacks.create_endpoint", root, 201, body=d.model("CreateEndpointType0", {
        "facility_id": facility.id, "url": fixture["callback_url"], "event_types": ["payment.succeeded"],
        "ed25519": True}))
    endpoint = created.endpoint
    assert created.secret.startswith("whsec_")
    changed = d.call("callbacks.change_endpoint", root, 200, id=endpoint.id, body=d.model("ChangeEndpoint", {
        "event_types": ["reconciliation.completed", "reconciliation.discrepancy_found"]}))
    assert sorted(t.value for t in changed.event_types) == ["reconciliation.completed", "reconciliation.discrepancy_found"]
    assert d.call("callbacks.get_endpoint", root, 200, id=endpoint.id).version == changed.version
    assert [e.id for e in d.call("callbacks.list_endpoints", root, 200, facility_id=facility.id).items] == [endpoint.id]
    rotated = d.call("callbacks.rotate_secret", root, 200, id=endpoint.id,
                     body=d.model("RotateSecret", {"overlap_seconds": 60}))
    assert rotated.secret != created.secret
    assert d.call("callbacks.public_key", root, 200, id=endpoint.id).public_key.startswith("whpk_")

    # Disbursement: a programme, a batch paid through the four-eyes flow, a failed line re-issued.
    programme = d.call("disbursement.create_programme", root, 201, body=d.model("CreateProgramme", {
        "region_id": town.id, "name": "高龄津贴", "funding_wallet_id": fixture["funding_wallet"],
        "budget": "1000.00", "per_payment_cap": "100.00", "per_period_cap": "100.00",
        "starts_on": "2026-01-01", "ends_on": "2026-12-31"}))
    assert d.call("disbursement.get_programme", root, 200, id=programme.id).budget == "1000.00"
    (paid_id, failed_id), (paid_wallet, missing_wallet) = fixture["citizen_ids"], fixture["payee_wallets"]

    def upload(key: str, period: str) -> str:
        file = f"姓名,身份证号,钱包编号,金额\n张三,{paid_id},{paid_wallet},10.00\n李四,{failed_id},{missing_wallet},20.00\n"
        reply = d.raw("POST", f"/v1/subsidy-programmes/{programme.id}/batches?period={period}&line_count=2&total=30.00",
                      clerk.secret, 201, headers={"idempotency-key": key, "content-type": "text/csv"},
                      content=file.encode())
        return reply.json()["id"]

    batch = upload("client-1", "2026-11")
    assert d.call("disbursement.get_batch", root, 200, id=batch).status.value == "draft"
    assert d.call("disbursement.approve_batch", approver.secret, 200, id=batch).status.value == "approved"
    assert d.call("disbursement.run_batch", clerk.secret, 200, id=batch).status.value in {"running", "completed"}
    for _ in range(600):
        state = d.call("disbursement.get_batch", root, 200, id=batch)
        if state.status.value == "completed":
            break
        time.sleep(0.1)
    assert state.status.value == "completed", state.status
    assert (state.progress.succeeded.lines, state.progress.failed.lines) == (1, 1)
    steps = [s.to.value for s in d.call("disbursement.batch_history", root, 200, id=batch)]
    assert steps == ["draft", "approved", "running", "completed"], steps
    lines = d.call("disbursement.batch_lines", clerk.secret, 200, id=batch, limit=10)
    failed = next(line for line in lines if line.status.value == "failed")
    reissued = d.call("disbursement.reissue_line", clerk.secret, 201, id=batch, seq=failed.seq,
                      body=d.model("Reissue", {"payee_name": "李四", "wallet_id": fixture["reissue_wallet"]}))
    assert reissued.reissue_of_seq == failed.seq and reissued.wallet_id == fixture["reissue_wallet"]
    revealed = d.call("disbursement.reveal_citizen_id", clerk.secret, 200, id=batch, seq=failed.seq)
    assert revealed.citizen_id == failed_id
    result = d.call("disbursement.batch_result", clerk.secret, 200, id=batch)
    assert result.count("\n") >= 3 and paid_wallet in result, result
    second = upload("client-2", "2026-10")
    assert d.call("disbursement.cancel_batch", clerk.secret, 200, id=second).status.value == "cancelled"
    third = upload("client-3", "2026-09")
    d.call("disbursement.approve_batch", approver.secret, 200, id=third)
    d.call("disbursement.run_batch", clerk.secret, 200, id=third)
    # It may finish before the pause arrives; then the pause is refused as too late.
    d.call("disbursement.pause_batch", clerk.secret, {200, 409}, id=third)
    report.update(batch=batch, reissued_seq=reissued.seq)

    # Reconciliation of the facility's wallet: the statement holds a line carepay never saw.
    today = datetime.date.fromisoformat(fixture["business_day"])
    d.raw("POST", "/v1/reconciliation/statements", root, 201, headers={"content-type": "text/csv"},
          content=Path(fixture["statement"]).read_bytes())
    run = d.call("reconciliation.run_day", root, 200, wallet_id=wallet, date=today)
    assert run.discrepancies_found == 1, run
    assert d.call("reconciliation.get_day", root, 200, wallet_id=wallet, date=today).run_id == run.run_id
    page = d.call("reconciliation.day_lines", root, 200, wallet_id=wallet, date=today, limit=50)
    assert len(page.items) >= 1 and page.items[0].seq >= 1
    csv = d.raw("GET", f"/v1/reconciliation/days/{wallet}/{today}/lines?format=csv", root, 200)
    assert csv.headers["content-type"].startswith("text/csv") and csv.text.startswith("seq,category")
    (open_one,) = d.call("reconciliation.day_discrepancies", root, 200, wallet_id=wallet, date=today)
    resolved = d.call("reconciliation.resolve_discrepancy", root, 200, id=open_one.id,
                      body=d.model("ResolveDiscrepancyType1", {"resolution": "timing", "note": "次日入账"}))
    assert resolved.status == "resolved" and resolved.note == "次日入账"
    d.call("reconciliation.close_day", root, 204, wallet_id=wallet, date=today)
    report["discrepancy"] = open_one.id

    # The run's callback events, their attempts, and replays.
    deliveries = d.call("callbacks.list_deliveries", root, 200, id=endpoint.id).items
    kinds = sorted(delivery.event_type.value for delivery in deliveries)
    assert "reconciliation.completed" in kinds, kinds
    d.call("callbacks.list_attempts", root, 200, id=endpoint.id, event_id=deliveries[0].event_id)
    replayed = d.call("callbacks.replay_event", root, 202, id=endpoint.id,
                      body=d.model("ReplayEvent", {"event_id": deliveries[0].event_id}))
    # A delivery still waiting for its first attempt is already queued: replaying adds nothing.
    assert replayed.queued == (0 if deliveries[0].status.value == "pending" else 1), (replayed, deliveries[0])
    d.call("callbacks.replay_failed", root, 202, id=endpoint.id,
           body=d.model("ReplayFailed", {"since": "2026-01-01T00:00:00+08:00"}))

    # The audit trail saw all of it, and its chain holds.
    records = d.call("audit.list_audit", root, 200, limit=200).items
    assert {"region.created", "batch.approved", "discrepancy.resolved"} <= {r.action for r in records}
    export = d.call("audit.export_audit", root, 200)
    assert export.startswith("seq,at,actor"), export[:100]
    assert d.call("audit.verify_audit", root, 200).intact is True

    covered = d.covered_operations()
    report["operations_covered"] = sorted(covered)
    report["operations_not_called"] = sorted(covered - d.called)
    print(json.dumps(report))


if __name__ == "__main__":
    main()
