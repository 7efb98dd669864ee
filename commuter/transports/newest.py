"""The same session pushed twice is one item to pull: of the items one paired sender left for
this machine for one session, those older than the newest whole bundle are not imported; they
are acked (the recipient removes its own mail) once that bundle has been imported, never
before, so one that fails leaves everything in place for the next pull. Deltas after it (each
builds on the one before) are all imported, in order.

Items are grouped by what their seal says (commuter.sync.label: the signed sender key, agent
and session id of the bundle's manifest, checked as an import would), never by what a relay or
a file name claims; an item without a label (plain, legacy, unreadable) is never grouped.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING

from commuter.errors import CommuterError

if TYPE_CHECKING:
    from commuter.sync.label import Label
    from commuter.transports import Incoming, Transport, TransportContext

Labels = MutableMapping[str, "Label | None"]

Factory = Callable[[str, "TransportContext"], "Transport"]


def newest_only(transport: Transport, labels: Labels | None = None) -> Transport:
    """`transport` whose `pending` leaves out, per (sender, agent, session), every item older
    than the newest whole (non-delta) bundle, and whose `ack` of that bundle also acks them.
    `labels`: labels read before, by transport, item id and digest (the sync daemon lists
    the same items every few seconds; it keeps them, and bounds them)."""
    pending: Callable[[], Awaitable[list[Incoming]]] = transport.pending
    ack: Callable[[Incoming], Awaitable[None]] = transport.ack
    replaced: dict[str, list[Incoming]] = {}

    async def newest_pending() -> list[Incoming]:
        from commuter.sync.label import label_of

        items = await pending()
        replaced.clear()
        sealed = [i for i in items if i.sealed and i.sender and not i.legacy]
        senders = [i.sender for i in sealed]
        twice = [i for i in sealed if senders.count(i.sender) > 1]
        if not twice:
            return items
        groups: dict[tuple[bytes, str, str], list[tuple[str, int, Incoming, bool]]] = {}
        for index, item in enumerate(items):
            if item not in twice:
                continue
            memo = f"{item.transport}:{item.id}:{item.digest}"
            if labels is not None and memo in labels:
                label = labels[memo]
            else:
                try:
                    label = await label_of(transport.ctx, transport, item)
                except (CommuterError, OSError):
                    label = None
                if labels is not None and item.digest:
                    labels[memo] = label
            if label is None or not label.sender_key or label.refusal:
                continue
            key = (label.sender_key, label.agent, label.session_id)
            groups.setdefault(key, []).append((label.created_at, index, item, label.delta))
        dropped: set[int] = set()
        for entries in groups.values():
            entries.sort(key=lambda e: (e[0], e[1]))
            # The newest whole bundle makes everything before it redundant; deltas after it
            # build on it (and on each other) and are all imported, in order.
            wholes = [n for n, e in enumerate(entries) if not e[3]]
            if not wholes or wholes[-1] == 0:
                continue
            newest_at, _, newest, _ = entries[wholes[-1]]
            # Only what was made strictly before it (created_at has whole seconds: a tie
            # says nothing about which came first, so both stay).
            older = [e for e in entries[: wholes[-1]] if e[0] < newest_at]
            if not older:
                continue
            replaced[newest.id] = [e[2] for e in older]
            dropped |= {e[1] for e in older}
        return [item for index, item in enumerate(items) if index not in dropped]

    async def ack_with_replaced(item: Incoming) -> None:
        await ack(item)
        for old in replaced.pop(item.id, []):
            try:
                await ack(old)
            except CommuterError as exc:
                transport.warnings.append(
                    f"{old.label}: replaced by a newer push, not removed ({exc})"
                )
            else:
                transport.warnings.append(
                    f"{old.label}: an older push of the same session, replaced by "
                    f"{item.label}; removed"
                )

    setattr(transport, "pending", newest_pending)  # noqa: B010 - an instance's own methods
    setattr(transport, "ack", ack_with_replaced)  # noqa: B010
    return transport


def newest_factory(factory: Factory, *, labels: Labels | None = None) -> Factory:
    """A transport factory (transports.create) whose transports go through `newest_only`."""

    def make(name: str, ctx: TransportContext) -> Transport:
        return newest_only(factory(name, ctx), labels)

    return make
