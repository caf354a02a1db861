"""Live events (DESIGN §13): an owner's events written to the state backend, and
followed by ``GET /events``.

Publishing: :meth:`LiveEvents.publish_events` appends many events in one round trip
(:class:`~flask_obitox.state.EventFanIn`), so a batch of 100 signed files costs one.

Following: each process runs **one** reader thread per state backend
(:class:`EventHub`). It blocks in one read over the streams of every owner that has an
open stream in this process, and hands what it reads to those streams
(:class:`EventFeed`); an idle process costs Redis that one blocked read. A feed that
opens for an owner the reader is not following wakes the reader up so it follows that
owner too. A backend without :class:`~flask_obitox.state.EventFanIn` (or
:attr:`LiveEvents.events_fan_in` set to ``False``, for measuring) has each feed wait
on its own owner's stream instead.

Every feed delivers each event once, in order: it remembers the id of the last event it
delivered and drops anything not after it, whichever of the reader or its own catch-up
read saw the event first.
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import orjson

from ..errors import ObitoXError, StateUnavailable
from ..state import EventFanIn, EventStream, InvalidCursor
from ..state.capabilities import supports
from ..state.cursor import parse_event_id
from .base import DomainBase

logger = logging.getLogger("flask_obitox.events")

#: Every event type a stream carries, in the order of DESIGN §13.
EVENT_TYPES = (
    "upload.signed",
    "upload.progress",
    "multipart.initiated",
    "upload.completed",
    "upload.rejected",
    "upload.aborted",
    "upload.expired",
    "upload.deleted",
    "group.created",
    "group.progress",
    "group.completed",
    "group.failed",
    "group.cancelled",
    "processing.completed",
    "processing.failed",
    "upload.ready",
)
#: Events one read returns at most (per owner).
READ_COUNT = 100
#: Seconds the reader blocks before it looks again (it is woken for new owners).
READER_WAIT = 30.0
#: Seconds a feed waits for a late reader thread before failing its stream.
_READER_GONE = 5.0

Event = tuple[str, dict[str, Any]]


def _after(event_id: str, position: str | None) -> bool:
    return position is None or parse_event_id(event_id) > parse_event_id(position)


class EventFeed:
    """One open stream of one owner's events, in order, filtered.

    Iterate it for batches of ``(id, event)``; an empty batch means ``heartbeat``
    seconds passed without an event (time for a keep-alive). Iteration ends when the
    state backend fails: the client reconnects with the last id it got and loses
    nothing. :meth:`close` it when the client goes.
    """

    def __init__(
        self,
        state: Any,
        owner: str,
        position: str | None,
        first: list[Event],
        *,
        heartbeat: float,
        group_id: str | None = None,
        upload_id: str | None = None,
    ) -> None:
        self.owner = owner
        self.heartbeat = heartbeat
        self.group_id = group_id
        self.upload_id = upload_id
        self._state = state
        self._position = position
        self._pending: list[Event] = first
        self._inbox: deque[list[Event]] = deque()
        self._ready = threading.Condition()
        self._failed = False
        self._closed = False
        self._hub: EventHub | None = None
        #: Waits on its own owner's stream (no hub), see :attr:`LiveEvents.events_fan_in`.
        self._direct = True
        self._catch_up = False

    # -- the hub's side ---------------------------------------------------------------

    def deliver(self, events: list[Event]) -> None:
        with self._ready:
            self._inbox.append(events)
            self._ready.notify()

    def fail(self) -> None:
        with self._ready:
            self._failed = True
            self._ready.notify()

    # -- the stream's side ------------------------------------------------------------

    def wants(self, event: Mapping[str, Any]) -> bool:
        """Whether ``event`` passes the feed's filters (the ids in its ``data``)."""
        if self.group_id is None and self.upload_id is None:
            return True
        data = event.get("data")
        if not isinstance(data, Mapping):
            return False
        if self.upload_id is not None and data.get("uploadId") != self.upload_id:
            return False
        return self.group_id is None or data.get("groupId") == self.group_id

    def _fresh(self, events: list[Event]) -> list[Event]:
        """``events`` after the last one delivered (the position moves past them), then
        filtered."""
        fresh: list[Event] = []
        for event_id, event in events:
            if _after(event_id, self._position):
                self._position = event_id
                if self.wants(event):
                    fresh.append((event_id, event))
        return fresh

    def _next_from_hub(self) -> list[Event] | None:
        """What the reader handed over, waiting up to a heartbeat; ``None`` when the
        stream must end."""
        with self._ready:
            if not self._inbox and not self._failed and not self._closed:
                self._ready.wait(self.heartbeat)
            if self._failed or self._closed:
                return None
            batches = list(self._inbox)
            self._inbox.clear()
        return [event for batch in batches for event in batch]

    def _next_direct(self) -> list[Event]:
        return self._state.wait_for_events(  # type: ignore[no-any-return]
            self.owner, self._position, timeout=self.heartbeat, count=READ_COUNT
        )

    def __iter__(self) -> Iterator[list[Event]]:
        try:
            if self._pending:
                yield self._fresh(self._pending)
                self._pending = []
            if self._catch_up:
                # The reader was past our position when we joined: read what lies
                # between ourselves, until a short page says we are level.
                while True:
                    page = self._state.read_events(self.owner, self._position, READ_COUNT)
                    if page:
                        yield self._fresh(page)
                    if len(page) < READ_COUNT:
                        break
            while not self._closed:
                if self._direct:
                    events = self._next_direct()
                else:
                    got = self._next_from_hub()
                    if got is None:
                        return
                    events = got
                yield self._fresh(events)
        except StateUnavailable as error:
            logger.warning("Event stream of %s ends: %s", self.owner, error.detail)
        finally:
            self.close()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._ready:
            self._ready.notify()
        if self._hub is not None:
            self._hub.unsubscribe(self)


class EventHub:
    """One reader thread for one state backend in this process, feeding every open
    :class:`EventFeed` of the owners it follows."""

    def __init__(self, state: EventFanIn, *, wait: float = READER_WAIT) -> None:
        self.state = state
        self.wait = wait
        self._lock = threading.Lock()
        self._feeds: dict[str, set[EventFeed]] = {}
        # owner -> (position read up to, registration number): an owner that left and
        # came back gets a new number, so a read begun before is not applied to it.
        self._owners: dict[str, tuple[str | None, int]] = {}
        self._registrations = 0
        self._thread: threading.Thread | None = None

    @property
    def open_feeds(self) -> int:
        with self._lock:
            return sum(len(feeds) for feeds in self._feeds.values())

    def subscribe(self, feed: EventFeed, position: str | None) -> None:
        """Follow ``feed``'s owner from ``position`` (if it is new here) and hand ``feed``
        everything read from now on. Raises :class:`StateUnavailable` (leaving nothing
        behind) when the reader could not be woken for a new owner."""
        with self._lock:
            feeds = self._feeds.get(feed.owner)
            new_owner = feeds is None
            if feeds is None:
                feeds = self._feeds[feed.owner] = set()
                self._registrations += 1
                self._owners[feed.owner] = (position, self._registrations)
            else:
                ahead = self._owners[feed.owner][0]
                feed._catch_up = ahead is not None and _after(ahead, position)
            feeds.add(feed)
            feed._hub = self
            feed._direct = False
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="obitox-events", daemon=True)
                self._thread.start()
                new_owner = False  # a new reader reads every owner from the start
        if new_owner:
            try:
                self.state.wake_event_waiters()
            except StateUnavailable:
                self.unsubscribe(feed)
                feed._hub = None
                raise

    def unsubscribe(self, feed: EventFeed) -> None:
        with self._lock:
            feeds = self._feeds.get(feed.owner)
            if feeds is None or feed not in feeds:
                return
            feeds.discard(feed)
            if not feeds:
                # The reader drops the owner at its next read; no need to wake it.
                del self._feeds[feed.owner]
                del self._owners[feed.owner]

    def _run(self) -> None:
        while True:
            with self._lock:
                if not self._feeds:
                    self._thread = None
                    return
                owners = dict(self._owners)
            try:
                found = self.state.wait_for_owners(
                    {owner: position for owner, (position, _) in owners.items()},
                    self.wait,
                    READ_COUNT,
                )
            except (StateUnavailable, InvalidCursor) as error:
                self._fail_all(error)
                return
            except Exception:
                logger.exception("The event reader failed; its streams end")
                self._fail_all(None)
                return
            deliveries: list[tuple[list[EventFeed], list[Event]]] = []
            with self._lock:
                for owner, events in found.items():
                    current = self._owners.get(owner)
                    if current is None or current[1] != owners[owner][1]:
                        continue  # left, or left and came back from another position
                    self._owners[owner] = (events[-1][0], current[1])
                    deliveries.append((list(self._feeds[owner]), events))
            for feeds, events in deliveries:
                for feed in feeds:
                    feed.deliver(events)

    def _fail_all(self, error: BaseException | None) -> None:
        """End every stream: its client reconnects with its last id and loses nothing."""
        with self._lock:
            feeds = [feed for owned in self._feeds.values() for feed in owned]
            self._feeds.clear()
            self._owners.clear()
            self._thread = None
        if error is not None:
            logger.warning("Event reader stopped (%s); %d streams end", error, len(feeds))
        for feed in feeds:
            feed._hub = None
            feed.fail()


_hubs: weakref.WeakKeyDictionary[Any, EventHub] = weakref.WeakKeyDictionary()
_hubs_lock = threading.Lock()


def hub_for(state: EventFanIn) -> EventHub:
    """The one :class:`EventHub` of ``state`` in this process (apps sharing a backend
    share its reader, which keeps the backend's wake-ups to itself)."""
    with _hubs_lock:
        hub = _hubs.get(state)
        if hub is None:
            hub = _hubs[state] = EventHub(state)
        return hub


class LiveEvents(DomainBase):
    """Publishing events and opening event streams (DESIGN §13)."""

    #: Whether streams share one reader per process (``False``: each stream waits on
    #: its own; slower, kept to measure the difference, see benchmarks/bench_events.py).
    events_fan_in: bool = True

    def publish_events(self, events: Sequence[tuple[str, Mapping[str, Any] | bytes]]) -> None:
        """Append ``(owner, event)`` pairs to the owners' streams, in one round trip
        when the backend can (:class:`~flask_obitox.state.EventFanIn`)."""
        state: Any = self.state
        if not events or not supports(state, EventStream):
            return
        if supports(state, EventFanIn):
            state.append_events(events)
            return
        for owner, event in events:
            state.append_event(owner, orjson.loads(event) if isinstance(event, bytes) else event)

    def open_event_feed(
        self,
        owner: str,
        last_event_id: str | None = None,
        *,
        group_id: str | None = None,
        upload_id: str | None = None,
    ) -> EventFeed:
        """``owner``'s events after ``last_event_id`` (every one kept since then), or
        from now on without one. A malformed or unknown id is 400 ``INVALID_INPUT``;
        the state store down is 503, both before anything is streamed."""
        state: Any = self.state
        if not supports(state, EventStream):
            raise ObitoXError("NOT_FOUND", "This state backend keeps no events.", status=404)
        first: list[Event] = []
        if last_event_id:
            try:
                first = state.read_events(owner, last_event_id, READ_COUNT)
            except InvalidCursor:
                raise ObitoXError(
                    "INVALID_INPUT",
                    "Last-Event-ID is not an event id this stream handed out; reconnect "
                    "without it to follow new events.",
                    details={"lastEventId": last_event_id},
                ) from None
            position: str | None = first[-1][0] if first else last_event_id
        else:
            position = state.last_event_id(owner)
        feed = EventFeed(
            state,
            owner,
            # The feed delivers ``first`` itself, so it starts from the id asked for.
            last_event_id or position,
            first,
            heartbeat=float(self.settings.events_heartbeat),
            group_id=group_id,
            upload_id=upload_id,
        )
        if (
            self.events_fan_in
            and supports(state, EventFanIn)
            and getattr(state, "many_owner_reads", True)
        ):
            hub_for(state).subscribe(feed, position or "0-0")
        return feed
