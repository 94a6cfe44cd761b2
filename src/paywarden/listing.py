"""Stripe list objects with cursor pagination (``starting_after`` / ``ending_before``).

Objects are ordered newest first by their monotonic ``pk``; a cursor is an
object id of the same tenant and mode, so a cursor can never reveal or reach
another tenant's rows.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session

from paywarden.core.errors import InvalidRequestError, ResourceMissingError
from paywarden.db import ListableMixin

T = TypeVar("T", bound=ListableMixin)


def list_page(
    session: Session,
    model: type[T],
    *,
    account_id: str,
    livemode: bool,
    params: dict[str, Any],
    kind: str,
    filters: Sequence[ColumnElement[bool]] = (),
) -> tuple[list[T], bool]:
    limit = params.get("limit") or 10
    after, before = params.get("starting_after"), params.get("ending_before")
    if after and before:
        raise InvalidRequestError(
            "You may only specify one of these parameters: starting_after, ending_before.",
            param="ending_before",
        )
    conds: list[ColumnElement[bool]] = [
        model.account_id == account_id,
        model.livemode == livemode,
        *filters,
    ]
    created = params.get("created")
    if isinstance(created, dict):
        ops = {"gt": "__gt__", "gte": "__ge__", "lt": "__lt__", "lte": "__le__"}
        for op, meth in ops.items():
            if created.get(op) is not None:
                conds.append(getattr(model.created, meth)(created[op]))
    cursor = after or before
    if cursor:
        pk = session.scalar(
            select(model.pk).where(
                model.id == cursor, model.account_id == account_id, model.livemode == livemode
            )
        )
        if pk is None:
            raise ResourceMissingError(
                kind, cursor, param="starting_after" if after else "ending_before"
            )
        if after:
            conds.append(model.pk < pk)
        else:
            conds.append(model.pk > pk)
    q = select(model).where(*conds)
    if before:
        rows = list(session.scalars(q.order_by(model.pk.asc()).limit(limit + 1)))
        has_more = len(rows) > limit
        rows = list(reversed(rows[:limit]))
    else:
        rows = list(session.scalars(q.order_by(model.pk.desc()).limit(limit + 1)))
        has_more = len(rows) > limit
        rows = rows[:limit]
    return rows, has_more


def list_object(url: str, data: list[dict[str, Any]], has_more: bool) -> dict[str, Any]:
    return {"object": "list", "data": data, "has_more": has_more, "url": url}


def render_list(
    url: str, rows: list[T], has_more: bool, render: Callable[[T], dict[str, Any]]
) -> dict[str, Any]:
    return list_object(url, [render(r) for r in rows], has_more)


def list_response(
    session: Session,
    model: type[T],
    *,
    account_id: str,
    livemode: bool,
    params: dict[str, Any],
    kind: str,
    url: str,
    render: Callable[[T], dict[str, Any]],
    filters: Sequence[ColumnElement[bool]] = (),
) -> dict[str, Any]:
    """One page of a tenant's objects as a Stripe list object."""
    rows, has_more = list_page(
        session,
        model,
        account_id=account_id,
        livemode=livemode,
        params=params,
        kind=kind,
        filters=filters,
    )
    return render_list(url, rows, has_more, render)


def get_owned(
    session: Session,
    model: type[T],
    object_id: str,
    *,
    account_id: str,
    livemode: bool,
    kind: str,
    param: str = "id",
    for_update: bool = False,
) -> T:
    """One of a tenant's objects by id, in the caller's mode; 404 otherwise
    (another tenant's object is indistinguishable from a missing one)."""
    q = select(model).where(
        model.id == object_id,
        model.account_id == account_id,
        model.livemode == livemode,
    )
    if for_update:
        q = q.with_for_update()
    obj = session.scalar(q)
    if obj is None:
        raise ResourceMissingError(kind, object_id, param=param)
    return obj
