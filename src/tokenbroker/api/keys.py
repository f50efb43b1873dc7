"""Typed application keys shared by the route modules."""

from __future__ import annotations

from aiohttp import web

from tokenbroker.api.admin_auth import AdminKeys
from tokenbroker.api.pages import Pages
from tokenbroker.lifecycle.refresh import Refresher
from tokenbroker.services import Services

SERVICES = web.AppKey("services", Services)
ADMIN_KEYS = web.AppKey("admin_keys", AdminKeys)
PAGES = web.AppKey("pages", Pages)
REFRESHER = web.AppKey("refresher", Refresher)
