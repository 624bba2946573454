"""Login attempts are throttled (issue 16, item 6): django-axes locks a username+address out.

Found: 30 wrong admin passwords in 9.5 s, then the right one worked.
"""

from __future__ import annotations

import base64
from typing import Any

import pytest
from django.test import Client

from tests.factories import shop_admin

pytestmark = pytest.mark.django_db

PASSWORD = "pw-for-tests-123"  # UserFactory's


def admin_login(client: Client, username: str, password: str) -> Any:
    return client.post("/admin/login/?next=/admin/", {"username": username, "password": password})


def signed_in(client: Client) -> bool:
    return client.get("/admin/").status_code == 200


def test_thirty_wrong_passwords_lock_the_admin_login_even_for_the_right_one(settings: Any) -> None:
    assert settings.AXES_FAILURE_LIMIT == 5  # the default of DAR_LOGIN_FAILURE_LIMIT
    user = shop_admin()
    attacker = Client(REMOTE_ADDR="10.1.2.3")
    answers = [admin_login(attacker, user.username, f"guess-{n}").status_code for n in range(30)]
    # The first wrong ones show the form again; from the limit on, the lockout answer.
    assert answers[:4] == [200] * 4 and set(answers[5:]) == {429}
    locked = admin_login(attacker, user.username, PASSWORD)
    assert locked.status_code == 429 and "locked" in locked.content.decode().lower()
    assert not signed_in(attacker)

    # Keyed on username and address: the owner, from their own address, still signs in...
    owner = Client(REMOTE_ADDR="10.9.9.9")
    admin_login(owner, user.username, PASSWORD)
    assert signed_in(owner)
    # ...and the locked address is not locked out of other accounts.
    other = shop_admin()
    admin_login(attacker, other.username, PASSWORD)
    assert signed_in(attacker)


def test_the_lockout_ends_after_the_cooloff_and_covers_api_basic_auth(settings: Any) -> None:
    from datetime import timedelta

    from axes.models import AccessAttempt

    user = shop_admin()
    client = Client(REMOTE_ADDR="10.1.2.4")
    for n in range(settings.AXES_FAILURE_LIMIT):
        admin_login(client, user.username, f"guess-{n}")
    basic = "Basic " + base64.b64encode(f"{user.username}:{PASSWORD}".encode()).decode()
    # The REST API's Basic auth goes through the same backends: locked out too.
    assert client.get("/api/catalogs/", HTTP_AUTHORIZATION=basic).status_code in (401, 403, 429)
    assert admin_login(client, user.username, PASSWORD).status_code == 429

    # After the cool-off (DAR_LOGIN_COOLOFF_MINUTES) the right password works again.
    AccessAttempt.objects.update(
        attempt_time=AccessAttempt.objects.get().attempt_time - timedelta(minutes=16)
    )
    admin_login(client, user.username, PASSWORD)
    assert signed_in(client)
    assert client.get("/api/catalogs/", HTTP_AUTHORIZATION=basic).status_code == 200
