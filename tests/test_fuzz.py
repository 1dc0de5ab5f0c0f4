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


# -- a random run: fresh inputs every time ----------------------------------------------------

# Requests in one random run: enough for CI by default; FUZZ_REQUESTS=10000 for the long run
# (benchmarks/results/hardening.md). FUZZ_SEED=N replays a run that failed.
REQUESTS = int(os.environ.get("FUZZ_REQUESTS", "1500"))

# Beside the schema: the on-device app, the docs' files, attendance ids (prefixes) and Host headers.
EXTRA = (
    "/app/config.json?model={s}",
    "/app/models/{s}-0123456789abcdef.onnx",
    "/app/{s}",
    "/docs-assets/{s}",
    "/api/v1/attendance/sessions/{s}/report",
    "/api/v1/shadow/crops/{s}",
)


def _text(rng, n_max: int = 40) -> str:
    alphabet = "abcv0123456789*+,.-_/%\\:~ nanfINF" + "".join(chr(rng.randrange(0x20, 0x3000)) for _ in range(4))
    n = rng.choice([0, 1, 2, 3, 5, 12, n_max, 5000]) if rng.random() < 0.2 else rng.randrange(1, n_max)
    return "".join(rng.choice(alphabet) for _ in range(n))


@pytest.mark.slow
def test_random_seed_fuzz_no_5xx(tmp_path):
    """FUZZ_REQUESTS requests (1,500 by default) with inputs from a fresh random seed each run,
    valid and invalid, through every operation of the schema and the routes outside it: no answer
    may be a 5xx. A failure names the seed that reproduces it."""
    import random
    from urllib.parse import quote

    import httpx
    from hypothesis import seed as hypothesis_seed

    run_seed = int(os.environ.get("FUZZ_SEED") or random.SystemRandom().randrange(2**32))
    print(f"fuzz seed: {run_seed} (replay with FUZZ_SEED={run_seed} FUZZ_REQUESTS={REQUESTS})")
    rng = random.Random(run_seed)
    server_errors: list[str] = []
    sent = 0

    def note(method: str, target: str, status: int, body: str) -> None:
        nonlocal sent
        sent += 1
        if status >= 500:
            server_errors.append(f"{method} {target[:200]} -> {status} {body[:300]}")

    with running_server(tmp_path / "home", max_upload_mb=1.0, request_timeout_s=30, min_feedback=1) as (url, app):
        from emolens.store.keys import KeyStore

        _, admin = KeyStore(app.state.emolens.db_url).create("fuzz", "admin")
        operations = [r.ok() for r in schemathesis.openapi.from_url(f"{url}/openapi.json").get_all_operations()]
        per_operation = max(1, REQUESTS // 2 // len(operations))  # half through the schema, half beside it
        for operation in operations:
            cases = st.one_of(*(operation.as_strategy(m) for m in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)))

            @hypothesis_seed(run_seed)
            @settings(
                max_examples=per_operation,
                deadline=None,
                database=None,
                phases=[Phase.generate],
                suppress_health_check=list(HealthCheck),
            )
            @given(case=cases)
            def run(case) -> None:
                headers = {"X-API-Key": admin} if rng.random() < 0.8 else {}
                r = case.call(base_url=url, headers=headers, timeout=60)
                note(case.method, case.formatted_path, r.status_code, r.content[:300].decode(errors="replace"))

            try:
                run()
            except Exception as exc:  # a generation problem is not a server error; the requests made count
                print(f"{operation.label}: {type(exc).__name__}: {str(exc)[:200]}")
        with httpx.Client(base_url=url, timeout=60) as c:
            while sent < REQUESTS:
                target = rng.choice(EXTRA).format(s=quote(_text(rng), safe=""))
                headers = {"X-API-Key": admin} if rng.random() < 0.5 else {}
                if rng.random() < 0.1:  # a foreign or odd Host (printable ASCII: what a client can send)
                    headers["Host"] = "".join(c for c in _text(rng, 20) if "!" <= c <= "~") or "x"
                method = rng.choice(["GET", "GET", "GET", "POST"])
                try:
                    r = c.request(method, target, headers=headers)
                except httpx.HTTPError as exc:  # a request httpx itself refuses to send: not counted
                    print(f"not sent: {method} {target[:80]}: {exc}")
                    continue
                note(method, target, r.status_code, r.content[:300].decode(errors="replace"))
    print(f"fuzz seed {run_seed}: {sent} requests, {len(server_errors)} answered 5xx")
    assert sent >= REQUESTS
    assert not server_errors, f"fuzz seed {run_seed} (replay with FUZZ_SEED={run_seed}):\n" + "\n".join(
        server_errors[:20]
    )
