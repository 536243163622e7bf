"""Message counts in the box listing: whole months by reduce, the window's first month by rows."""

from __future__ import annotations

from piston_vm.core import gregorian
from tests.conftest import Tenant
from tests.helpers import Api, assert_success
from tests.test_message_support import create_box, create_message, last_month, this_month

DAY_S = 86_400


async def counts(api: Api, tenant: Tenant) -> dict[str, dict[str, object]]:
    resp, body = await api.call("GET", f"/v2/accounts/{tenant.id}/vmboxes", tenant.token)
    return {row["id"]: row for row in assert_success(resp, body)}


async def test_counts_cover_every_month_of_the_window_and_nothing_older(
    api: Api, account: Tenant
) -> None:
    box = await create_box(api, account, mailbox="1000")
    other = await create_box(api, account, mailbox="1001")
    now = gregorian.now()
    retention_s = 93 * DAY_S + 3_600
    await create_message(api, account, box, timestamp=this_month(0))
    await create_message(api, account, box, timestamp=this_month(1), folder="saved")
    await create_message(api, account, box, timestamp=last_month(0))
    # The window starts inside an older month: one message just inside it, one just outside.
    await create_message(api, account, box, timestamp=now - retention_s + DAY_S)
    await create_message(api, account, box, timestamp=now - retention_s - DAY_S)
    await create_message(api, account, other, timestamp=this_month(2), folder="deleted")
    rows = await counts(api, account)
    assert rows[box]["folders"] == {"new": 3, "saved": 1}
    assert rows[box]["messages"] == 4
    # A box whose only message is in the deleted folder has counts, all zero.
    assert rows[other]["folders"] == {"new": 0, "saved": 0}
    assert rows[other]["messages"] == 0
