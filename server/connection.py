"""The rules of one client connection, without I/O: frames and the time in, events out.

Theory of operation
-------------------
A :class:`Connection` is the server's side of one websocket after the handshake.  The I/O layer
(:mod:`server.app` on an asyncio loop today; a gateway worker on any backend tomorrow) feeds it
every data frame with :meth:`Connection.receive_frame` and the current time, and acts on the
events it returns:

* :class:`SendMessage` — queue a message (welcome, error, bye) for the client; ``droppable``
  messages (errors) may be dropped by a full queue, the others never are;
* :class:`CloseConnection` — flush what is queued, then close with ``code`` and ``reason``;
  a peer that broke the rules (``cut_off``) is not read from or waited for;
* :class:`HelloReceived` — the client asks for a session; the I/O layer claims one and answers
  with :meth:`Connection.welcome` or :meth:`Connection.refuse`;
* :class:`SpectateReceived` — the client asks to watch; the I/O layer checks the spectator cap
  and answers with :meth:`Connection.watching` or :meth:`Connection.refuse`;
* :class:`InputReceived` — a valid input to forward to the world;
* :class:`ByeReceived` — the client is leaving: its session ends now.

The connection owns its phase (:class:`ConnectionPhase`), hello-first and duplicate-hello
checks, the spectator rules (a spectator never sends input: close 1008; it sends nothing at all
while it watches, so the idle timeout does not apply to it: websockets' keepalive pings, which
browsers answer by themselves, find dead spectators, and the spectator cap bounds the rest),
the strike count of bad messages in a row, the input token bucket, decoding with the negotiated
codec, the hello and idle timeouts (:meth:`Connection.check_timeouts`, which the I/O
layer calls at least every :data:`TIMER_RESOLUTION` seconds) and every close code.  It never
reads a clock or touches a socket, so every rule is tested on literal frames and a virtual clock
(tests/server/test_connection.py).

Control frames (ping, pong) never reach a :class:`Connection`: websockets answers pings itself.
:class:`ControlBudget` is the rule the transport (:mod:`server.transport`) applies to them.

Close codes (RFC 6455 section 7.4; 4000-4999 are the application's own)::

    1000 normal          the client said bye
    1001 going away      the server is shutting down
    1008 policy          message before hello, second hello (or spectate), an input from a
                         spectator, too many bad messages in a row,
                         messages far over the rate limit, no hello within hello_timeout,
                         nothing received within idle_timeout, per-address cap, control
                         frames over budget
    1009 too big         frame over max_frame
    1011 internal error  a bug on our side
    1013 try again later no free player entity, the server's connection cap, or the
                         spectator cap
    4000 replaced        the session was resumed on another connection
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from enum import Enum

from server.protocol import (
    CLIENT_MESSAGES,
    Bye,
    Codec,
    Error,
    ErrorCode,
    Hello,
    Input,
    Message,
    ProtocolError,
    Spectate,
    Watching,
    Welcome,
)
from server.sessions import check_transition

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_POLICY = 1008
CLOSE_TOO_BIG = 1009
CLOSE_INTERNAL = 1011
CLOSE_TRY_LATER = 1013
#: Application close code: the session was resumed on another connection (RFC 6455 reserves
#: 4000-4999 for applications; 1000 "normal" would hide why the evicted client lost its entity).
CLOSE_REPLACED = 4000
#: Close codes for a peer that broke the rules: it is cut off — its input is discarded from then
#: on and its connection closed without waiting for its close frame, which a hostile peer may
#: never send while it keeps writing (:meth:`server.transport.GuardedConnection.fail`).
MISBEHAVIOUR = frozenset({CLOSE_POLICY, CLOSE_TOO_BIG})

#: Close reasons are limited to 123 bytes of UTF-8 by RFC 6455; 120 characters of ASCII fit.
MAX_CLOSE_REASON = 120
#: A client whose frames beyond the input rate limit reach this multiple of the rate (sustained
#: over a second, with as much burst) is flooding, not jittering: close 1008.  Dropped frames
#: still cost the server parsing; a client at 5x the limit gets ~1 s of them.
FLOOD_FACTOR = 4.0
#: Seconds between the I/O layer's calls to :meth:`Connection.check_timeouts` (a timeout fires
#: at most this late).
TIMER_RESOLUTION = 0.5


class ConnectionPhase(Enum):
    """A websocket connection's protocol phase (the server's view)."""

    AWAITING_HELLO = "awaiting_hello"
    PLAYING = "playing"
    SPECTATING = "spectating"  # watches the whole world; may send bye, nothing else
    CLOSING = "closing"      # a close was decided; frames still arriving are drained unread
    CLOSED = "closed"


CONNECTION_TRANSITIONS: dict[ConnectionPhase, frozenset[ConnectionPhase]] = {
    ConnectionPhase.AWAITING_HELLO: frozenset({ConnectionPhase.PLAYING,
                                               ConnectionPhase.SPECTATING,
                                               ConnectionPhase.CLOSING, ConnectionPhase.CLOSED}),
    ConnectionPhase.PLAYING: frozenset({ConnectionPhase.CLOSING, ConnectionPhase.CLOSED}),
    ConnectionPhase.SPECTATING: frozenset({ConnectionPhase.CLOSING, ConnectionPhase.CLOSED}),
    ConnectionPhase.CLOSING: frozenset({ConnectionPhase.CLOSED}),
    ConnectionPhase.CLOSED: frozenset(),
}


# ---- events -------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SendMessage:
    """Queue ``message`` for the client; a full queue may drop it when ``droppable``."""

    message: Message
    droppable: bool = False


@dataclass(frozen=True, slots=True)
class CloseConnection:
    """Flush what is queued, then close the websocket with ``code`` and ``reason``."""

    code: int
    reason: str

    @property
    def cut_off(self) -> bool:
        """The peer broke the rules: read nothing more from it and do not wait for its close
        frame (:data:`MISBEHAVIOUR`)."""
        return self.code in MISBEHAVIOUR


@dataclass(frozen=True, slots=True)
class HelloReceived:
    """The client asks for a session (``hello.token`` set: resume that one)."""

    hello: Hello


@dataclass(frozen=True, slots=True)
class SpectateReceived:
    """The client asks to watch the whole world (a spectator: no entity, no inputs)."""

    spectate: Spectate


@dataclass(frozen=True, slots=True)
class InputReceived:
    """A valid input from a playing client, to apply at the next tick boundary."""

    input: Input


@dataclass(frozen=True, slots=True)
class ByeReceived:
    """The client said bye: end its session now (no grace period)."""

    reason: str


Event = (SendMessage | CloseConnection | HelloReceived | SpectateReceived | InputReceived
         | ByeReceived)


# ---- limits -------------------------------------------------------------------------------------
@dataclass(frozen=True, kw_only=True)
class ConnectionLimits:
    """What one connection may make the server do.

    Attributes:
        max_frame: largest data frame in bytes; a client message is < 200 bytes, 4 KiB leaves
            room for names without letting a peer make us parse megabytes (larger: close 1009).
        input_rate, input_burst: data frames per second and the bucket size (twice the 30 Hz
            tick rate, and a few frames of network jitter); extra frames are dropped unread,
            with at most one ``rate_limited`` error per second, and a client whose dropped
            frames outrun :data:`FLOOD_FACTOR` times the rate is closed (1008).
        max_strikes: bad messages in a row before the connection is closed (1008).
        hello_timeout: seconds from the handshake to hello (10 s: a bot says hello within
            milliseconds; a connection that never does only holds a slot).
        idle_timeout: seconds without any data frame from a client that said hello (120 s: a
            player sends inputs at 20 Hz and a spectating client acks; two minutes of silence
            is a dead or abandoned client).  websockets' keepalive pings catch dead TCP peers
            sooner; this catches live peers that only answer pings.
    """

    max_frame: int = 4096
    input_rate: float = 60.0
    input_burst: float = 10.0
    max_strikes: int = 8
    hello_timeout: float = 10.0
    idle_timeout: float = 120.0

    def __post_init__(self) -> None:
        for name in ("input_rate", "input_burst", "hello_timeout", "idle_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0")
        for name in ("max_frame", "max_strikes"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")


class TokenBucket:
    """Classic token bucket: ``rate`` tokens per second, at most ``burst`` saved up.

    Args:
        rate: sustained allowance per second.
        burst: bucket size.
        now: the current time (seconds; any monotonic origin).
    """

    __slots__ = ("_last", "_tokens", "burst", "rate")

    def __init__(self, *, rate: float, burst: float, now: float) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("need rate > 0 and burst >= 1")
        self.rate = rate
        self.burst = burst
        self._tokens = burst
        self._last = now

    def take(self, now: float, amount: float = 1.0) -> bool:
        """Take ``amount`` tokens if there are that many; False leaves the bucket as it was."""
        tokens = min(self.burst, self._tokens + (now - self._last) * self.rate)
        self._last = now
        if tokens >= amount:
            self._tokens = tokens - amount
            return True
        self._tokens = tokens
        return False


@dataclass(frozen=True, kw_only=True)
class ControlLimits:
    """Budget for a client's control frames (pings and pongs), which websockets answers itself.

    Attributes:
        rate, burst: control frames per second and the bucket size.  Browsers never ping; a
            client library pings every 10-30 s; 4/s with a burst of 16 leaves room for a
            latency probe and none for a flood (each ping costs a pong write).
        bytes_rate, bytes_burst: control payload bytes per second and the bucket size (a
            control frame carries at most 125 bytes).
    """

    rate: float = 4.0
    burst: float = 16.0
    bytes_rate: float = 1024.0
    bytes_burst: float = 4096.0

    def __post_init__(self) -> None:
        for name in ("rate", "bytes_rate"):
            if not getattr(self, name) > 0:
                raise ValueError(f"control {name} must be > 0")
        for name in ("burst", "bytes_burst"):
            if getattr(self, name) < 1:
                raise ValueError(f"control {name} must be >= 1")


class ControlBudget:
    """One connection's control-frame budget: frames and payload bytes, two token buckets.

    Args:
        limits: the budget.
        now: the current time.
    """

    __slots__ = ("_bytes", "_frames")

    def __init__(self, limits: ControlLimits, now: float) -> None:
        self._frames = TokenBucket(rate=limits.rate, burst=limits.burst, now=now)
        self._bytes = TokenBucket(rate=limits.bytes_rate, burst=limits.bytes_burst, now=now)

    def allow(self, frames: int, nbytes: int, now: float) -> bool:
        """Spend ``frames`` control frames of ``nbytes`` payload in all; False: over budget."""
        ok_frames = self._frames.take(now, frames)
        return self._bytes.take(now, nbytes) and ok_frames


# ---- the connection -----------------------------------------------------------------------------
class Connection:
    """The rules of one client connection (see the module docstring).

    Args:
        codec: the negotiated subprotocol's codec.
        limits: the connection's limits.
        now: the time of the handshake (starts the hello timeout).
        counters: server-wide counters this connection adds to (``messages_in``, ``bytes_in``,
            ``bad_messages``, ``rate_limited``, ``inputs``, ``hello_timeouts``,
            ``idle_timeouts``); a private Counter when None.
        errors_sent: server-wide count of error messages by code.
    """

    def __init__(self, codec: Codec, limits: ConnectionLimits, *, now: float,
                 counters: Counter[str] | None = None,
                 errors_sent: Counter[str] | None = None) -> None:
        self.codec = codec
        self.limits = limits
        self.phase = ConnectionPhase.AWAITING_HELLO
        self.counters: Counter[str] = Counter() if counters is None else counters
        self.errors_sent: Counter[str] = Counter() if errors_sent is None else errors_sent
        self.strikes = 0
        self.close_code: int | None = None
        self.close_reason = ""
        self.said_bye = False
        self.opened = now
        self.last_frame = now
        self._bucket = TokenBucket(rate=limits.input_rate, burst=limits.input_burst, now=now)
        flood = limits.input_rate * FLOOD_FACTOR
        self._drops = TokenBucket(rate=flood, burst=max(1.0, flood), now=now)
        self._last_rate_error = -1e18

    # ---- phase ------------------------------------------------------------------------------
    @property
    def spectating(self) -> bool:
        """Whether this connection watches (it was granted a spectator's place)."""
        return self.phase is ConnectionPhase.SPECTATING

    @property
    def closing(self) -> bool:
        """A close was decided (or the connection is closed): frames are drained unread."""
        return self.close_code is not None

    @property
    def cut_off(self) -> bool:
        """The close decided is for breaking the rules (:attr:`CloseConnection.cut_off`)."""
        return self.close_code in MISBEHAVIOUR

    def _move(self, new: ConnectionPhase) -> None:
        check_transition(CONNECTION_TRANSITIONS, self.phase, new)
        self.phase = new

    def _close(self, code: int, reason: str) -> list[Event]:
        if self.close_code is not None:
            return []
        self.close_code = code
        self.close_reason = reason[:MAX_CLOSE_REASON]
        self._move(ConnectionPhase.CLOSING)
        return [CloseConnection(code, self.close_reason)]

    def _fail(self, code: ErrorCode, reason: str, close_code: int) -> list[Event]:
        """An error the client is told about, then a close with ``close_code``."""
        if self.close_code is not None:
            return []
        self.errors_sent[str(code)] += 1
        return [SendMessage(Error(str(code), reason)), *self._close(close_code, reason)]

    def _error(self, code: ErrorCode, reason: str) -> list[Event]:
        self.errors_sent[str(code)] += 1
        return [SendMessage(Error(str(code), reason), droppable=True)]

    # ---- input ------------------------------------------------------------------------------
    def receive_frame(self, data: bytes | str, now: float) -> list[Event]:
        """One data frame from the client (text or binary), received at ``now``."""
        if self.close_code is not None:
            return []  # closing: drain unread (websockets must keep reading to see the close)
        lim = self.limits
        count = self.counters
        count["messages_in"] += 1
        count["bytes_in"] += len(data)
        self.last_frame = now
        if len(data) > lim.max_frame:
            return self._fail(ErrorCode.TOO_LARGE,
                              f"frame of {len(data)} bytes exceeds the {lim.max_frame}-byte limit",
                              CLOSE_TOO_BIG)
        if not self._bucket.take(now):
            count["rate_limited"] += 1
            if not self._drops.take(now):
                count["floods"] += 1
                return self._fail(ErrorCode.RATE_LIMITED,
                                  f"far more than {lim.input_rate:g} messages/s", CLOSE_POLICY)
            if now - self._last_rate_error >= 1.0:  # one error per second, not one per frame
                self._last_rate_error = now
                return self._error(ErrorCode.RATE_LIMITED,
                                   f"more than {lim.input_rate:g} messages/s; "
                                   "extra messages are dropped")
            return []
        try:
            msg = self.codec.decode(data, accept=CLIENT_MESSAGES, max_size=lim.max_frame)
        except ProtocolError as exc:
            count["bad_messages"] += 1
            self.strikes += 1
            if self.strikes >= lim.max_strikes:
                return self._fail(ErrorCode.TOO_MANY_ERRORS,
                                  f"{self.strikes} bad messages in a row; last: {exc}",
                                  CLOSE_POLICY)
            return self._error(exc.code, str(exc))
        self.strikes = 0
        if isinstance(msg, Input):
            if self.phase is ConnectionPhase.SPECTATING:
                count["spectator_inputs"] += 1
                return self._fail(ErrorCode.SPECTATOR_INPUT, "spectators cannot send inputs",
                                  CLOSE_POLICY)
            if self.phase is not ConnectionPhase.PLAYING:
                return self._fail(ErrorCode.HELLO_FIRST, "send hello before anything else",
                                  CLOSE_POLICY)
            count["inputs"] += 1
            return [InputReceived(msg)]
        if isinstance(msg, Hello | Spectate):
            if self.phase is not ConnectionPhase.AWAITING_HELLO:
                return self._fail(ErrorCode.DUPLICATE_HELLO,
                                  f"{'spectate' if self.spectating else 'hello'} was already "
                                  "received; a connection plays or watches, once",
                                  CLOSE_POLICY)
            if isinstance(msg, Spectate):
                return [SpectateReceived(msg)]
            return [HelloReceived(msg)]
        assert isinstance(msg, Bye)
        self.said_bye = True
        return [ByeReceived(msg.reason), *self._close(CLOSE_NORMAL, "bye")]

    # ---- answers from the I/O layer -----------------------------------------------------------
    def welcome(self, welcome: Welcome) -> list[Event]:
        """The hello was granted a session: the client plays from now on."""
        if self.close_code is not None:
            return []
        self._move(ConnectionPhase.PLAYING)
        return [SendMessage(welcome)]

    def watching(self, watching: Watching) -> list[Event]:
        """The spectate was granted: the client watches from now on (views, no inputs)."""
        if self.close_code is not None:
            return []
        self._move(ConnectionPhase.SPECTATING)
        return [SendMessage(watching)]

    def refuse(self, code: ErrorCode, reason: str, close_code: int | None = None) -> list[Event]:
        """The hello was refused: an error, and a close when ``close_code`` is given (else the
        client may send hello again, e.g. after a bad token)."""
        if close_code is None:
            return self._error(code, reason)
        return self._fail(code, reason, close_code)

    def replaced(self) -> list[Event]:
        """The session was resumed on another connection: tell this one and close it (4000)."""
        return self._fail(ErrorCode.REPLACED, "session resumed on another connection",
                          CLOSE_REPLACED)

    def shutdown(self, reason: str) -> list[Event]:
        """The server is stopping: bye, then close 1001."""
        if self.close_code is not None:
            return []
        return [SendMessage(Bye(reason)), *self._close(CLOSE_GOING_AWAY, reason)]

    def abort(self, code: int, reason: str) -> list[Event]:
        """Close for a reason outside the protocol (a cap, our own error): no error message."""
        return self._close(code, reason)

    def closed(self) -> None:
        """The transport is gone (whatever the reason)."""
        if self.phase is not ConnectionPhase.CLOSED:
            self._move(ConnectionPhase.CLOSED)
        if self.close_code is None:
            self.close_code = CLOSE_NORMAL

    # ---- time ---------------------------------------------------------------------------------
    def deadline(self) -> float | None:
        """When :meth:`check_timeouts` would next close this connection (None: never)."""
        if self.close_code is not None:
            return None
        if self.phase is ConnectionPhase.AWAITING_HELLO:
            return self.opened + self.limits.hello_timeout
        if self.phase is ConnectionPhase.SPECTATING:
            return None  # a spectator sends nothing while it watches (module docstring)
        return self.last_frame + self.limits.idle_timeout

    def check_timeouts(self, now: float) -> list[Event]:
        """Close a connection whose hello or idle timeout has passed at ``now``."""
        due = self.deadline()
        if due is None or now < due:
            return []
        if self.phase is ConnectionPhase.AWAITING_HELLO:
            self.counters["hello_timeouts"] += 1
            return self._fail(ErrorCode.HELLO_TIMEOUT,
                              f"no hello within {self.limits.hello_timeout:g} s", CLOSE_POLICY)
        self.counters["idle_timeouts"] += 1
        return self._fail(ErrorCode.IDLE_TIMEOUT,
                          f"nothing received for {self.limits.idle_timeout:g} s", CLOSE_POLICY)


__all__ = [
    "CLOSE_GOING_AWAY", "CLOSE_INTERNAL", "CLOSE_NORMAL", "CLOSE_POLICY", "CLOSE_REPLACED",
    "CLOSE_TOO_BIG", "CLOSE_TRY_LATER", "CONNECTION_TRANSITIONS", "ByeReceived",
    "CloseConnection", "Connection", "ConnectionLimits", "ConnectionPhase", "ControlBudget",
    "ControlLimits", "Event", "HelloReceived", "InputReceived", "SendMessage",
    "SpectateReceived", "TokenBucket",
]
