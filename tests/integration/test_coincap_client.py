"""The CoinCap client against a real HTTP server on 127.0.0.1 that misbehaves on demand."""

from __future__ import annotations

import socket

import pytest

from flows.coincap.client import CoinCapClient
from flows.coincap.credits import credits_for
from flows.coincap.redirects import origin, same_host
from flows.errors import ApiError, AuthError, QuotaExhausted
from flows.standin import Faults, StubServer
from tests.conftest import fast_settings


def fetch_all(client: CoinCapClient, path: str = "/markets") -> list[dict]:
    return [r for page in client.paginate(path) for r in page.records]


def test_pages_until_a_short_page_with_bearer_auth_and_exact_credits(settings, stub):
    with CoinCapClient(settings) as client:
        rows = fetch_all(client)
    assert len(rows) == 4500
    assert stub.stats.requests["/v3/markets"] == 3  # 2000 + 2000 + 500
    total = client.meter.total()
    assert total.calls == 3 and total.failed_calls == 0
    assert total.credits == stub.stats.credits  # the meter bills what the server bills
    assert total.credits >= 3 + credits_for(total.bytes) - 1


def test_survives_5xx_429_drops_truncation_and_garbage(settings, stub):
    stub.faults = Faults(p_5xx=0.1, p_429=0.05, retry_after_s=0.05, p_drop=0.05, p_truncate=0.05,
                         p_garbage=0.03, seed=3)  # fmt: skip
    sleeps: list[float] = []
    with CoinCapClient(settings, sleep=sleeps.append) as client:
        keys = set()
        for _ in range(6):  # many listings, so every fault kind fires
            keys |= {(r["exchangeId"], r["baseId"], r["quoteId"]) for r in fetch_all(client)}
    assert len(keys) == 4500
    assert client.meter.total().retries > 0 and stub.stats.statuses[429] > 0 and stub.stats.drops > 0
    assert 0.05 in sleeps, "Retry-After was honoured exactly"


def test_retry_after_does_not_use_up_attempts(tmp_path, stub):
    stub.faults = Faults(p_429=1.0, retry_after_s=0.01)
    s = fast_settings(tmp_path, stub.base_url, COINCAP_MAX_ATTEMPTS=2, COINCAP_MAX_RETRY_AFTER=0.05)
    sleeps: list[float] = []
    with CoinCapClient(s, sleep=sleeps.append) as client, pytest.raises(ApiError, match="rate limited"):
        client.get("/assets")
    # 3 x max_retry_after of waiting at 0.01 s each, then the 2 ordinary attempts
    assert sleeps.count(0.01) >= 10


@pytest.mark.parametrize("status", [403, 429])
def test_exhausted_quota_stops_at_once(settings, stub, status):
    stub.faults = Faults(quota_exhausted=True, quota_status=status)
    with CoinCapClient(settings) as client, pytest.raises(QuotaExhausted) as info:
        fetch_all(client)
    assert stub.stats.total_requests == 1, "never retry credits away"
    assert "quota exhausted" in str(info.value) and "\n" not in str(info.value)


def test_bad_key_stops_at_once(tmp_path, stub):
    s = fast_settings(tmp_path, stub.base_url, COINCAP_API_KEY="wrong")
    with CoinCapClient(s) as client, pytest.raises(AuthError, match="Set COINCAP_API_KEY"):
        client.get("/assets")
    assert stub.stats.total_requests == 1


def test_v2_deprecation_body_is_an_error_not_data(settings, stub):
    stub.faults = Faults(deprecated=True)
    with CoinCapClient(settings) as client, pytest.raises(ApiError, match="notice instead of data"):
        fetch_all(client)
    assert stub.stats.total_requests == 1


def test_unreachable_host_explains_itself(tmp_path):
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again: nothing listens there
    s = fast_settings(tmp_path, f"http://127.0.0.1:{port}/v3", COINCAP_MAX_ATTEMPTS=3)
    with CoinCapClient(s) as client, pytest.raises(ApiError) as info:
        client.get("/assets")
    assert "cannot connect" in str(info.value) and "COINCAP_API_BASE_URL" in str(info.value)


def test_wrong_base_url_says_so(tmp_path, stub):
    s = fast_settings(tmp_path, stub.base_url.removesuffix("/v3") + "/v2")
    with CoinCapClient(s) as client, pytest.raises(ApiError, match="404.*COINCAP_API_BASE_URL"):
        client.get("/assets")


def test_persistent_garbage_gives_up_with_a_hint(tmp_path, stub):
    stub.faults = Faults(p_garbage=1.0)
    s = fast_settings(tmp_path, stub.base_url, COINCAP_MAX_ATTEMPTS=3)
    with CoinCapClient(s) as client, pytest.raises(ApiError, match="not JSON.*COINCAP_API_BASE_URL"):
        client.get("/assets")
    assert stub.stats.total_requests == 3


def test_slow_server_times_out_and_retries(tmp_path, stub):
    stub.faults = Faults(delay_s=0.5)
    s = fast_settings(tmp_path, stub.base_url, COINCAP_READ_TIMEOUT=0.2, COINCAP_MAX_ATTEMPTS=2)
    with CoinCapClient(s) as client, pytest.raises(ApiError, match="read timeout"):
        client.get("/rates")


def test_backoff_grows_and_is_jittered(settings):
    client = CoinCapClient(settings.model_copy(update={"backoff_base_s": 1.0, "backoff_max_s": 8.0}))
    waits = [client._backoff(n) for n in range(1, 7)]
    assert 0.5 <= waits[0] <= 1.0 and 4.0 <= waits[4] <= 8.0 and waits[5] <= 8.0
    assert len({client._backoff(3) for _ in range(20)}) > 1


def test_fail_first_n_recovers(settings, stub: StubServer):
    stub.faults = Faults(fail_first_n=3)
    with CoinCapClient(settings) as client:
        data, _, _ = client.get("/rates")
    assert data and client.meter.total().retries == 3


@pytest.mark.parametrize(
    ("base", "target", "same"),
    [
        ("https://rest.coincap.io/v3", "https://rest.coincap.io/v3/assets?limit=1", True),
        ("https://rest.coincap.io/v3", "https://REST.coincap.io:443/v3/assets", True),
        ("https://rest.coincap.io/v3", "http://rest.coincap.io/v3/assets", False),  # a downgrade: the key in clear
        ("https://rest.coincap.io/v3", "https://rest.coincap.io:8443/v3/assets", False),
        ("https://rest.coincap.io/v3", "https://rest.coincap.io.evil.example/v3", False),
        ("https://rest.coincap.io/v3", "https://rest.coincap.io@evil.example/v3", False),
        ("https://rest.coincap.io/v3", "ftp://rest.coincap.io/v3", False),
        ("http://127.0.0.1:8765/v3", "https://127.0.0.1/v3/assets", True),  # an upgrade
        ("http://127.0.0.1:8765/v3", "http://localhost:8765/v3/assets", False),
    ],
)
def test_redirects_stay_on_the_base_urls_host(base, target, same):
    assert same_host(base, target) is same


def test_a_refused_redirect_names_the_host_never_its_credentials():
    assert origin("https://user:secret@evil.example:8443/x?apiKey=k") == "https://evil.example:8443"
    assert origin("http://[::1]:8080/v3") == "http://[::1]:8080"


def test_a_call_may_lower_the_body_cap(settings, stub):
    with CoinCapClient(settings) as client, pytest.raises(ApiError, match="more than 1,000 bytes"):
        client.get("/assets", {"limit": 50}, max_body_bytes=1000)
    assert stub.stats.total_requests == 1 and client.meter.total().calls == 1


def test_the_meter_follows_a_billing_header_above_the_byte_rule(settings, stub):
    stub.faults = Faults(bill_floor=9, billing_header="X-Credits-Used")
    with CoinCapClient(settings) as client:
        for _ in range(3):
            _, _, nbytes = client.get("/assets", {"limit": 1})
    assert credits_for(nbytes) == 1
    assert client.meter.total().credits == client.meter.spent == stub.stats.credits == 3 * 9
    assert client.meter.bill_floor == 9  # what a budget now reserves for a small answer
