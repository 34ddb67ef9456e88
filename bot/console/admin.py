"""The admin pages under /console/admin/: staff accounts, the on-call rota and its
overrides, canned replies, and the audit log.

Every route here is for admins only, checked by the access middleware on every request
(which also sends an admin without two-factor to enrol first). The rules themselves are in
handlers.staff_admin, shared with `python -m bot staff add` and `oncall set`; a route reads
the form, calls them, and shows their refusal on the page.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import timedelta
from typing import Any, TypeVar
from urllib.parse import urlencode

from aiohttp import web
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from bot.console.deps import deps, me
from bot.console.pages import ROTA_GAP, render
from bot.console.security import Access, access
from bot.domain import Language, StaffRole
from bot.storage import views
from handlers import staff_admin
from handlers.handover import record_handover
from handlers.staff_admin import Actor, StaffAdminError

routes = web.RouteTableDef()
admin = access(Access.STAFF, roles=(StaffRole.ADMIN,))
T = TypeVar("T")

PAGE_NAMES = {"username": "Username", "role": "Role", "phone": "Phone",
              "telegram_chat_id": "Telegram chat id", "password": "Password",
              "until": "Until", "title": "Title", "language": "Language", "body": "Text"}
RECENT_OVERRIDES = timedelta(days=30)
SAVED = {
    "added": "Account added.",
    "role": "Role changed. It applies from their next click.",
    "disabled": "Disabled, and signed out everywhere at once.",
    "enabled": "Enabled: they can sign in again.",
    "password": "Password reset, and signed out everywhere. Give them the new password in "
                "person or by phone, never by e-mail.",
    "two-factor": "Two-factor reset, and signed out everywhere. They set it up again at "
                  "their next sign-in.",
    "phone": "Phone saved.",
    "telegram": "Telegram chat saved.",
    "override": "Saved: they are on call now.",
    "ended": "Override ended.",
    "canned": "Canned reply saved.",
    "deleted": "Canned reply deleted.",
}
ROLES = [role.value for role in StaffRole]
LANGUAGES = [lang.value for lang in Language]


def _text(form: Any, name: str, limit: int = 200) -> str:
    value = form.get(name, "")
    return value[:limit] if isinstance(value, str) else ""


def _actor(request: web.Request) -> Actor:
    signed_in = me(request)
    return Actor(signed_in.username, signed_in.staff_id)


def _id(request: web.Request, name: str) -> int:
    return int(request.match_info[name])  # the route's pattern allows digits only


def _said(exc: StaffAdminError) -> str:
    return exc.said_as(PAGE_NAMES)


async def _write(request: web.Request, unit: Callable[[Session], T],
                 sends: bool = False) -> T:
    """Run a change (`sends`: one that queues a message). A unique address registered by
    someone else at the same moment is refused like one registered before (the unit checks
    first; the constraint is the last word on a database with several writers)."""
    try:
        return await deps(request).writer.run(unit, notify=sends)
    except IntegrityError:
        raise StaffAdminError("that is already registered; reload the page and check") \
            from None


def _rota_changed(request: web.Request) -> None:
    """Who is on call may have changed: the gap banner checks again on the next page."""
    request.config_dict[ROTA_GAP].forget()


def _saved(request: web.Request) -> str | None:
    return SAVED.get(request.query.get("saved", ""))


def _digits(raw: str, what: str) -> int | None:
    raw = raw.strip().lstrip("#")
    if not raw:
        return None
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise web.HTTPBadRequest(text=f"{what} is digits only.")
    return int(raw)


# --- the index -------------------------------------------------------------------------------


@routes.get("/admin")
@admin
async def index_redirect(request: web.Request) -> web.Response:
    raise web.HTTPSeeOther("/console/admin/")


@routes.get("/admin/")
@admin
async def index(request: web.Request) -> web.Response:
    d = deps(request)
    now = d.clock()
    rota = await d.reader.run(lambda s: staff_admin.rota_now(s, d.settings.oncall, now, 1))
    return await render(request, "admin_index.html", rota=rota)


# --- staff accounts ----------------------------------------------------------------------------


async def _staff_list(request: web.Request, error: str | None = None, status: int = 200,
                      typed: dict[str, str] | None = None) -> web.Response:
    d = deps(request)
    fresh = d.clock() - d.policy.idle
    rows = await d.reader.run(lambda s: views.staff_accounts(s, fresh))
    return await render(request, "admin_staff.html", status=status, rows=rows, roles=ROLES,
                        error=error, typed=typed or {}, saved=_saved(request))


@routes.get("/admin/staff")
@admin
async def staff_list(request: web.Request) -> web.Response:
    return await _staff_list(request)


@routes.post("/admin/staff")
@admin
async def staff_add(request: web.Request) -> web.Response:
    d = deps(request)
    form = await request.post()
    username = _text(form, "username", 64).strip()
    role = _text(form, "role", 16)
    try:
        new = staff_admin.check_new_staff(username, role, _text(form, "phone", 40),
                                          _text(form, "telegram_chat_id", 40))
        # argon2 is slow on purpose: off the event loop, and before the unit of work.
        password_hash = await asyncio.get_running_loop().run_in_executor(
            None, staff_admin.new_password_hash, _text(form, "password", 1024))
        actor, now = _actor(request), d.clock()
        staff_id = await _write(request, lambda s: staff_admin.add_staff(
            s, d.cipher, new, password_hash, actor, now))
    except StaffAdminError as exc:
        return await _staff_list(request, _said(exc), 400,
                                 {"username": username, "role": role})
    _rota_changed(request)
    raise web.HTTPSeeOther(f"/console/admin/staff/{staff_id}?saved=added")


async def _staff_page(request: web.Request, staff_id: int, error: str | None = None,
                      status: int = 200) -> web.Response:
    d = deps(request)
    fresh = d.clock() - d.policy.idle
    found = await d.reader.run(lambda s: views.staff_accounts(s, fresh, staff_id))
    if not found:
        raise web.HTTPNotFound(text="There is no such staff account.")
    return await render(request, "admin_staff_edit.html", status=status, row=found[0],
                        roles=ROLES, error=error, saved=None if error else _saved(request))


@routes.get("/admin/staff/{staff_id:[0-9]{1,18}}")
@admin
async def staff_page(request: web.Request) -> web.Response:
    return await _staff_page(request, _id(request, "staff_id"))


async def _staff_change(request: web.Request, done: str,
                        change: Callable[[Any, Actor], Callable[[Session], object]],
                        affects_rota: bool = False) -> web.Response:
    """One action of the account page: read the form, make the change, show the outcome.
    `change(form, actor)` gives the unit of work, or raises StaffAdminError for bad input."""
    staff_id = _id(request, "staff_id")
    form = await request.post()
    try:
        await _write(request, change(form, _actor(request)))
    except StaffAdminError as exc:
        return await _staff_page(request, staff_id, _said(exc), 400)
    if affects_rota:
        _rota_changed(request)
    raise web.HTTPSeeOther(f"/console/admin/staff/{staff_id}?saved={done}")


def _confirmed(form: Any) -> None:
    """Destructive actions carry a ticked box; checked here, so a crafted POST cannot skip
    it."""
    if form.get("confirm") != "yes":
        raise StaffAdminError("Tick the box to confirm, then press the button again.")


def _address_or_removal(form: Any, address: str | None, field: str) -> str | None:
    """An empty box removes an address only from its own Remove button: a Save pressed by
    mistake must not leave someone who is paged unreachable."""
    if address is None and form.get("remove") != "yes":
        raise StaffAdminError("is empty; to take it away, press the Remove button", field)
    return address


@routes.post("/admin/staff/{staff_id:[0-9]{1,18}}/role")
@admin
async def staff_role(request: web.Request) -> web.Response:
    d, staff_id = deps(request), _id(request, "staff_id")

    def change(form: Any, actor: Actor) -> Callable[[Session], object]:
        role = staff_admin.check_role(_text(form, "role", 16))
        now = d.clock()
        return lambda s: staff_admin.change_role(s, staff_id, role, actor, now)

    return await _staff_change(request, "role", change, affects_rota=True)


@routes.post("/admin/staff/{staff_id:[0-9]{1,18}}/disable")
@admin
async def staff_disable(request: web.Request) -> web.Response:
    d, staff_id = deps(request), _id(request, "staff_id")

    def change(form: Any, actor: Actor) -> Callable[[Session], object]:
        _confirmed(form)
        now = d.clock()
        return lambda s: staff_admin.disable(s, staff_id, actor, now)

    return await _staff_change(request, "disabled", change, affects_rota=True)


@routes.post("/admin/staff/{staff_id:[0-9]{1,18}}/enable")
@admin
async def staff_enable(request: web.Request) -> web.Response:
    d, staff_id = deps(request), _id(request, "staff_id")

    def change(form: Any, actor: Actor) -> Callable[[Session], object]:
        now = d.clock()
        return lambda s: staff_admin.enable(s, staff_id, actor, now)

    return await _staff_change(request, "enabled", change, affects_rota=True)


@routes.post("/admin/staff/{staff_id:[0-9]{1,18}}/password")
@admin
async def staff_password(request: web.Request) -> web.Response:
    d, staff_id = deps(request), _id(request, "staff_id")
    form = await request.post()
    try:
        password_hash = await asyncio.get_running_loop().run_in_executor(
            None, staff_admin.new_password_hash, _text(form, "password", 1024))
    except StaffAdminError as exc:
        return await _staff_page(request, staff_id, _said(exc), 400)

    def change(form: Any, actor: Actor) -> Callable[[Session], object]:
        now = d.clock()
        return lambda s: staff_admin.reset_password(s, staff_id, password_hash, actor, now)

    return await _staff_change(request, "password", change)


@routes.post("/admin/staff/{staff_id:[0-9]{1,18}}/two-factor")
@admin
async def staff_two_factor(request: web.Request) -> web.Response:
    d, staff_id = deps(request), _id(request, "staff_id")

    def change(form: Any, actor: Actor) -> Callable[[Session], object]:
        _confirmed(form)
        now = d.clock()
        return lambda s: staff_admin.reset_two_factor(s, staff_id, actor, now)

    return await _staff_change(request, "two-factor", change)


@routes.post("/admin/staff/{staff_id:[0-9]{1,18}}/phone")
@admin
async def staff_phone(request: web.Request) -> web.Response:
    d, staff_id = deps(request), _id(request, "staff_id")

    def change(form: Any, actor: Actor) -> Callable[[Session], object]:
        phone = _address_or_removal(form, staff_admin.check_phone(_text(form, "phone", 40)),
                                    "phone")
        now = d.clock()
        return lambda s: staff_admin.set_phone(s, d.cipher, staff_id, phone, actor, now)

    return await _staff_change(request, "phone", change, affects_rota=True)


@routes.post("/admin/staff/{staff_id:[0-9]{1,18}}/telegram")
@admin
async def staff_telegram(request: web.Request) -> web.Response:
    d, staff_id = deps(request), _id(request, "staff_id")

    def change(form: Any, actor: Actor) -> Callable[[Session], object]:
        chat = _address_or_removal(
            form, staff_admin.check_telegram_chat(_text(form, "telegram_chat_id", 40)),
            "telegram_chat_id")
        now = d.clock()
        return lambda s: staff_admin.set_telegram_chat(s, d.cipher, staff_id, chat, actor,
                                                       now)

    return await _staff_change(request, "telegram", change, affects_rota=True)


# --- the on-call rota --------------------------------------------------------------------------


async def _oncall_page(request: web.Request, error: str | None = None,
                       status: int = 200) -> web.Response:
    d = deps(request)
    now = d.clock()

    def read(session: Session) -> tuple[staff_admin.RotaNow, list[views.OverrideRow]]:
        return (staff_admin.rota_now(session, d.settings.oncall, now),
                views.overrides(session, now, now - RECENT_OVERRIDES))

    rota, overrides = await d.reader.run(read)
    return await render(request, "admin_oncall.html", status=status, rota=rota,
                        overrides=overrides, backup_configured=d.settings.oncall.backup,
                        error=error, saved=None if error else _saved(request))


@routes.get("/admin/oncall")
@admin
async def oncall_page(request: web.Request) -> web.Response:
    return await _oncall_page(request)


@routes.post("/admin/oncall")
@admin
async def oncall_set(request: web.Request) -> web.Response:
    """The same operation as `python -m bot oncall set USERNAME [--until ISO]`."""
    d = deps(request)
    form = await request.post()
    now, actor = d.clock(), _actor(request)
    try:
        until = staff_admin.parse_until(_text(form, "until", 40), d.settings.hours.timezone,
                                        now)
        username = _text(form, "username", 64)

        def put_on_call(session: Session) -> None:
            staff_admin.set_override(session, username, until, actor, now)
            record_handover(session, d.escalation, now, announce_first=True,
                            actor=actor.name, actor_staff_id=actor.staff_id)

        await _write(request, put_on_call, sends=True)
    except StaffAdminError as exc:
        return await _oncall_page(request, _said(exc), 400)
    _rota_changed(request)
    raise web.HTTPSeeOther("/console/admin/oncall?saved=override")


@routes.post("/admin/oncall/{override_id:[0-9]{1,18}}/end")
@admin
async def oncall_end(request: web.Request) -> web.Response:
    d = deps(request)
    override_id = _id(request, "override_id")
    now, actor = d.clock(), _actor(request)
    try:

        def end(session: Session) -> None:
            staff_admin.end_override(session, override_id, actor, now)
            record_handover(session, d.escalation, now, announce_first=True,
                            actor=actor.name, actor_staff_id=actor.staff_id)

        await _write(request, end, sends=True)
    except StaffAdminError as exc:
        return await _oncall_page(request, _said(exc), 400)
    _rota_changed(request)
    raise web.HTTPSeeOther("/console/admin/oncall?saved=ended")


# --- canned replies ----------------------------------------------------------------------------


async def _canned_list(request: web.Request, error: str | None = None, status: int = 200,
                       typed: dict[str, str] | None = None) -> web.Response:
    d = deps(request)
    rows = await d.reader.run(views.canned_replies)
    return await render(request, "admin_canned.html", status=status,
                        rows=[(row, staff_admin.sms_fit(row.body)) for row in rows],
                        languages=LANGUAGES, error=error, typed=typed or {},
                        saved=None if error else _saved(request))


def _typed_canned(form: Any) -> dict[str, str]:
    return {"title": _text(form, "title", 200), "language": _text(form, "language", 8),
            "body": _text(form, "body", 4000)}


@routes.get("/admin/canned")
@admin
async def canned_list(request: web.Request) -> web.Response:
    return await _canned_list(request)


@routes.post("/admin/canned")
@admin
async def canned_add(request: web.Request) -> web.Response:
    d = deps(request)
    typed = _typed_canned(await request.post())
    now, actor = d.clock(), _actor(request)
    try:
        text = staff_admin.check_canned(typed["title"], typed["language"], typed["body"])
        canned_id = await _write(request, lambda s: staff_admin.add_canned(s, text, actor, now))
    except StaffAdminError as exc:
        return await _canned_list(request, _said(exc), 400, typed)
    raise web.HTTPSeeOther(f"/console/admin/canned/{canned_id}?saved=canned")


async def _canned_page(request: web.Request, canned_id: int, error: str | None = None,
                       status: int = 200, typed: dict[str, str] | None = None
                       ) -> web.Response:
    d = deps(request)
    found = await d.reader.run(lambda s: views.canned_replies(s, canned_id=canned_id))
    if not found:
        raise web.HTTPNotFound(text="There is no such canned reply.")
    row = found[0]
    shown = typed or {"title": row.title, "language": row.language, "body": row.body}
    return await render(request, "admin_canned_edit.html", status=status, row=row,
                        typed=shown, fit=staff_admin.sms_fit(shown["body"]),
                        languages=LANGUAGES, error=error,
                        saved=None if error else _saved(request))


@routes.get("/admin/canned/{canned_id:[0-9]{1,18}}")
@admin
async def canned_page(request: web.Request) -> web.Response:
    return await _canned_page(request, _id(request, "canned_id"))


@routes.post("/admin/canned/{canned_id:[0-9]{1,18}}")
@admin
async def canned_edit(request: web.Request) -> web.Response:
    d = deps(request)
    canned_id = _id(request, "canned_id")
    typed = _typed_canned(await request.post())
    now, actor = d.clock(), _actor(request)
    try:
        text = staff_admin.check_canned(typed["title"], typed["language"], typed["body"])
        await _write(request, lambda s: staff_admin.edit_canned(s, canned_id, text, actor, now))
    except StaffAdminError as exc:
        return await _canned_page(request, canned_id, _said(exc), 400, typed)
    raise web.HTTPSeeOther(f"/console/admin/canned/{canned_id}?saved=canned")


@routes.post("/admin/canned/{canned_id:[0-9]{1,18}}/delete")
@admin
async def canned_delete(request: web.Request) -> web.Response:
    d = deps(request)
    canned_id = _id(request, "canned_id")
    form = await request.post()
    now, actor = d.clock(), _actor(request)
    try:
        _confirmed(form)
        await _write(request, lambda s: staff_admin.delete_canned(s, canned_id, actor, now))
    except StaffAdminError as exc:
        return await _canned_page(request, canned_id, _said(exc), 400)
    raise web.HTTPSeeOther("/console/admin/canned?saved=deleted")


# --- the audit log -----------------------------------------------------------------------------


@routes.get("/admin/audit")
@admin
async def audit_page(request: web.Request) -> web.Response:
    d = deps(request)
    user = request.query.get("user", "").strip()[:64] or None
    conversation = _digits(request.query.get("conversation", ""), "A conversation number")
    before = _digits(request.query.get("before", ""), "The page")
    rows = await d.reader.run(lambda s: views.audit_log(s, user, conversation, before))
    older = None
    if len(rows) == views.AUDIT_PAGE:
        kept = {k: v for k, v in (("user", user), ("conversation", conversation)) if v}
        older = "/console/admin/audit?" + urlencode({**kept, "before": rows[-1].id})
    return await render(request, "admin_audit.html", rows=rows, user=user or "",
                        conversation=conversation, paged=before is not None, older=older)
