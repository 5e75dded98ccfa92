"""Accounts: sign-up, login, refresh, password change, /accounts/me."""

import uuid

import pytest
from rest_framework.test import APIClient

from accounts.models import User
from tests.conftest import assert_error, assert_ok, client_for
from tests.factories import PASSWORD

pytestmark = pytest.mark.django_db

SEED_SIGNUP = {"username": "foobar", "password": PASSWORD, "email": "foobar@fancycompany.net"}


def signup(client: APIClient, **overrides: object):
    return client.post("/accounts/", {**SEED_SIGNUP, **overrides}, format="json")


def login(client: APIClient, username: str = "foobar", password: str = PASSWORD):
    return client.post(
        "/accounts/auth/local", {"username": username, "password": password}, format="json"
    )


def test_signup_returns_seed_shape(anon_client: APIClient) -> None:
    payload = assert_ok(signup(anon_client), "User created")
    assert set(payload) == {"userID", "username", "email"}
    assert uuid.UUID(payload["userID"]).version == 4
    assert payload["username"] == "foobar"
    assert payload["email"] == "foobar@fancycompany.net"
    assert User.objects.get(username="foobar").check_password(PASSWORD)


@pytest.mark.parametrize("path", ["/accounts/", "/accounts"])
def test_signup_works_with_and_without_slash(anon_client: APIClient, path: str) -> None:
    response = anon_client.post(path, SEED_SIGNUP, format="json")
    assert_ok(response, "User created")


@pytest.mark.parametrize(
    ("overrides", "field"),
    [
        ({"username": "ab"}, "username"),
        ({"username": "a" * 33}, "username"),
        ({"username": "foo bar"}, "username"),
        ({"username": "<script>"}, "username"),
        ({"password": "short1"}, "password"),
        ({"password": "password"}, "password"),  # too common
        ({"password": "12345678901"}, "password"),  # entirely numeric
        ({"email": "not-an-email"}, "email"),
        ({"username": 12345}, "username"),
        ({"password": 123456789}, "password"),
        ({"email": ["a@b.c"]}, "email"),
        ({"username": "x" * 10_000}, "username"),
    ],
)
def test_signup_invalid_fields_are_1005(
    anon_client: APIClient, overrides: dict, field: str
) -> None:
    body = assert_error(signup(anon_client, **overrides), 400, 1005)
    assert field in body["details"]
    assert not User.objects.exists()


@pytest.mark.parametrize("missing", ["username", "password", "email"])
def test_signup_missing_field_is_1004(anon_client: APIClient, missing: str) -> None:
    data = {k: v for k, v in SEED_SIGNUP.items() if k != missing}
    body = assert_error(anon_client.post("/accounts/", data, format="json"), 400, 1004)
    assert missing in body["details"]


def test_signup_null_field_is_missing(anon_client: APIClient) -> None:
    body = assert_error(signup(anon_client, email=None), 400, 1004)
    assert "email" in body["details"]


@pytest.mark.parametrize(
    "overrides",
    [{"email": "other@example.com"}, {"username": "FOOBAR", "email": "other@example.com"}],
)
def test_duplicate_username_is_1006(anon_client: APIClient, overrides: dict) -> None:
    assert_ok(signup(anon_client), "User created")
    body = assert_error(signup(anon_client, **overrides), 409, 1006)
    assert "username" in body["details"]
    assert User.objects.count() == 1


def test_duplicate_email_is_case_insensitive_1006(anon_client: APIClient) -> None:
    assert_ok(signup(anon_client), "User created")
    body = assert_error(
        signup(anon_client, username="other", email="FooBar@FancyCompany.NET"), 409, 1006
    )
    assert "email" in body["details"]


def test_signup_is_throttled(anon_client: APIClient, settings) -> None:
    for n in range(5):
        signup(anon_client, username=f"user{n}", email=f"u{n}@example.com")
    body = assert_error(signup(anon_client, username="user9", email="u9@x.com"), 429, 1010)
    assert body["details"]["retryAfter"] > 0


def test_login_returns_seed_shape_plus_refresh(anon_client: APIClient) -> None:
    signup(anon_client)
    payload = assert_ok(login(anon_client), "Authentication successful")
    assert payload["username"] == "foobar"
    assert payload["token"].count(".") == 2
    assert payload["refreshToken"].count(".") == 2
    me = client_for(token=payload["token"]).get("/accounts/me")
    assert assert_ok(me, "User detail")["username"] == "foobar"


@pytest.mark.parametrize(
    ("username", "password"), [("foobar", "WrongPassword1"), ("nobody", PASSWORD)]
)
def test_login_bad_credentials_are_1003(
    anon_client: APIClient, username: str, password: str
) -> None:
    signup(anon_client)
    body = assert_error(login(anon_client, username, password), 401, 1003)
    assert body["message"] == "Invalid credentials"


def test_login_missing_password_is_1004(anon_client: APIClient) -> None:
    response = anon_client.post("/accounts/auth/local", {"username": "foobar"}, format="json")
    assert_error(response, 400, 1004)


def test_login_is_throttled(anon_client: APIClient) -> None:
    signup(anon_client)
    for _ in range(10):
        login(anon_client, password="WrongPassword1")
    assert_error(login(anon_client), 429, 1010)


def test_refresh_rotates_and_is_single_use(anon_client: APIClient) -> None:
    signup(anon_client)
    tokens = assert_ok(login(anon_client), "Authentication successful")
    body = {"refreshToken": tokens["refreshToken"]}
    fresh = assert_ok(
        anon_client.post("/accounts/auth/refresh", body, format="json"), "Token refreshed"
    )
    assert fresh["refreshToken"] != tokens["refreshToken"]
    assert_ok(client_for(token=fresh["token"]).get("/accounts/me"), "User detail")
    assert_error(anon_client.post("/accounts/auth/refresh", body, format="json"), 401, 1003)


def test_refresh_rejects_access_token_and_garbage(anon_client: APIClient) -> None:
    signup(anon_client)
    tokens = assert_ok(login(anon_client), "Authentication successful")
    for bad in [tokens["token"], "garbage", "a.b.c"]:
        response = anon_client.post("/accounts/auth/refresh", {"refreshToken": bad}, format="json")
        assert_error(response, 401, 1003)


def test_password_change_seed_shape_and_old_tokens_stop_working(anon_client: APIClient) -> None:
    signup(anon_client)
    tokens = assert_ok(login(anon_client), "Authentication successful")
    client = client_for(token=tokens["token"])
    response = client.post(
        "/accounts/password",
        {"oldPassword": PASSWORD, "newPassword": "Ar3YouComingToTheTree"},
        format="json",
    )
    payload = assert_ok(response, "User password changed")
    assert payload["username"] == "foobar"
    # tokens issued before the change no longer work, access or refresh
    assert_error(client.get("/accounts/me"), 401, 1003)
    refresh = {"refreshToken": tokens["refreshToken"]}
    assert_error(anon_client.post("/accounts/auth/refresh", refresh, format="json"), 401, 1003)
    # the new password and the tokens handed back do
    assert_error(login(anon_client), 401, 1003)
    assert_ok(login(anon_client, password="Ar3YouComingToTheTree"), "Authentication successful")
    assert_ok(client_for(token=payload["token"]).get("/accounts/me"), "User detail")


def test_password_change_wrong_old_password_is_1003(alice_client: APIClient, alice: User) -> None:
    response = alice_client.post(
        "/accounts/password",
        {"oldPassword": "NotMyPassword1", "newPassword": "Ar3YouComingToTheTree"},
        format="json",
    )
    assert_error(response, 401, 1003)
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"oldPassword": PASSWORD}, 400, 1004),
        ({"oldPassword": PASSWORD, "newPassword": "short"}, 400, 1005),
        ({"oldPassword": PASSWORD, "newPassword": "alice1234"}, 400, 1005),  # like username
        ({"oldPassword": PASSWORD, "newPassword": True}, 400, 1005),
    ],
)
def test_password_change_bad_input(
    alice_client: APIClient, alice: User, body: dict, status: int, code: int
) -> None:
    assert_error(alice_client.post("/accounts/password", body, format="json"), status, code)
    alice.refresh_from_db()
    assert alice.check_password(PASSWORD)


def test_password_change_requires_token(anon_client: APIClient) -> None:
    body = {"oldPassword": PASSWORD, "newPassword": "Ar3YouComingToTheTree"}
    assert_error(anon_client.post("/accounts/password", body, format="json"), 401, 1003)


def test_me(alice_client: APIClient, alice: User) -> None:
    payload = assert_ok(alice_client.get("/accounts/me"), "User detail")
    assert payload == {"userID": str(alice.id), "username": "alice", "email": alice.email}


@pytest.mark.parametrize(
    "header", ["Bearer garbage", "Bearer a.b.c", "Token abc", "Bearer", "Basic Zm9vOmJhcg=="]
)
def test_bad_authorization_headers_are_1003(header: str, db: None) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert_error(client.get("/accounts/me"), 401, 1003)


def test_deactivated_user_token_stops_working(alice_client: APIClient, alice: User) -> None:
    alice.is_active = False
    alice.save()
    assert_error(alice_client.get("/accounts/me"), 401, 1003)
