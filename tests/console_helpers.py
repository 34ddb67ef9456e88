"""Driving the staff console over real HTTP, as a browser would: a staff member signs in,
reads pages, and posts the forms on them with their CSRF token."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from typing import Any

import pyotp
from sqlalchemy.orm import Session

from bot.storage.models import Staff
from handlers.staff_auth import hash_password
from tests.conftest import Service

PASSWORD = "a long test password 01"  # a test password, not a secret
CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


@dataclass
class Page:
    status: int
    text: str
    headers: Any

    @property
    def location(self) -> str:
        return str(self.headers.get("Location", ""))

    def csrf(self) -> str:
        found = CSRF.search(self.text)
        assert found, f"no CSRF token on this page:\n{self.text[:500]}"
        return found.group(1)


@dataclass
class Browser:
    """One browser's cookies, kept by hand: the console's cookies are Secure (the test
    public_url is https) and the test server is plain http, so no cookie jar would send them.
    """

    svc: Service
    cookies: dict[str, str] = field(default_factory=dict)
    last: Page | None = None
    extra_headers: dict[str, str] = field(default_factory=dict)  # sent with every request

    def _remember(self, response: Any) -> None:
        for header in response.headers.getall("Set-Cookie", []):
            cookie: SimpleCookie = SimpleCookie()
            cookie.load(header)
            for name, morsel in cookie.items():
                if morsel["max-age"] == "0" or morsel.value == "":
                    self.cookies.pop(name, None)
                else:
                    self.cookies[name] = morsel.value

    def _headers(self, extra: dict[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "text/html", "User-Agent": "Mozilla/5.0 (X11; Linux) Firefox/140.0"}
        if self.cookies:
            headers["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        return {**headers, **self.extra_headers, **(extra or {})}

    async def get(self, path: str, headers: dict[str, str] | None = None) -> Page:
        async with self.svc.client.get(path, headers=self._headers(headers),
                                       allow_redirects=False) as response:
            self._remember(response)
            self.last = Page(response.status, await response.text(), response.headers)
        return self.last

    async def post(self, path: str, data: dict[str, str] | None = None,
                   csrf: str | None = None) -> Page:
        """Post a form; its CSRF token comes from the last page read unless given."""
        form = dict(data or {})
        if csrf is None and self.last is not None and CSRF.search(self.last.text):
            csrf = self.last.csrf()
        if csrf is not None:
            form["csrf_token"] = csrf
        async with self.svc.client.post(path, data=form, headers=self._headers(),
                                        allow_redirects=False) as response:
            self._remember(response)
            self.last = Page(response.status, await response.text(), response.headers)
        return self.last

    async def follow(self, page: Page) -> Page:
        assert page.status in (302, 303), (page.status, page.text[:300])
        return await self.get(page.location)

    async def sign_in(self, username: str, password: str = PASSWORD,
                      totp_secret: str | None = None, next_path: str = "/console") -> Page:
        await self.get(f"/console/login?next={next_path}")
        page = await self.post("/console/login", {"username": username, "password": password,
                                                  "next": next_path})
        assert page.status == 303, (page.status, page.text[:500])
        if totp_secret is not None:
            await self.follow(page)
            page = await self.post("/console/login/code",
                                   {"otp": totp_code(self.svc, totp_secret),
                                    "next": next_path})
            assert page.status == 303, (page.status, page.text[:500])
        return await self.follow(page)


def totp_code(svc: Service, secret: str, steps_ahead: int = 0) -> str:
    totp = pyotp.TOTP(secret)
    return totp.generate_otp(totp.timecode(svc.clock()) + steps_ahead)


async def add_staff(svc: Service, username: str, role: str = "staff",
                    password: str = PASSWORD, two_factor: bool = False,
                    disabled: bool = False) -> tuple[int, str | None]:
    """A staff account straight in the database; with two_factor, already enrolled.
    Returns its id and the TOTP secret."""
    cipher = svc.services.cipher
    secret = pyotp.random_base32() if two_factor else None

    def unit(session: Session) -> int:
        staff = Staff(username=username, role=role, password_hash=hash_password(password),
                      disabled=disabled, created_at=svc.clock(),
                      totp_secret_enc=cipher.encrypt(secret) if secret else None,
                      totp_confirmed_at=svc.clock() if secret else None)
        session.add(staff)
        session.flush()
        return staff.id

    return await svc.services.writer.run(unit), secret
