"""The upload manager page and the admin listing (DESIGN §16), over HTTP: the page is
served for a caller (and only while ``OBITOX_MANAGER`` is on), runs nothing inline, and
``GET /admin/uploads`` is for admins only. The page's behaviour in a browser is in
``tests/browser/test_browser_manager.py``."""

from __future__ import annotations

from html.parser import HTMLParser
from typing import Any

import pytest
from conftest import BUCKET, UserClient, file_spec, make_app
from flask import Flask

from flask_obitox import ConfigError, MemoryStateBackend, ObitoX


class Tags(HTMLParser):
    """Every start tag of a page, with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.script_text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))

    def handle_data(self, data: str) -> None:
        if self.tags and self.tags[-1][0] == "script":
            self.script_text += data.strip()


def tags_of(html: str) -> Tags:
    parser = Tags()
    parser.feed(html)
    return parser


@pytest.fixture
def admin_app(s3: Any) -> tuple[Flask, ObitoX]:
    app, obitox = make_app(MemoryStateBackend())
    from flask import request

    obitox.admin_loader(lambda: request.headers.get("X-User") == "root")
    return app, obitox


def test_the_page_is_served_to_a_caller_and_runs_only_its_own_files(
    client: UserClient,
) -> None:
    response = client.get("/manager")
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    assert response.headers["Cache-Control"] == "no-store"
    csp = response.headers["Content-Security-Policy"]
    assert "default-src 'self'" in csp
    assert "unsafe-inline" not in csp
    page = tags_of(response.get_data(as_text=True))
    scripts = [attrs for tag, attrs in page.tags if tag == "script"]
    assert scripts == [{"type": "module", "src": "/obitox/static/manager.js"}]
    assert page.script_text == ""
    assert ("link", {"rel": "stylesheet", "href": "/obitox/static/manager.css"}) in page.tags
    assert not any("style" in attrs for _, attrs in page.tags)
    assert all(tag != "style" for tag, _ in page.tags)
    [main] = [attrs for tag, attrs in page.tags if tag == "main"]
    assert main["data-endpoint"] == "/obitox"
    assert main["data-admin"] == "false"
    # No admin form for a caller who is not one.
    assert all(attrs.get("id") != "admin" for _, attrs in page.tags)
    for name in ("manager.js", "manager.css", "obitox.js"):
        assert client.get(f"/static/{name}").status_code == 200


def test_the_page_names_the_caller_escaped(app: Flask) -> None:
    response = UserClient(app, "<b>eve</b>").get("/manager")
    text = response.get_data(as_text=True)
    assert "&lt;b&gt;eve&lt;/b&gt;" in text
    assert "<b>eve</b>" not in text


def test_the_page_needs_a_caller(app: Flask) -> None:
    response = UserClient(app, None).get("/manager")
    assert response.status_code == 401
    assert response.json["error"] == "UNAUTHENTICATED"


def test_obitox_manager_false_turns_the_page_off(s3: Any) -> None:
    app, _ = make_app(MemoryStateBackend(), OBITOX_MANAGER=False)
    response = UserClient(app, "alice").get("/manager")
    assert response.status_code == 404
    assert response.json["error"] == "NOT_FOUND"
    assert "OBITOX_MANAGER" in response.json["message"]


def test_obitox_manager_must_be_a_bool(s3: Any) -> None:
    with pytest.raises(ConfigError, match="OBITOX_MANAGER must be True or False"):
        make_app(MemoryStateBackend(), OBITOX_MANAGER="no")


def test_an_admin_gets_the_admin_form(admin_app: tuple[Flask, ObitoX]) -> None:
    page = tags_of(UserClient(admin_app[0], "root").get("/manager").get_data(as_text=True))
    [main] = [attrs for tag, attrs in page.tags if tag == "main"]
    assert main["data-admin"] == "true"
    assert any(attrs.get("id") == "admin" for tag, attrs in page.tags if tag == "form")
    options = {attrs["value"] for tag, attrs in page.tags if tag == "option"}
    assert {"", "pending", "completed", "deleted"} <= options


# -- GET /admin/uploads ------------------------------------------------------------------


def sign(client: UserClient, name: str) -> str:
    response = client.post("/uploads", json=file_spec(filename=name))
    assert response.status_code == 201, response.json
    upload_id: str = response.json["uploadId"]
    return upload_id


def test_admin_uploads_is_403_for_a_non_admin(admin_app: tuple[Flask, ObitoX]) -> None:
    app = admin_app[0]
    sign(UserClient(app, "bob"), "b.png")
    response = UserClient(app, "alice").get("/admin/uploads?owner=bob")
    assert response.status_code == 403
    assert response.json["error"] == "FORBIDDEN"
    assert response.json["message"]
    assert UserClient(app, None).get("/admin/uploads?owner=bob").status_code == 401


def test_admin_uploads_is_403_without_an_admin_loader(client: UserClient) -> None:
    response = client.get("/admin/uploads?owner=alice")
    assert response.status_code == 403
    assert response.json["error"] == "FORBIDDEN"


def test_an_admin_lists_any_owners_uploads_filtered(admin_app: tuple[Flask, ObitoX]) -> None:
    app = admin_app[0]
    bob = UserClient(app, "bob")
    first, second = sign(bob, "one.png"), sign(bob, "two.png")
    sign(UserClient(app, "alice"), "alice.png")
    assert bob.delete(f"/uploads/{first}").status_code == 200
    root = UserClient(app, "root")

    listed = root.get("/admin/uploads?owner=bob")
    assert listed.status_code == 200
    assert [u["uploadId"] for u in listed.json["uploads"]] == [second, first]
    # The same view as the owner's own listing shows.
    assert listed.json == bob.get("/uploads").json

    deleted = root.get("/admin/uploads?owner=bob&status=deleted").json
    assert [u["uploadId"] for u in deleted["uploads"]] == [first]

    page = root.get("/admin/uploads?owner=bob&limit=1").json
    assert [u["uploadId"] for u in page["uploads"]] == [second]
    rest = root.get(f"/admin/uploads?owner=bob&limit=1&cursor={page['nextCursor']}").json
    assert [u["uploadId"] for u in rest["uploads"]] == [first]


@pytest.mark.parametrize(
    ("query", "field"),
    [("", "owner"), ("?owner=", "owner"), ("?owner=bob&status=nope", "status")],
)
def test_admin_uploads_refuses_a_bad_query(
    admin_app: tuple[Flask, ObitoX], query: str, field: str
) -> None:
    response = UserClient(admin_app[0], "root").get(f"/admin/uploads{query}")
    assert response.status_code == 400
    assert response.json["error"] == "INVALID_INPUT"
    assert field in response.json["message"]


# -- a derived object's download link (the page's thumbnails) ----------------------------


def test_a_derived_object_has_a_download_link(admin_app: tuple[Flask, ObitoX], s3: Any) -> None:
    app, _ = admin_app
    alice = UserClient(app, "alice")
    upload_id = sign(alice, "cat.png")
    state = app.extensions["obitox"].state
    record = state.get(upload_id)
    assert record is not None
    s3.put_object(Bucket=BUCKET, Key=record.key, Body=b"\x89PNG\r\n\x1a\n" + b"\x00" * 1016)
    assert alice.post(f"/uploads/{upload_id}/complete").status_code == 200
    thumb = f"{record.key}-derived/thumb.jpg"
    assert state.update(upload_id, {"completed"}, derived=[thumb]) is not None

    link = alice.get(
        f"/uploads/{upload_id}/download?inline=1&derived={thumb}",
        headers={"Accept": "application/json"},
    )
    assert link.status_code == 200, link.json
    assert "thumb.jpg" in link.json["url"]
    assert "inline" in link.json["url"]

    unknown = alice.get(
        f"/uploads/{upload_id}/download?derived={record.key}",
        headers={"Accept": "application/json"},
    )
    assert unknown.status_code == 404
    assert unknown.json["error"] == "NOT_FOUND"
    # Another owner's upload stays unknown, derived or not.
    other = UserClient(app, "mallory").get(f"/uploads/{upload_id}/download?derived={thumb}")
    assert other.status_code == 404
    assert other.json["error"] == "UPLOAD_NOT_FOUND"
