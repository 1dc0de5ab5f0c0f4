"""An OpenAPI-driven fuzz run against the real server on loopback: every operation in the schema,
with generated valid and invalid inputs (schemathesis' positive and negative modes) and an admin
key. No answer may be a 5xx, and every answer must match what the schema documents for it
(status, content type, body).

Bounded so it fits the suite's budget: ``FUZZ_EXAMPLES`` per operation (15 by default; set the
environment variable for a longer run)."""

from __future__ import annotations

import os

import pytest

schemathesis = pytest.importorskip("schemathesis", reason="the fuzz run needs schemathesis (the test extra)")

from hypothesis import HealthCheck, Phase, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from schemathesis import GenerationMode  # noqa: E402
from schemathesis.checks import not_a_server_error  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from test_serve import running_server  # noqa: E402

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "15"))
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]


def test_openapi_fuzz_no_5xx_and_answers_match_the_schema(tmp_path):
    with running_server(tmp_path / "home", max_upload_mb=1.0, request_timeout_s=30, min_feedback=1) as (url, app):
        from emolens.store.keys import KeyStore

        _, admin = KeyStore(app.state.emolens.db_url).create("fuzz", "admin")
        schema = schemathesis.openapi.from_url(f"{url}/openapi.json")
        failures: list[str] = []
        operations = 0
        for result in schema.get_all_operations():
            operation = result.ok()
            operations += 1
            # Valid inputs and invalid ones (wrong types, out-of-range numbers, missing fields).
            modes = (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
            cases = st.one_of(*(operation.as_strategy(mode) for mode in modes))

            @settings(
                max_examples=EXAMPLES,
                deadline=None,
                database=None,
                derandomize=True,  # the same inputs on every run: a failure can be reproduced
                phases=[Phase.explicit, Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=cases)
            def run(case) -> None:
                case.call_and_validate(base_url=url, headers={"X-API-Key": admin}, checks=CHECKS, timeout=60)

            try:
                run()
            except (Exception, BaseExceptionGroup) as exc:  # collect every operation's failures, then report all
                failures.append(f"{operation.label}: {type(exc).__name__}: {str(exc)[:1500]}")
        print(f"operations: {operations}, examples each: {EXAMPLES}")
        assert operations >= 30
        assert not failures, "\n\n".join(failures)
