"""User logins (docs/api.md 6.3), users in account databases, `users create`, failed-login
throttling."""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import json
import secrets
from collections.abc import Awaitable, Callable, Sequence
from contextlib import ExitStack
from typing import Any
from urllib.parse import quote, urlsplit

import aiohttp
import pytest
from aiohttp.test_utils import TestClient

from piston_vm.app import create_app
from piston_vm.cli.users import add_users_parser, main_users
from piston_vm.core import errors
from piston_vm.core.config import Settings
from piston_vm.storage.stores import Stores
from piston_vm.storage.users import UserStore, credential_hashes
from piston_vm.web.throttle import (
    LOGIN_THROTTLE,
    MAX_ADDRESS_FAILURES,
    MAX_FAILURES,
    Limit,
    LoginThrottle,
    install_login_throttle,
    login_keys,
)
from tests.conftest import MakeAccount, Tenant
from tests.helpers import HEX32, Api, JsonObject, assert_error, assert_success

USER_AUTH = "/v2/user_auth"
# The test server listens on 127.0.0.1; Linux answers on all of 127/8, so a client bound to
# this address is "another client" to the per-address throttle.
OTHER_ADDRESS = "127.0.0.2"

ClientFactory = Callable[..., Awaitable[TestClient]]  # type: ignore[type-arg]
MakeApi = Callable[..., Awaitable[Api]]


@pytest.fixture
def make_api(aiohttp_client: ClientFactory, settings: Settings) -> MakeApi:
    async def make(throttle: LoginThrottle | None = None) -> Api:
        app = create_app(settings)
        if throttle is not None:
            app[LOGIN_THROTTLE] = throttle
        install_login_throttle(app)
        return Api(await aiohttp_client(app))

    return make


@pytest.fixture
async def api(make_api: MakeApi) -> Api:
    """Logins that are not about throttling must not trip it: a throttle that never blocks."""
    return await make_api(LoginThrottle(limit_scale=10_000))


@pytest.fixture
async def throttled_api(make_api: MakeApi) -> Api:
    """The app exactly as create_app + install_login_throttle build it."""
    return await make_api()


def tag() -> str:
    return secrets.token_hex(4)


def md5(text: str) -> str:
    return hashlib.md5(text.encode()).hexdigest()


def sha1(text: str) -> str:
    return hashlib.sha1(text.encode()).hexdigest()


def claims_of(token: str) -> JsonObject:
    assert token.count(".") == 2
    payload = token.split(".")[1]
    decoded: JsonObject = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    return decoded


async def make_user(stores: Stores, tenant: Tenant, username: str = "alice",
                    password: str = "s3cret!", **extra: Any) -> JsonObject:
    return await UserStore(stores.couch).create(tenant.id, username, password, extra=extra)


async def login(api: Api, data: JsonObject, **kwargs: Any) -> tuple[aiohttp.ClientResponse, Any]:
    return await api.call("PUT", USER_AUTH, data=data, **kwargs)


async def login_from(api: Api, address: str, data: JsonObject) -> tuple[int, Any]:
    connector = aiohttp.TCPConnector(local_addr=(address, 0))
    async with aiohttp.ClientSession(connector=connector) as session, session.put(
        api.client.make_url(USER_AUTH), json={"data": data}
    ) as resp:
        return resp.status, await resp.json()


def assert_invalid(resp: aiohttp.ClientResponse, body: Any) -> None:
    assert assert_error(resp, body, 401, "invalid_credentials") == {
        "message": "invalid credentials"}
    assert "auth_token" not in body


async def unique_account(make_account: MakeAccount, **extra: Any) -> Tenant:
    return await make_account(name=f"Acme Corp {tag()}", realm=f"{tag()}.Example.NET", **extra)


# -- logging in ----------------------------------------------------------------------------


async def test_md5_login_by_account_name(
    api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    tenant = await unique_account(make_account)
    user = await make_user(stores, tenant)
    name = tenant.account.name
    assert name is not None
    resp, body = await login(api, {"credentials": md5("alice:s3cret!"), "account_name": name,
                                   "method": "md5"})
    data = assert_success(resp, body, 201)
    assert list(data) == ["account_id", "owner_id", "account_name", "language", "is_reseller",
                          "reseller_id", "apps"]
    assert data == {"account_id": tenant.id, "owner_id": user["_id"], "account_name": name,
                    "language": "en-us", "is_reseller": False, "reseller_id": tenant.id,
                    "apps": []}
    claims = claims_of(body["auth_token"])
    assert claims["account_id"] == tenant.id
    assert claims["owner_id"] == user["_id"]
    assert claims["method"] == "cb_user_auth"
    assert claims["exp"] - claims["iat"] == 3600
    # The name is matched on its [a-z0-9] form; method defaults to md5; hex case is ignored.
    resp, body = await login(api, {"credentials": md5("alice:s3cret!").upper(),
                                   "account_name": name.upper().replace(" ", "-")})
    assert assert_success(resp, body, 201)["owner_id"] == user["_id"]


async def test_username_case_is_whatever_was_hashed(
    api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    tenant = await unique_account(make_account)
    await make_user(stores, tenant, "Bob", "pw")
    await make_user(stores, tenant, "carol", "pw")
    name = tenant.account.name
    # The SDKs hash the username as typed; the browser UI lowercases it first.
    resp, body = await login(api, {"credentials": md5("Bob:pw"), "account_name": name})
    assert_success(resp, body, 201)
    resp, body = await login(api, {"credentials": md5("bob:pw"), "account_name": name})
    assert_invalid(resp, body)
    resp, body = await login(api, {"credentials": md5("carol:pw"), "account_name": name})
    assert_success(resp, body, 201)


async def test_sha_login_by_realm_and_account_realm(
    api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    tenant = await unique_account(make_account)
    user = await make_user(stores, tenant)
    realm = tenant.account.realm
    assert realm is not None
    sha = sha1("alice:s3cret!")
    for field, value in (("realm", realm), ("account_realm", realm.lower()),
                         ("account_realm", realm.upper())):
        resp, body = await login(api, {"credentials": sha, "method": "sha", field: value})
        data = assert_success(resp, body, 201)
        assert (data["account_id"], data["owner_id"]) == (tenant.id, user["_id"])
        assert claims_of(body["auth_token"])["method"] == "cb_user_auth"
    # Each hash goes with its method.
    resp, body = await login(api, {"credentials": sha, "realm": realm})
    assert_invalid(resp, body)
    resp, body = await login(api, {"credentials": md5("alice:s3cret!"), "method": "sha",
                                   "realm": realm})
    assert_invalid(resp, body)


async def test_unknown_realm_falls_back_to_the_name(
    api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    tenant = await unique_account(make_account)
    await make_user(stores, tenant)
    resp, body = await login(api, {"credentials": md5("alice:s3cret!"),
                                   "account_realm": f"nowhere-{tag()}.example.net",
                                   "phone_number": "+14155550100",
                                   "account_name": tenant.account.name})
    assert assert_success(resp, body, 201)["account_id"] == tenant.id


async def test_failed_logins_are_401(api: Api, make_account: MakeAccount, stores: Stores) -> None:
    tenant = await unique_account(make_account)
    await make_user(stores, tenant)
    good = md5("alice:s3cret!")
    name = tenant.account.name
    for data in (
        {"credentials": md5("alice:wrong"), "account_name": name},
        {"credentials": good, "account_name": f"Nobody {tag()}"},
        {"credentials": good},  # no account identifier at all
        # Not supported (docs/decisions.md P-24).
        {"credentials": good, "phone_number": "+14155550100"},
        {"credentials": good, "account_name": name, "method": "sha256"},
        {"credentials": "", "account_name": name},
        {"credentials": 42, "account_name": name},
        {"credentials": good[:-1], "account_name": name},
    ):
        resp, body = await login(api, data)
        assert_invalid(resp, body)


async def test_missing_credentials_is_400(api: Api) -> None:
    expected = {"credentials": {"required": {"message": "Field is required but missing",
                                             "value": "credentials"}}}
    for data in ({"account_name": "Acme"}, {"credentials": None, "account_name": "Acme"}, {}):
        resp, body = await login(api, data)
        assert assert_error(resp, body, 400, "validation error") == expected


async def test_disabled_and_deleted_users_cannot_log_in(
    api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    tenant = await unique_account(make_account)
    await make_user(stores, tenant, "off", "pw", enabled=False)
    await make_user(stores, tenant, "gone", "pw", pvt_deleted=True)
    for username in ("off", "gone"):
        resp, body = await login(api, {"credentials": md5(f"{username}:pw"),
                                       "account_name": tenant.account.name})
        assert_invalid(resp, body)


@pytest.mark.parametrize("change", [{"enabled": False}, {"pvt_deleted": True}])
async def test_disabled_or_deleted_account_cannot_log_in(
    api: Api, make_account: MakeAccount, stores: Stores, change: JsonObject
) -> None:
    tenant = await unique_account(make_account)
    await make_user(stores, tenant)
    # Only the account's own doc changes: the `accounts` listing still names it.
    doc = await stores.couch.get_doc(tenant.db, tenant.id)
    assert doc is not None
    await stores.couch.put_doc(tenant.db, {**doc, **change})
    for data in ({"account_name": tenant.account.name}, {"realm": tenant.account.realm}):
        resp, body = await login(api, {"credentials": md5("alice:s3cret!"), **data})
        assert_invalid(resp, body)


async def test_every_account_of_a_shared_name_is_searched(
    api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    name = f"Twin {tag()}"
    first = await make_account(name=name, realm=None)
    second = await make_account(name=name.upper(), realm=None)
    user_one = await make_user(stores, first, "one", "pw")
    user_two = await make_user(stores, second, "two", "pw")
    for user, tenant, username in ((user_one, first, "one"), (user_two, second, "two")):
        resp, body = await login(api, {"credentials": md5(f"{username}:pw"), "account_name": name})
        data = assert_success(resp, body, 201)
        assert (data["account_id"], data["owner_id"]) == (tenant.id, user["_id"])


async def test_language_falls_back_from_user_to_account_to_default(
    api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    plain = await unique_account(make_account)
    german = await unique_account(make_account, language="de-de")
    cases = [(plain, {"language": "fr-fr"}, "fr-fr"), (plain, {}, "en-us"),
             (german, {"language": "fr-fr"}, "fr-fr"), (german, {}, "de-de"),
             (german, {"language": ""}, "de-de")]
    for tenant, fields, expected in cases:
        username = f"u{tag()}"
        await make_user(stores, tenant, username, "pw", **fields)
        resp, body = await login(api, {"credentials": md5(f"{username}:pw"),
                                       "account_name": tenant.account.name})
        assert assert_success(resp, body, 201)["language"] == expected


async def test_reseller_fields(api: Api, make_account: MakeAccount, stores: Stores) -> None:
    root = await unique_account(make_account)
    reseller = await unique_account(make_account, parent=root, pvt_reseller=True)
    customer = await unique_account(make_account, parent=reseller)
    plain_child = await unique_account(make_account, parent=root)
    pinned = await unique_account(make_account, parent=reseller, pvt_reseller_id="f" * 32)
    expected = {
        root.id: (False, root.id),  # empty tree: the account itself
        reseller.id: (True, root.id),  # no reseller above it: the tree's root
        customer.id: (False, reseller.id),  # the nearest reseller ancestor
        plain_child.id: (False, root.id),
        pinned.id: (False, "f" * 32),  # pvt_reseller_id wins
    }
    for tenant in (root, reseller, customer, plain_child, pinned):
        await make_user(stores, tenant)
        resp, body = await login(api, {"credentials": md5("alice:s3cret!"),
                                       "account_name": tenant.account.name})
        data = assert_success(resp, body, 201)
        assert (data["is_reseller"], data["reseller_id"]) == expected[tenant.id]


async def test_user_token_acts_on_the_account_and_stamps_the_user(
    api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    tenant = await unique_account(make_account)
    stranger = await unique_account(make_account)
    user = await make_user(stores, tenant)
    resp, body = await login(api, {"credentials": md5("alice:s3cret!"),
                                   "account_name": tenant.account.name})
    token = body["auth_token"]
    resp, body = await api.call("PUT", f"/v2/accounts/{tenant.id}/vmboxes", token,
                                {"name": "Front desk", "mailbox": "100"})
    box = assert_success(resp, body, 201)
    stored = await stores.couch.get_doc(tenant.db, box["id"])
    assert stored is not None
    assert stored["pvt_auth_user_id"] == user["_id"]
    assert stored["pvt_auth_account_id"] == tenant.id
    resp, body = await api.call("GET", f"/v2/accounts/{tenant.id}/vmboxes/{box['id']}", token)
    assert assert_success(resp, body)["name"] == "Front desk"
    resp, body = await api.call("GET", f"/v2/accounts/{stranger.id}/vmboxes", token)
    assert_error(resp, body, 403, "forbidden")


async def test_a_token_sent_to_user_auth_is_ignored(
    api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    tenant = await unique_account(make_account)
    await make_user(stores, tenant)
    data = {"credentials": md5("alice:s3cret!"), "account_name": tenant.account.name}
    for sent in ("", "not-a-token", tenant.token[:-3] + "abc"):
        resp, body = await login(api, data, headers={"X-Auth-Token": sent})
        assert_success(resp, body, 201)
        assert body["auth_token"] != sent
        assert claims_of(body["auth_token"])["method"] == "cb_user_auth"
    resp, body = await login(api, {**data, "credentials": md5("x:y")},
                             headers={"X-Auth-Token": "stale"})
    assert_invalid(resp, body)


# -- throttling ----------------------------------------------------------------------------


def assert_throttled(status: int, body: Any, retry_after: str | None = None,
                     window_s: float = 60) -> None:
    assert status == 429, body
    assert body["status"] == "error"
    assert body["error"] == "429"
    assert body["message"] == "too_many_requests"
    assert body["data"] == {"message": "too many failed logins"}
    assert "auth_token" not in body
    if retry_after is not None:
        assert 1 <= int(retry_after) <= window_s


async def test_five_failures_then_429_until_the_window_passes(
    make_api: MakeApi, make_account: MakeAccount, stores: Stores
) -> None:
    api = await make_api(LoginThrottle(window_s=1.0))
    tenant = await unique_account(make_account)
    await make_user(stores, tenant)
    name = tenant.account.name
    wrong = {"credentials": md5("alice:guess"), "account_name": name}
    for _ in range(5):
        resp, body = await login(api, wrong)
        assert_invalid(resp, body)
    resp, body = await login(api, wrong)
    assert_error(resp, body, 429, "too_many_requests")
    assert_throttled(resp.status, body, resp.headers["Retry-After"], window_s=1)
    assert resp.headers["Access-Control-Allow-Origin"] == "*"
    # The right password from the same address is refused too: a 201 here would confirm guesses.
    resp, body = await login(api, {**wrong, "credentials": md5("alice:s3cret!")})
    assert_throttled(resp.status, body)
    await asyncio.sleep(1.1)
    resp, body = await login(api, wrong)
    assert_invalid(resp, body)
    resp, body = await login(api, {**wrong, "credentials": md5("alice:s3cret!")})
    assert_success(resp, body, 201)


async def test_retry_after_counts_down_from_the_window(
    throttled_api: Api, make_account: MakeAccount
) -> None:
    tenant = await unique_account(make_account)
    wrong = {"credentials": md5("x:y"), "account_name": tenant.account.name}
    for _ in range(5):
        await login(throttled_api, wrong)
    resp, body = await login(throttled_api, wrong)
    assert_throttled(resp.status, body, resp.headers["Retry-After"])
    assert 55 <= int(resp.headers["Retry-After"]) <= 60


async def test_one_users_failures_do_not_lock_out_others(
    throttled_api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    tenant = await unique_account(make_account)
    await make_user(stores, tenant, "alice", "pw")
    await make_user(stores, tenant, "bob", "pw")
    name = tenant.account.name
    for _ in range(6):
        status, body = await login_from(throttled_api, OTHER_ADDRESS,
                                        {"credentials": md5("alice:guess"), "account_name": name})
    assert_throttled(status, body)
    # Another user (and alice's right password, a different hash) from another address.
    for username in ("bob", "alice"):
        resp, body = await login(throttled_api, {"credentials": md5(f"{username}:pw"),
                                                 "account_name": name})
        assert_success(resp, body, 201)


async def test_failures_behind_one_address_block_only_that_tenant(
    throttled_api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    # Five bad logins for one tenant behind a NAT: that tenant's logins from there wait, and
    # nobody else's do (another tenant, API keys, the same tenant elsewhere).
    tenant = await unique_account(make_account)
    other = await unique_account(make_account)
    await make_user(stores, tenant, "alice", "pw")
    await make_user(stores, other, "carol", "pw")
    name = tenant.account.name
    for guess in range(5):
        resp, body = await login(throttled_api, {"credentials": md5(f"alice:{guess}"),
                                                 "account_name": name})
        assert_invalid(resp, body)
    resp, body = await login(throttled_api, {"credentials": md5("alice:pw"), "account_name": name})
    assert_throttled(resp.status, body, resp.headers["Retry-After"])
    resp, body = await login(throttled_api, {"credentials": md5("carol:pw"),
                                             "account_name": other.account.name})
    assert_success(resp, body, 201)
    resp, body = await throttled_api.call("PUT", "/v2/api_auth", data={"api_key": tenant.api_key})
    assert_success(resp, body, 201)
    status, body = await login_from(throttled_api, OTHER_ADDRESS,
                                    {"credentials": md5("alice:pw"), "account_name": name})
    assert status == 201, body


async def test_the_address_limit_spans_tenants_and_endpoints(
    make_api: MakeApi, make_account: MakeAccount, stores: Stores
) -> None:
    api = await make_api(LoginThrottle())
    tenant = await unique_account(make_account)
    await make_user(stores, tenant, "alice", "pw")
    # A guessing run over many tenants and API keys: never five for one tenant, but the address
    # reaches its limit and everything from it waits.
    for n in range(MAX_ADDRESS_FAILURES // 2):
        await login(api, {"credentials": md5("x:y"), "account_name": f"nobody {n}"})
        await api.call("PUT", "/v2/api_auth", data={"api_key": f"{n:064x}"})
    resp, body = await api.call("PUT", "/v2/api_auth", data={"api_key": tenant.api_key})
    assert_throttled(resp.status, body, resp.headers["Retry-After"])
    status, body = await login_from(api, OTHER_ADDRESS, {"credentials": md5("alice:pw"),
                                                         "account_name": tenant.account.name})
    assert status == 201, body


async def test_successes_never_count(
    throttled_api: Api, make_account: MakeAccount, stores: Stores
) -> None:
    tenant = await unique_account(make_account)
    await make_user(stores, tenant, "alice", "pw")
    good = {"credentials": md5("alice:pw"), "account_name": tenant.account.name}
    for _ in range(4):
        resp, body = await login(throttled_api, {**good, "credentials": md5("alice:nope")})
        assert_invalid(resp, body)
    for _ in range(8):
        resp, body = await login(throttled_api, good)
        assert_success(resp, body, 201)
    resp, body = await throttled_api.call("PUT", "/v2/api_auth", data={"api_key": tenant.api_key})
    assert_success(resp, body, 201)
    # 400s are not failed logins either.
    for _ in range(3):
        resp, body = await login(throttled_api, {"account_name": tenant.account.name})
        assert_error(resp, body, 400, "validation error")
    resp, body = await login(throttled_api, {**good, "credentials": md5("alice:nope")})
    assert_invalid(resp, body)
    resp, body = await login(throttled_api, good)
    assert_throttled(resp.status, body)


async def test_api_auth_is_throttled(throttled_api: Api, account: Tenant) -> None:
    for _ in range(5):
        resp, body = await throttled_api.call("PUT", "/v2/api_auth", data={"api_key": "f" * 64})
        assert_error(resp, body, 401, "invalid_credentials")
    resp, body = await throttled_api.call("PUT", "/v2/api_auth", data={"api_key": "f" * 64})
    assert_throttled(resp.status, body, resp.headers["Retry-After"])


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def fail(throttle: LoginThrottle, keys: Sequence[Limit]) -> None:
    with pytest.raises(errors.ApiError), throttle.attempt(keys):
        raise errors.invalid_credentials()


def test_throttle_window_slides() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(window_s=10, clock=clock)
    keys = [(b"one login", 3)]
    for step in range(3):
        fail(throttle, keys)
        clock.now += 2 if step < 2 else 1
    # Failures at 1000, 1002, 1004; now 1005: blocked until the first leaves the window.
    assert throttle.retry_after_s(keys) == pytest.approx(5)
    with pytest.raises(errors.ApiError) as blocked, throttle.attempt(keys):
        pass
    assert blocked.value.headers == {"Retry-After": "5"}
    clock.now = 1010.5
    fail(throttle, keys)  # allowed: only 1002 and 1004 are inside the window
    assert throttle.retry_after_s(keys) == pytest.approx(1.5)
    clock.now = 1012.0
    with throttle.attempt(keys):  # a success: allowed, and not counted
        pass
    assert throttle.retry_after_s(keys) == 0


def test_throttle_counts_attempts_in_flight() -> None:
    throttle = LoginThrottle(clock=FakeClock())
    keys = [(b"one login", 2)]
    with ExitStack() as in_flight:
        # Two concurrent attempts hold the two slots; a third must wait for them to end.
        in_flight.enter_context(throttle.attempt(keys))
        in_flight.enter_context(throttle.attempt(keys))
        with pytest.raises(errors.ApiError), throttle.attempt(keys):
            pass
    assert throttle.retry_after_s(keys) == 0
    assert len(throttle) == 0


def test_throttle_memory_is_bounded() -> None:
    clock = FakeClock()
    throttle = LoginThrottle(max_keys=50, window_s=10, clock=clock)
    for address in range(200):
        fail(throttle, login_keys(f"10.0.{address}.1", ("user_auth", "acme"), "same"))
    assert len(throttle) <= 50
    clock.now += 11
    fail(throttle, login_keys("10.9.9.9", (), "other"))
    assert len(throttle) == 2  # every expired key is gone (an API key: identity + address)


def test_a_tenants_failures_count_per_address_and_the_address_limit_is_high() -> None:
    alice = login_keys("10.0.0.1", ("user_auth", "acme"), "guess")
    other_tenant = login_keys("10.0.0.1", ("user_auth", "globex"), "right")
    other_address = login_keys("10.0.0.2", ("user_auth", "acme"), "right")
    assert alice[1] != other_tenant[1]
    assert alice[1] != other_address[1]
    assert alice[2] == other_tenant[2]  # the address key is shared by every tenant behind it
    assert [limit for _, limit in alice] == [MAX_FAILURES, MAX_FAILURES, MAX_ADDRESS_FAILURES]


def test_install_is_idempotent(settings: Settings) -> None:
    app = create_app(settings)
    install_login_throttle(app)
    first = app[LOGIN_THROTTLE]
    install_login_throttle(app)
    assert app[LOGIN_THROTTLE] is first


# -- users create --------------------------------------------------------------------------


def cli_args(settings: Settings, *argv: str) -> argparse.Namespace:
    assert settings.couchdb is not None
    endpoint = settings.couchdb
    parts = urlsplit(endpoint.url)
    login_part = f"{quote(endpoint.user or '', safe='')}:{quote(endpoint.password or '', safe='')}"
    url = f"{parts.scheme}://{login_part}@{parts.netloc}{parts.path}"
    parser = argparse.ArgumentParser()
    add_users_parser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["users", "create", *argv, "--couchdb-url", url])


async def test_cli_creates_a_user_who_can_log_in(
    api: Api, make_account: MakeAccount, stores: Stores, settings: Settings,
    capsys: pytest.CaptureFixture[str],
) -> None:
    tenant = await unique_account(make_account)
    args = cli_args(settings, "--account", tenant.id, "--username", "dora", "--password", "pa:ss",
                    "--first-name", "Dora", "--last-name", "Explorer", "--language", "es-es",
                    "--timezone", "Europe/Madrid")
    assert await asyncio.to_thread(main_users, args) == 0
    printed = json.loads(capsys.readouterr().out)
    assert list(printed) == ["user_id"]
    user_id = printed["user_id"]
    assert HEX32.match(user_id)
    doc = await stores.couch.get_doc(tenant.db, user_id)
    assert doc is not None
    md5_hex, sha1_hex = credential_hashes("dora", "pa:ss")
    assert md5_hex == md5("dora:pa:ss")
    assert sha1_hex == sha1("dora:pa:ss")
    assert {k: v for k, v in doc.items() if k not in ("_rev", "pvt_created", "pvt_modified")} == {
        "_id": user_id, "username": "dora", "first_name": "Dora", "last_name": "Explorer",
        "timezone": "Europe/Madrid", "language": "es-es", "enabled": True, "pvt_type": "user",
        "pvt_md5_auth": md5_hex, "pvt_sha1_auth": sha1_hex, "pvt_account_id": tenant.id,
        "pvt_account_db": tenant.account.db.encoded, "pvt_vsn": "1",
    }
    assert isinstance(doc["pvt_created"], int)
    assert doc["pvt_created"] == doc["pvt_modified"] > 63_000_000_000
    assert "pa:ss" not in json.dumps(doc)
    resp, body = await login(api, {"credentials": sha1_hex, "method": "sha",
                                   "realm": tenant.account.realm})
    data = assert_success(resp, body, 201)
    assert (data["owner_id"], data["language"]) == (user_id, "es-es")


async def test_cli_refuses_an_unknown_account(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    for account_id in ("0" * 32, "not-an-id"):
        args = cli_args(settings, "--account", account_id, "--username", "u", "--password", "p")
        assert await asyncio.to_thread(main_users, args) == 2
        assert capsys.readouterr().out == ""
