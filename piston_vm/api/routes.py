"""The URL table: every path, its methods and its body kind, in one place (api.md 1)."""

from __future__ import annotations

from piston_vm.api import auth, vmboxes
from piston_vm.routing import Endpoint

ACCOUNT = "/v2/accounts/{account_id:[^/]*}"

ENDPOINTS: list[Endpoint] = [
    Endpoint("/v2/api_auth", {"PUT": auth.api_auth}, authenticated=False),
    Endpoint(f"{ACCOUNT}/vmboxes", {"GET": vmboxes.list_boxes, "PUT": vmboxes.create_box}),
    Endpoint(
        f"{ACCOUNT}/vmboxes/{{box_id}}",
        {
            "GET": vmboxes.get_box,
            "POST": vmboxes.replace_box,
            "PATCH": vmboxes.patch_box,
            "DELETE": vmboxes.delete_box,
        },
    ),
]
