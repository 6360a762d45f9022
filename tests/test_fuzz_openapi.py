"""Fuzzing from Oxen's own OpenAPI document (tests/fixtures/oxen-hub-openapi-0.243.1.json, a copy of
the hub's 0.243.1 document) with schemathesis, against `flux-nb serve` on loopback with a
person's key: over the operations the stand-in implements, no 5xx, no request past its timeout,
and the server still answering afterwards. Bounded: a fixed seed, a case count per operation and
a time budget, so it adds seconds, not minutes, to the suite.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import httpx

from flux_nb.cli import main as cli
from flux_nb.core._recipe import MODEL_ID

OPENAPI = Path(__file__).parent / "fixtures" / "oxen-hub-openapi-0.243.1.json"
# The implemented operations: the queue (enqueue, list, get, cancel), the two sync image routes,
# and GET of a model. The document's other /api/ai/models/{id} methods are not implemented.
IMPLEMENTED = r"^/api/ai/(queue(/\{generation_id\})?|images/(generate|edit)|models/\{id\})$"
NOT_IMPLEMENTED_IDS = r"ModelsController\.(update|delete_custom_model)$"
CASES_PER_OPERATION = 25
TIME_BUDGET_SECONDS = 120  # the whole run; it takes about 10 s (--max-time would fuzz on to it)
REQUEST_TIMEOUT_SECONDS = 20


def test_schemathesis_from_oxens_openapi_finds_no_5xx_and_no_hang(
    tmp_path: Path, capsys, record_property
) -> None:
    keys = tmp_path / "keys.json"
    assert cli(["keys", "add", "fuzzer", "--keys-file", str(keys)]) == 0
    key = capsys.readouterr().out.splitlines()[-1]
    server = subprocess.Popen(
        [sys.executable, "-m", "flux_nb", "serve", "--port", "0", "--keys-file", str(keys)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        first = server.stdout.readline() if server.stdout else ""
        url = first.split(" on ")[1].split(",")[0]
        report = tmp_path / "report.json"
        fuzz = subprocess.run(
            [
                str(Path(sys.executable).with_name("schemathesis")), "run", str(OPENAPI),
                "--url", url,
                "--include-path-regex", IMPLEMENTED,
                "--exclude-operation-id-regex", NOT_IMPLEMENTED_IDS,
                "--checks", "not_a_server_error",
                "--max-examples", str(CASES_PER_OPERATION),
                "--request-timeout", str(REQUEST_TIMEOUT_SECONDS),
                "--seed", "21",
                "--workers", "1",
                "--generation-database", "none",
                "--header", f"Authorization: Bearer {key}",
                "--no-color",
                "--report", "json", "--report-json-path", str(report),
            ],
            capture_output=True,
            text=True,
            timeout=TIME_BUDGET_SECONDS * 3,
            cwd=tmp_path,  # its own files (reports) stay out of the checkout
        )  # fmt: skip
        assert fuzz.returncode == 0, fuzz.stdout[-6000:]
        result = json.loads(report.read_text())
        cases = result["test_cases"]
        assert result["operations"]["tested"] == 7, result["operations"]
        assert cases["with_failures"] == 0 and cases["errored"] == 0, result["failures"]
        assert cases["generated"] >= 100, cases
        record_property("fuzz_cases", cases["generated"])
        print(f"schemathesis: {cases['generated']} cases, {result['running_time']:.1f} s")

        # Still answering: a real generation goes through after the fuzzing.
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {key}"}, timeout=30
        ) as api:
            body = {"model": MODEL_ID, "prompt": "after the fuzz", "num_inference_steps": 2}
            gid = api.post("/api/ai/queue", json=body).json()["generations"][0]["generation_id"]
            deadline = time.monotonic() + 30
            while (row := api.get(f"/api/ai/queue/{gid}").json())["status"] != "succeeded":
                assert row["status"] in ("queued", "processing"), row
                assert time.monotonic() < deadline
                time.sleep(0.02)
    finally:
        server.terminate()
        _, err = server.communicate(timeout=30)
    assert key not in err  # the key never reaches the server's log
    assert "Traceback" not in err, err[-3000:]
