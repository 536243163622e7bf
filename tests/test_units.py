"""Pure code without I/O: names, time, tokens, validation, listing filters and cursors."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from piston_vm.core import gregorian, tokens
from piston_vm.core.listing import Cursor, build_filters, passes
from piston_vm.core.validation import SchemaValidator, field_path
from piston_vm.storage.names import DbName, message_month, months_between, previous_month

RAW = "4fbd1b3c0a6e11e8a1b2c3d4e5f60718"
UNENCODED = "account/4f/bd/1b3c0a6e11e8a1b2c3d4e5f60718"
ENCODED = "account%2F4f%2Fbd%2F1b3c0a6e11e8a1b2c3d4e5f60718"


@pytest.mark.parametrize("spelling", [RAW, UNENCODED, ENCODED, ENCODED.replace("%2F", "%2f")])
def test_account_db_names_convert_between_all_forms(spelling: str) -> None:
    name = DbName.parse(spelling)
    assert name.form("raw") == RAW
    assert name.unencoded == UNENCODED
    assert name.encoded == ENCODED


def test_modb_names_carry_their_month() -> None:
    modb = DbName.parse(ENCODED + "-202403")
    assert modb.month == (2024, 3)
    assert modb.unencoded == UNENCODED + "-202403"
    assert modb.form("raw") == RAW + "-202403"
    assert DbName.parse(RAW).modb(2016, 5).encoded == ENCODED + "-201605"
    with pytest.raises(ValueError, match="month"):
        DbName.parse(RAW + "-202413")
    with pytest.raises(ValueError, match="not an account"):
        DbName.parse("accounts")


def test_month_arithmetic_crosses_years() -> None:
    assert previous_month(2024, 1) == (2023, 12)
    assert months_between((2023, 11), (2024, 2)) == [(2023, 11), (2023, 12), (2024, 1),
                                                     (2024, 2)]
    assert months_between((2024, 2), (2024, 1)) == []


def test_message_ids_name_their_month() -> None:
    assert message_month("202403-0f1e2d3c4b5a69788796a5b4c3d2e1f0") == (2024, 3)
    assert message_month("201605-legacy_media_id") == (2016, 5)
    assert message_month("202413-abc") is None
    assert message_month("0f1e2d3c4b5a69788796a5b4c3d2e1f0") is None


def test_gregorian_seconds_match_the_worked_examples() -> None:
    assert gregorian.to_unix(63630058722) == 1462839522
    assert gregorian.iso8601(63630058722) == "2016-05-10T00:18:42Z"
    assert gregorian.utc_month(63630058722) == (2016, 5)
    assert gregorian.utc_month(63674208419) == (2017, 10)


def test_tokens_round_trip_and_reject_tampering() -> None:
    token = tokens.issue("s", RAW, "cb_user_auth", 60, owner_id="u" * 32)
    claims = tokens.verify(token, ("other", "s"))
    assert claims.account_id == RAW
    assert claims.owner_id == "u" * 32
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify(token, ("other",))
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify("a.b", ("s",))
    with pytest.raises(tokens.TokenExpired):
        tokens.verify(tokens.issue("s", RAW, "cb_api_auth", -1), ("s",))


def test_a_remembered_token_still_expires_and_a_forged_one_is_never_remembered(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    token = tokens.issue("s", RAW, "cb_api_auth", 60)
    assert tokens.verify(token, ("s",)).account_id == RAW  # verified once: remembered
    later = time.time() + 61
    monkeypatch.setattr(time, "time", lambda: later)
    with pytest.raises(tokens.TokenExpired) as expired:
        tokens.verify(token, ("s",))
    assert expired.value.args == (RAW,)
    # Another secret set is another question: the cached answer for ("s",) is not reused.
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify(token, ("other",))
    forged = token[:-2] + ("AA" if not token.endswith("AA") else "BB")
    for _ in range(2):
        with pytest.raises(tokens.TokenInvalid):
            tokens.verify(forged, ("s",))


def test_field_paths_escape_dots() -> None:
    assert field_path(["notify", "callback", "attempts"]) == "notify.callback.attempts"
    assert field_path(["notify_email_addresses", 0]) == "notify_email_addresses.0"
    assert field_path(["a.b"]) == "a%2Eb"


def test_schema_defaults_coercion_and_configurable_pin() -> None:
    validator = SchemaValidator(Path("schemas"), max_pin_length=8, transcribe_default=True)
    cleaned, errors = validator.validate(
        "vmboxes", {"name": "N", "mailbox": "1", "pin": "1234567", "hunt": "false"})
    assert errors == {}
    assert cleaned["hunt"] is False
    assert cleaned["transcribe"] is True
    assert cleaned["media"] == {}
    assert cleaned["seek_duration_ms"] == 10000
    _, errors = validator.validate("vmboxes", {"name": "N", "mailbox": "1", "pin": "123456789"})
    assert errors["pin"]["maxLength"]["target"] == 8


def test_filters() -> None:
    doc = {"type": "mainVMBox", "n": 5, "flag": True, "obj": {"a": 1}, "empty": "",
           "notify": {"callback": {"number": "55"}}, "pvt_created": 10, "pvt_modified": 20}

    def keeps(**query: str) -> bool:
        return passes(doc, build_filters(query))

    assert keeps(filter_type="mainVMBox")
    assert not keeps(filter_type="other")
    assert keeps(filter_not_type="other")
    assert keeps(filter_n="5")
    assert keeps(filter_flag="true")
    assert keeps(filter_missing="")
    assert not keeps(filter_obj="{}")
    assert keeps(filter_type='["x","mainVMBox"]')
    assert keeps(filter_type='"mainVMBox"')
    assert keeps(**{"filter_notify.callback.number": "55"})
    assert keeps(has_key="empty")
    assert not keeps(has_value="empty")
    assert keeps(value_missing="empty")
    assert keeps(missing_value="nothing")
    assert keeps(key_missing="nothing")
    assert not keeps(key_missing="type")
    assert keeps(created_from="10", created_to="10")
    assert not keeps(created_from="11")
    assert keeps(modified_to="20")
    assert not keeps(modified_to="19")
    assert passes({"metadata": {"folder": "new"}},
                  build_filters({"filter_folder": "new"}, prefix="metadata."))


def test_cursors_round_trip_and_foreign_start_keys_are_raw_keys() -> None:
    cursor = Cursor(["3a", 63630058722], "201605-abc", "201605")
    encoded = cursor.encode()
    assert "=" not in encoded
    assert "/" not in encoded
    assert "+" not in encoded
    assert Cursor.decode(encoded) == cursor
    assert Cursor.decode('["a", 1]').key == ["a", 1]
    assert Cursor.decode("VMBox 0").key == "VMBox 0"


# Made by the hand-written HS256 code that PyJWT replaced (secret "compat-secret"): tokens in
# clients' hands when the service is upgraded must keep working.
OLD_CODE_TOKEN = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhY2NvdW50X2lkIjoiNGI2ZmZjNjM4ZjZkM2I5NzQ0OGE2MjFmYzl"
    "kMzU5MGMiLCJtZXRob2QiOiJjYl91c2VyX2F1dGgiLCJpYXQiOjQxMDI0NDEyMDAsImV4cCI6NDEwMjQ0NDgwMCwib3du"
    "ZXJfaWQiOiIwMTIzNDU2Nzg5YWJjZGVmMDEyMzQ1Njc4OWFiY2RlZiJ9.cr8XmcFXNBR70HErzS9gO_-ydIUR_VKmP-DK"
    "NpJwpH0")
OLD_CODE_EXPIRED = (
    "eyJhbGciOiJIUzI1NiIsInR5cCI6IkpXVCJ9.eyJhY2NvdW50X2lkIjoiNGI2ZmZjNjM4ZjZkM2I5NzQ0OGE2MjFmYzl"
    "kMzU5MGMiLCJtZXRob2QiOiJjYl9hcGlfYXV0aCIsImlhdCI6MTcwMDAwMDAwMCwiZXhwIjoxNzAwMDAwMDYwfQ.Ttb_S"
    "ExpAtv070b-mPqAa6ZU8oJUWHeXiJITCdfPsgM")


def test_tokens_made_by_the_previous_code_still_verify() -> None:
    claims = tokens.verify(OLD_CODE_TOKEN, ("other-secret", "compat-secret"))
    assert claims == tokens.Claims(
        account_id="4b6ffc638f6d3b97448a621fc9d3590c",
        owner_id="0123456789abcdef0123456789abcdef", method="cb_user_auth",
        issued_at=4102441200, expires_at=4102444800)
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify(OLD_CODE_TOKEN, ("other-secret",))
    with pytest.raises(tokens.TokenExpired):
        tokens.verify(OLD_CODE_EXPIRED, ("compat-secret",))
    with pytest.raises(tokens.TokenInvalid):
        tokens.verify(OLD_CODE_TOKEN[:-2] + "xx", ("compat-secret",))


def test_issued_tokens_round_trip_with_a_short_secret_and_no_warning() -> None:
    token = tokens.issue("short", "4b6ffc638f6d3b97448a621fc9d3590c", "cb_api_auth", 60)
    claims = tokens.verify(token, ("short",))
    assert (claims.account_id, claims.owner_id, claims.method) == (
        "4b6ffc638f6d3b97448a621fc9d3590c", None, "cb_api_auth")
    assert claims.expires_at - claims.issued_at == 60


def test_update_seqs_are_compared_by_the_number_every_write_raises() -> None:
    # Two reads of one unchanged database on a 3-node cluster (the packed part names the copies
    # that answered), then after one write; the bundled server's is a number.
    from piston_vm.storage.couch import _comparable_seq

    before = _comparable_seq("58-g1AAAACTeJzLYWBgYMpgTmHgz8tPSTV0MDQy1zMAQsMckEQeC5BkaABS_")
    again = _comparable_seq("58-g1AAAACTeJzLYWBgYMpgTmHgz8tPSTV2MDQy1zMAQsMckEQeC5BkaABS_")
    after = _comparable_seq("59-g1AAAACTeJzLYWBgYMpgTmHgz8tPSTV0MDQy1zMAQsMckEQeC5BkaABS_")
    assert before == again != after
    assert _comparable_seq(12) != _comparable_seq(13)
