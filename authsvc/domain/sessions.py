"""SessionService: the use cases behind every RPC."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from typing import NoReturn, Protocol

from authsvc.core.clock import Clock
from authsvc.core.errors import (
    InvalidCredentials,
    PendingLoginInvalid,
    RateLimited,
    RefreshTokenExpired,
    RefreshTokenInvalid,
    RefreshTokenReused,
    RegistrationDisabled,
    SecondFactorInvalid,
    ServerBusy,
    SessionExpired,
    SessionLimitReached,
    SessionNotFound,
    SessionRevoked,
    StepUpRequired,
    TokenExpired,
    TokenInvalid,
    Unauthenticated,
    UserDisabled,
    UserNotFound,
)
from authsvc.core.factors import (
    PASSWORD_METHOD,
    Assurance,
    AssuranceLevel,
    AuthMethod,
    FactorKind,
    FactorProof,
    SecondFactorPolicy,
    SecondFactorStep,
    StoredPendingLogin,
    VerifiedFactor,
)
from authsvc.core.lineage import LineageStep, RefreshOutcome
from authsvc.core.models import (
    SYSTEM,
    Account,
    AuditEvent,
    DeviceInfo,
    EndedSession,
    IssuedTokens,
    Location,
    LogoutScope,
    Principal,
    RefreshTokenRecord,
    RequestOrigin,
    RotationAttempt,
    Session,
    SessionEnd,
    SessionEnder,
    SessionEndReason,
    SessionId,
    SessionPage,
    User,
    UserId,
)
from authsvc.core.session_limits import SessionCap
from authsvc.domain import idempotent_refresh, refresh_tokens, validation
from authsvc.domain.access_tokens import AccessSigner, AccessTokens
from authsvc.domain.devices import describe_device
from authsvc.domain.factor_ports import PendingLogin, SecondFactors, SteppedUp
from authsvc.domain.liveness import Liveness, LivenessCache
from authsvc.domain.passwords import Lane, PasswordHasher
from authsvc.domain.pending_logins import MAX_FAILED_ATTEMPTS, PendingLoginStore
from authsvc.domain.session_endings import SessionEndings
from authsvc.domain.session_limits import SessionLimit
from authsvc.domain.throttle import ATTEMPT_TIME_LIMIT, LoginAttempt, LoginThrottle, SignUpThrottle
from authsvc.domain.tombstones import as_the_user_sees_it, end_of, refusal
from authsvc.telemetry import metrics

__all__ = [
    "AccountStore",
    "Locator",
    "LockedSession",
    "SessionPolicy",
    "SessionService",
    "SessionStore",
    "UserStore",
    "Validation",
]

_log = logging.getLogger(__name__)

# Bounds the successor chain walked for one grace-window refresh.
_MAX_CHAIN_HOPS = 16


class UserStore(Protocol):
    """Accounts. Every method raises DatabaseUnavailable when the database cannot be
    reached in time; then nothing it would have written is written."""

    async def create_user(self, user: User, *, event: AuditEvent) -> None:
        """Insert `user` and record `event` in one transaction. EmailTaken, and nothing
        stored, if its email is in use."""
        ...

    async def create_user_if_new(
        self, user: User, *, registered: AuditEvent, taken: AuditEvent
    ) -> bool:
        """Insert `user` and record `registered`, or, if its email is in use, change nothing
        and record `taken` with the existing account's id as its user_id. True if inserted.
        One transaction of as many statements either way, so the two cost the same; of
        concurrent calls with one email, exactly one inserts."""
        ...

    async def find_by_email(self, email: str) -> User | None:
        """The account whose email is exactly `email` (callers pass the canonical form),
        or None if there is none."""
        ...

    async def find_by_id(self, user_id: UserId) -> User | None:
        """The account with this id, or None if there is none."""
        ...

    async def update_password_hash(
        self, user_id: UserId, password_hash: str, now: datetime, *, replacing: str
    ) -> bool:
        """Replace the account's password hash, as changed at `now`, if it is still
        `replacing`. False, with nothing written, if the account is gone or its password
        changed since `replacing` was read."""
        ...


class AccountStore(Protocol):
    """Changes to an account that end its sessions with them, each in one transaction
    that holds the account's row lock before it reads the sessions: a session created
    concurrently is either ended by the change or refused by `create_session`. Every
    method raises DatabaseUnavailable when the database cannot be reached in time; then
    nothing it would have written is written."""

    async def disable(
        self,
        user_id: UserId,
        *,
        now: datetime,
        reason: str,
        ender: SessionEnder,
        event: AuditEvent,
    ) -> tuple[Account, list[EndedSession]] | None:
        """Mark the account disabled at `now` for `reason` (an account disabled already
        keeps its first time and reason), revoke each of its live sessions for the
        revocation feed as USER_DISABLED by `ender`, and record `event` once as
        `SessionStore.end_user_sessions` does. The account after it, and the sessions
        revoked; None, with nothing written, if there is no such account."""
        ...

    async def enable(self, user_id: UserId, *, now: datetime, event: AuditEvent) -> Account | None:
        """Clear the account's disabling (if any) and record `event`. The account after
        it; None, with nothing written, if there is no such account."""
        ...

    async def change_password(
        self,
        user_id: UserId,
        *,
        verified_hash: str,
        new_hash: str,
        now: datetime,
        keep: SessionId,
        event: AuditEvent,
    ) -> list[EndedSession] | None:
        """If the account's password hash is still `verified_hash`, replace it with
        `new_hash` as changed at `now`, revoke each live session but `keep` for the
        revocation feed as PASSWORD_CHANGED, by the user from `keep`, and record `event` once as
        `SessionStore.end_user_sessions` does. The sessions revoked; None, with nothing
        written, if the account is gone or its password changed since it was read."""
        ...

    async def record(self, event: AuditEvent) -> None:
        """Append `event` to the audit trail."""
        ...


class LockedSession(Protocol):
    """A session whose row lock the current transaction holds, from
    `SessionStore.lock_session_by_token`; usable only inside that block. What its methods
    write commits when the block exits normally and is rolled back if it raises.
    DatabaseUnavailable as for `SessionStore`."""

    # The session as read under the lock: no other change to it can be in flight.
    session: Session

    async def find_token(self, token_hash: bytes) -> RefreshTokenRecord | None:
        """The refresh token with this hash if it is this session's (looked up under the
        session's user), rotated or not, expired or not (until the sweeper deletes it);
        None otherwise. Reads the latest committed state."""
        ...

    async def rotate(
        self,
        *,
        consumed: RefreshTokenRecord,
        successor_box: bytes,
        successor_hash: bytes,
        now: datetime,
        idle_expires_at: datetime,
        signing_key_id: str,
        idempotency_key_hash: bytes | None = None,
    ) -> uuid.UUID:
        """Mark `consumed` rotated at `now`, keeping `successor_box` and
        `idempotency_key_hash`; store its successor (hash `successor_hash`) expiring at
        `idle_expires_at`; and slide the session: last active `now`, idle deadline
        `idle_expires_at`, its latest access token signed by `signing_key_id`. With a key
        hash, `consumed` stays on record until its successor's expiry, if that is later
        than its own. The successor's id."""
        ...

    async def record_presentation(self, step: LineageStep) -> None:
        """Append `step` to the session's refresh lineage."""
        ...

    async def revoke(
        self,
        *,
        now: datetime,
        reason: str,
        ended_by: SessionEndReason,
        ender: SessionEnder,
        event: AuditEvent,
    ) -> None:
        """Revoke the session at `now` for `reason` (a session already revoked keeps its
        first revocation), logging it for the revocation feed as `ended_by`, recording
        `ender` as who ended it, and record `event`."""
        ...


class SessionStore(Protocol):
    """Sessions and their refresh tokens (stored as hashes, never raw).

    Every method but `find_token_owner` is given the user whose sessions it reads or
    changes, and touches nothing of any other user's (on Citus, one shard): a token or
    session of another user is as unknown as one that does not exist.
    A "live" session is not revoked and its idle deadline is after the `now` given.
    Every change to a session or its tokens holds that session's row lock, so changes to
    one session are serialised and never deadlock one another. Every method raises
    DatabaseUnavailable when the database cannot be reached in time; then nothing it
    would have written is written."""

    async def create_session(
        self,
        session: Session,
        *,
        token_hash: bytes,
        event: AuditEvent,
        new_user: User | None = None,
        verified_hash: str,
        signing_key_id: str,
        cap: SessionCap | None = None,
    ) -> list[EndedSession]:
        """Store `session` with its first refresh token (hash `token_hash`, expiring at the
        session's idle deadline) and the key of its first access token (`signing_key_id`),
        and `new_user` first if given, and record `event`: all or nothing. EmailTaken, and
        nothing stored, if `new_user`'s email is in use;
        UserDisabled, and nothing stored, if the session's account is disabled, even by a
        DisableUser that commits while this call is in flight; InvalidCredentials, and
        nothing stored, if the account is gone or its password hash is no longer
        `verified_hash` (the one the caller checked the password against): a password
        changed or reset while a sign-in was in flight does not let that sign-in in.

        With a `cap`, the user's row is locked first and the cap enforced in the same
        transaction: the sessions evicted (ended as SESSION_LIMIT_EVICTED, for the feed,
        each with the cap's audit event) are returned; SessionLimitReached, and nothing
        stored, if its policy refuses. Without one, nothing is locked or counted and
        nothing is evicted."""
        ...

    async def find_token_owner(self, token_hash: bytes) -> UserId | None:
        """The user of the refresh token with `token_hash`, rotated or not, while it is on
        record; None if there is none. Looks at every user's tokens: only for a token
        without a routing prefix (issued before it), so Refresh can then route it."""
        ...

    async def rotate_if_current(
        self,
        user_id: UserId,
        token_hash: bytes,
        *,
        successor_box: bytes,
        successor_hash: bytes,
        now: datetime,
        idle_timeout: timedelta,
        signing_key_id: str,
        lineage: RequestOrigin | None,
        idempotency_key_hash: bytes | None = None,
    ) -> RotationAttempt | None:
        """Refresh's common case, in one round trip. If `user_id`'s token with `token_hash` is
        unrotated and unexpired at `now` and its session live, mark it rotated (keeping
        `successor_box` and `idempotency_key_hash`, as `LockedSession.rotate` does),
        store its successor (`successor_hash`) expiring at the new idle deadline
        (`now + idle_timeout`, capped by the session's lifetime) and slide the session to
        that deadline, its latest access token signed by `signing_key_id`; the attempt
        carries it. With `lineage` (the caller's origin), also record the rotation as a
        ROTATED step of the session's lineage.

        None for an unknown token (or another user's). A known token in any other state
        (rotated, expired, its session over) comes back with `idle_expires_at` None and
        nothing written, for `lock_session_by_token` to sort out."""
        ...

    def lock_session_by_token(
        self, user_id: UserId, token_hash: bytes
    ) -> contextlib.AbstractAsyncContextManager[LockedSession | None]:
        """Lock `user_id`'s session that owns the token with `token_hash` for the block, one
        transaction: it commits when the block exits normally and rolls back if it
        raises. A rotation or revocation of that session elsewhere waits for the block,
        or the block for it. Yields None for an unknown token (or another user's)."""
        ...

    async def get_session(self, user_id: UserId, session_id: SessionId) -> Session | None:
        """The user's session, live or ended (with its end_reason and ended_by, when
        recorded), or None if there is none (never was, or swept) or it is another user's;
        one primary-key lookup."""
        ...

    async def record_assurance(
        self, user_id: UserId, session_id: SessionId, assurance: Assurance, *, now: datetime
    ) -> bool:
        """Set a live session's level and methods (a step-up); False if it is not live."""
        ...

    async def session_exists(self, session_id: SessionId) -> bool:
        """Whether a session with this id exists, whoever's (until swept). By id alone, not
        routed by user: only after `get_session` found nothing, to tell another user's
        session from a swept one."""
        ...

    async def list_live_sessions(
        self,
        user_id: UserId,
        *,
        now: datetime,
        limit: int,
        after: tuple[datetime, SessionId] | None,
    ) -> SessionPage:
        """One page of the user's live sessions: at most `limit`, most recent activity
        first (then by id, descending), starting after the cursor `after` (a page's
        `next_cursor`, its last item's (last_active_at, id)); `next_cursor` is None on
        the last page. Nothing is locked."""
        ...

    async def revoke_session(
        self,
        user_id: UserId,
        session_id: SessionId,
        *,
        now: datetime,
        reason: str,
        ended_by: SessionEndReason,
        ender: SessionEnder,
        event: AuditEvent,
    ) -> EndedSession | None:
        """Revoke the user's session at `now` for `reason`, by `ender`, log it for the
        revocation feed as `ended_by` and record `event`, stamped with the session,
        atomically. The session if this call revoked it; None, with nothing written, if it
        had ended already (revoked, or past its idle deadline: it keeps its expiry), is
        another user's or does not exist (see `session_belongs_to`)."""
        ...

    async def session_belongs_to(self, user_id: UserId, session_id: SessionId) -> bool:
        """Whether the session exists (revoked or not, until swept) and is the user's."""
        ...

    async def revoke_user_sessions(
        self,
        user_id: UserId,
        *,
        now: datetime,
        reason: str,
        ended_by: SessionEndReason,
        ender: SessionEnder,
        event: AuditEvent,
        keep: SessionId | None = None,
    ) -> list[EndedSession]:
        """Revoke each live session of the user but `keep` at `now` for `reason`, by
        `ender`, log each for the revocation feed as `ended_by`, and record one copy of
        `event` per session, stamped with it, atomically. Returns the sessions it revoked
        (none if none was live)."""
        ...

    async def end_user_sessions(
        self,
        user_id: UserId,
        *,
        now: datetime,
        revoke_reason: str,
        ended_by: SessionEndReason,
        ender: SessionEnder,
        event: AuditEvent,
        keep: SessionId | None = None,
    ) -> list[EndedSession]:
        """Revoke each live session of the user but `keep` at `now` for `revoke_reason`,
        by `ender`, log each for the revocation feed as `ended_by`, and record `event` once, for the
        user, its detail extended with `revoked_session_count` and `revoked_session_ids`:
        atomically, and even when no session was live. Returns the sessions it revoked."""
        ...


class Locator(Protocol):
    """Where an address is, from a GeoIP database."""

    def locate(self, ip_address: str) -> Location:
        """The country and city of `ip_address`, each empty when unknown: an address the
        database does not hold (private, reserved) or a string that is no address. Raises
        nothing for those; a lookup takes microseconds, so it runs on the event loop."""
        ...


@dataclass(frozen=True, slots=True, kw_only=True)
class SessionPolicy:
    idle_timeout: timedelta
    lifetime: timedelta
    remember_me_lifetime: timedelta
    # How long a rotated refresh token still answers with its successor, for
    # concurrent refreshes and for a client that lost the first answer.
    refresh_grace: timedelta
    # Record every presentation of a refresh token (its lineage), with its caller's address.
    refresh_lineage: bool
    registration_enabled: bool
    # Register answers EMAIL_TAKEN and signs in; off, its answer is the same for a taken email.
    registration_reveals_accounts: bool
    password_min_length: int
    session_limit: SessionLimit = field(default_factory=SessionLimit)
    # Who must have a second factor, how recent one must be for a sensitive RPC, and how
    # long a login waits for its second step.
    second_factor_policy: SecondFactorPolicy = SecondFactorPolicy.MARKED
    step_up_window: timedelta = timedelta(minutes=10)
    pending_login_lifetime: timedelta = timedelta(minutes=5)


@dataclass(frozen=True, slots=True, kw_only=True)
class Validation:
    """The answer to "may I trust this access token right now?"."""

    # Why the token must not be trusted (the api answers with its reason); None if it may.
    inactive: Unauthenticated | None
    # Set whenever the signature was ours, active or not.
    principal: Principal | None

    @property
    def active(self) -> bool:
        return self.inactive is None


def _origin_of(device: DeviceInfo) -> RequestOrigin:
    return RequestOrigin(ip_address=device.ip_address, user_agent=device.user_agent)


@dataclass(frozen=True, slots=True)
class _Rotated:
    token: str
    expires_at: datetime
    token_id: uuid.UUID


class SessionService:
    def __init__(
        self,
        *,
        users: UserStore,
        sessions: SessionStore,
        accounts: AccountStore,
        hasher: PasswordHasher,
        access_tokens: AccessTokens,
        clock: Clock,
        policy: SessionPolicy,
        throttle: LoginThrottle,
        sign_ups: SignUpThrottle,
        pending_logins: PendingLoginStore,
        liveness: LivenessCache | None = None,
        locator: Locator | None = None,
    ) -> None:
        """`liveness`: where the process keeps recent revocations; None checks every
        session in the database. `locator`: where sessions' login addresses are; None
        records no location. The users' second factors are set with `use_factors` (they
        end sessions through `endings`, so they are built after this service)."""
        self._pending = pending_logins
        self._factors: SecondFactors | None = None
        self._liveness = liveness
        # Every ending this service commits is applied here; shared with other use cases.
        self.endings = SessionEndings(liveness)
        self._locator = locator
        self._throttle = throttle
        self._sign_ups = sign_ups
        self._users = users
        self._sessions = sessions
        self._accounts = accounts
        self._hasher = hasher
        self._access = access_tokens
        self._clock = clock
        self._policy = policy

    def use_factors(self, factors: SecondFactors) -> None:
        """Sign users with a second factor in in two steps (app.py wires it once)."""
        self._factors = factors

    # --- signing in -------------------------------------------------------

    async def register(
        self,
        *,
        email: str,
        password: str,
        display_name: str,
        remember_me: bool,
        device: DeviceInfo,
    ) -> IssuedTokens | SecondFactorStep | None:
        """Create an account. Unless the policy reveals accounts, answer None whether the email
        was free or taken, after the same work (one hash, one statement): the caller signs in
        with Login. Revealing, sign the new account in, or raise EmailTaken.

        A place on the sign-up hashing lane is taken first (refused at once when the
        lane is full, before any database work), then the per-address and total limits,
        then the hash: a flood of sign-ups never takes a sign-in's thread."""
        if not self._policy.registration_enabled:
            raise RegistrationDisabled("registration is disabled")
        refused = AuditEvent(
            event="register_failed",
            occurred_at=self._clock.now(),
            origin=_origin_of(device),
            detail={"reason": "rate_limited"},
        )
        email, display_name = self._checked(email, password, display_name)
        client = self._sign_ups.client_of(device.ip_address)
        async with self._hasher.reserve(Lane.SIGN_UP, client=client) as hashing:
            await self._sign_ups.take(device.ip_address, refused)
            user = self._new_user_record(email, display_name, await hashing.hash(password))
        if not self._policy.registration_reveals_accounts:
            await self._register_quietly(user, device)
            return None
        if self._policy.second_factor_policy is SecondFactorPolicy.ALL:
            # Every account must enrol first: the new one gets a pending login, no session.
            await self._users.create_user(
                user,
                event=AuditEvent(
                    event="user_registered",
                    occurred_at=user.created_at,
                    user_id=user.id,
                    origin=_origin_of(device),
                ),
            )
            _log.info("user registered", extra={"event": "register", "user_id": str(user.id)})
            return await self._second_step(user, remember_me, device, user.password_hash)
        tokens = await self._start_session(
            user.id,
            remember_me,
            device,
            event="user_registered",
            new_user=user,
            verified_hash=user.password_hash,
            assurance=Assurance.password_at(user.created_at),
        )
        _log.info("user registered", extra={"event": "register", "user_id": str(user.id)})
        return tokens

    async def _register_quietly(self, user: User, device: DeviceInfo) -> None:
        origin = _origin_of(device)
        created = await self._users.create_user_if_new(
            user,
            registered=AuditEvent(
                event="user_registered", occurred_at=user.created_at, user_id=user.id, origin=origin
            ),
            taken=AuditEvent(
                event="register_email_taken", occurred_at=user.created_at, origin=origin
            ),
        )
        if created:
            _log.info("user registered", extra={"event": "register", "user_id": str(user.id)})
        else:
            _log.info("register with a taken email", extra={"event": "register_email_taken"})

    async def create_user(
        self, *, email: str, password: str, display_name: str, origin: RequestOrigin
    ) -> User:
        """Create an account without signing it in (the operator's `users create`), audited
        as Register's accounts are, with the operator as its origin."""
        user = await self._new_user(email=email, password=password, display_name=display_name)
        await self._users.create_user(
            user,
            event=AuditEvent(
                event="user_created", occurred_at=user.created_at, user_id=user.id, origin=origin
            ),
        )
        _log.info("user created", extra={"event": "user_created", "user_id": str(user.id)})
        return user

    async def _new_user(self, *, email: str, password: str, display_name: str) -> User:
        email, display_name = self._checked(email, password, display_name)
        # The operator's own command: held to no client's share.
        password_hash = await self._hasher.hash(password, Lane.SIGN_UP, client="")
        return self._new_user_record(email, display_name, password_hash)

    def _checked(self, email: str, password: str, display_name: str) -> tuple[str, str]:
        """The canonical email and the cleaned display name, if the fields are valid."""
        email = validation.normalize_email(email)
        validation.check_new_password(
            password, min_length=self._policy.password_min_length, email=email
        )
        display_name = validation.clean_label(
            "display_name", display_name, max_length=validation.MAX_LABEL_LENGTH
        )
        return email, display_name

    def _new_user_record(self, email: str, display_name: str, password_hash: str) -> User:
        return User(
            id=UserId(uuid.uuid4()),
            email=email,
            display_name=display_name,
            password_hash=password_hash,
            created_at=self._clock.now(),
        )

    @metrics.counting_failures(
        (InvalidCredentials, metrics.LOGIN_BAD_CREDENTIALS),
        (UserDisabled, metrics.LOGIN_DISABLED),
        # A full hashing queue refuses for load, not for this login's history.
        (ServerBusy, None),
        (RateLimited, metrics.LOGIN_THROTTLED),
        (SessionLimitReached, metrics.LOGIN_SESSION_LIMIT),
    )
    async def login(
        self, *, email: str, password: str, remember_me: bool, device: DeviceInfo
    ) -> IssuedTokens | SecondFactorStep:
        """Check the password and start a session, or, when the user has a second factor
        or must enrol one, a pending login that only its second step completes.

        An unknown email costs one argon2 verify like a known one, and both
        failures raise the same InvalidCredentials, so neither the answer nor
        its timing tells whether an account exists. Only once the password is
        verified does a disabled account say so (UserDisabled), also when it was
        disabled while this call was in flight.
        """
        email = validation.normalize_email(email)
        validation.check_password_given(password)
        origin = _origin_of(device)
        refused = AuditEvent(
            event="login_failed",
            occurred_at=self._clock.now(),
            origin=origin,
            detail={"reason": "rate_limited"},
        )
        client = self._throttle.client_of(device.ip_address)
        async with self._throttle.attempt(email, device.ip_address, refused) as attempt:
            async with asyncio.timeout(ATTEMPT_TIME_LIMIT.total_seconds()):
                user = await self._users.find_by_email(email)
                if user is None:
                    await self._hasher.burn(password, client=client)
                    await self._login_failed(attempt, None, origin)
                if not await self._hasher.verify(user.password_hash, password, client=client):
                    await self._login_failed(attempt, user.id, origin)
            await attempt.succeeded()
        if user.disabled_at is not None:
            await self._refuse_disabled(user.id, origin)
        verified_hash = user.password_hash
        if self._hasher.needs_rehash(user.password_hash):
            new_hash = await self._hasher.hash(password, Lane.SIGN_IN, client=client)
            if await self._users.update_password_hash(
                user.id, new_hash, self._clock.now(), replacing=user.password_hash
            ):
                verified_hash = new_hash
        step = await self._second_step(user, remember_me, device, verified_hash)
        if step is not None:
            return step
        try:
            # Refused if the password changed since it was verified above.
            tokens = await self._start_session(
                user.id,
                remember_me,
                device,
                event="login_succeeded",
                verified_hash=verified_hash,
                assurance=Assurance.password_at(self._clock.now()),
            )
        except UserDisabled:
            # Disabled since the account was read: no session was stored.
            await self._refuse_disabled(user.id, origin)
        except SessionLimitReached:
            await self._refuse_over_limit(user.id, origin)
        metrics.LOGIN_OK.inc()
        _log.info(
            "login",
            extra={"event": "login", "user_id": str(user.id), "session_id": str(tokens.session_id)},
        )
        return tokens

    async def _login_failed(
        self, attempt: LoginAttempt, user_id: UserId | None, origin: RequestOrigin
    ) -> NoReturn:
        _log.info("login failed", extra={"event": "login_failed", "user_id": str(user_id or "")})
        event = AuditEvent(
            event="login_failed",
            occurred_at=self._clock.now(),
            user_id=user_id,
            origin=origin,
            detail={"reason": "invalid_credentials"},
        )
        await attempt.failed(event)
        raise InvalidCredentials("invalid email or password")

    async def _refuse_disabled(self, user_id: UserId, origin: RequestOrigin) -> NoReturn:
        _log.info(
            "login refused: account disabled",
            extra={"event": "login_failed", "user_id": str(user_id), "reason": "user_disabled"},
        )
        await self._accounts.record(
            AuditEvent(
                event="login_failed",
                occurred_at=self._clock.now(),
                user_id=user_id,
                origin=origin,
                detail={"reason": "user_disabled"},
            )
        )
        raise UserDisabled("the account is disabled")

    async def _refuse_over_limit(self, user_id: UserId, origin: RequestOrigin) -> NoReturn:
        _log.info(
            "login refused: session limit",
            extra={"event": "login_failed", "user_id": str(user_id), "reason": "session_limit"},
        )
        limit = self._policy.session_limit
        await self._accounts.record(limit.refusal(user_id, origin, self._clock.now()))
        raise SessionLimitReached("the account has as many sessions as its limit allows")

    async def _start_session(
        self,
        user_id: UserId,
        remember_me: bool,
        device: DeviceInfo,
        *,
        event: str,
        verified_hash: str,
        assurance: Assurance,
        new_user: User | None = None,
    ) -> IssuedTokens:
        now = self._clock.now()
        if self._locator is not None:
            # Once, at sign-in, like the address it locates: Refresh does not move either.
            where = self._locator.locate(device.ip_address)
            device = replace(device, country=where.country, city=where.city)
        lifetime = self._policy.remember_me_lifetime if remember_me else self._policy.lifetime
        expires_at = now + lifetime
        session = Session(
            id=SessionId(uuid.uuid4()),
            user_id=user_id,
            created_at=now,
            last_active_at=now,
            idle_expires_at=min(now + self._policy.idle_timeout, expires_at),
            expires_at=expires_at,
            remember_me=remember_me,
            device=device,
            revoked_at=None,
            revoke_reason=None,
            assurance=assurance,
        )
        refresh_token = refresh_tokens.new_refresh_token(user_id)
        # Chosen before the write, which records it: the key that signs this session's token.
        signer = self._access.signer()
        evicted = await self._sessions.create_session(
            session,
            token_hash=refresh_tokens.hash_refresh_token(refresh_token),
            event=AuditEvent(
                event=event,
                occurred_at=now,
                user_id=user_id,
                session_id=session.id,
                origin=_origin_of(device),
                detail={"remember_me": remember_me},
            ),
            new_user=new_user,
            verified_hash=verified_hash,
            cap=self._policy.session_limit.cap(session.id, _origin_of(device), now),
            signing_key_id=signer.kid,
        )
        if evicted:
            self._user_sessions_ended(user_id, evicted, SessionEndReason.SESSION_LIMIT_EVICTED, now)
        metrics.SESSIONS_CREATED.inc()
        return self._issue(
            user_id, session.id, refresh_token, session.idle_expires_at, signer, assurance
        )

    def _issue(
        self,
        user_id: UserId,
        session_id: SessionId,
        refresh_token: str,
        refresh_expires: datetime,
        signer: AccessSigner,
        assurance: Assurance,
    ) -> IssuedTokens:
        # The refresh token expires at the session's idle deadline, which never passes its
        # absolute one.
        access = self._access.mint(
            user_id,
            session_id,
            session_ends_at=refresh_expires,
            assurance=assurance,
            signer=signer,
        )
        return IssuedTokens(
            user_id=user_id,
            session_id=session_id,
            access_token=access.token,
            access_token_expires_at=access.expires_at,
            refresh_token=refresh_token,
            refresh_token_expires_at=refresh_expires,
        )

    # --- refresh ----------------------------------------------------------

    @metrics.counting_failures(
        (RefreshTokenInvalid, metrics.REFRESH_INVALID),
        (RefreshTokenExpired, metrics.REFRESH_EXPIRED),
        (RefreshTokenReused, metrics.REFRESH_REUSED),
        (SessionRevoked, metrics.REFRESH_SESSION_OVER),
        (SessionExpired, metrics.REFRESH_SESSION_OVER),
    )
    async def refresh(
        self, refresh_token: str, origin: RequestOrigin, *, idempotency_key: str = ""
    ) -> IssuedTokens:
        """Rotate a refresh token.

        Presenting an already-rotated token again with the idempotency key of its
        rotation returns the same successor while that is current (a retry whose
        answer was lost). Otherwise, within the grace window it returns the current
        successor (concurrent refreshes all succeed on one chain); after the window
        it revokes the whole session, because it means the token was stolen.
        InvalidArgument for a malformed key.
        """
        key = idempotent_refresh.validated_key(idempotency_key)
        user_id, token_hash = await self._route_presented(refresh_token)
        key_hash = None if key is None else idempotent_refresh.hash_key(refresh_token, key)
        successor = refresh_tokens.new_refresh_token(user_id)
        successor_box = refresh_tokens.seal_successor(refresh_token, successor)
        successor_hash = refresh_tokens.hash_refresh_token(successor)
        signer = self._access.signer()
        now = self._clock.now()
        # The common case in one round trip; everything else (grace window,
        # reuse, expiry, revocation) takes the transaction below.
        attempt = await self._sessions.rotate_if_current(
            user_id,
            token_hash,
            successor_box=successor_box,
            successor_hash=successor_hash,
            now=now,
            idle_timeout=self._policy.idle_timeout,
            signing_key_id=signer.kid,
            lineage=origin if self._policy.refresh_lineage else None,
            idempotency_key_hash=key_hash,
        )
        if attempt is None:
            raise RefreshTokenInvalid("refresh token is not valid")
        if attempt.idle_expires_at is not None:
            tokens = self._issue(
                attempt.user_id,
                attempt.session_id,
                successor,
                attempt.idle_expires_at,
                signer,
                attempt.assurance,
            )
            metrics.REFRESH_OK.inc()
            return tokens
        async with self._sessions.lock_session_by_token(user_id, token_hash) as locked:
            if locked is None:
                raise RefreshTokenInvalid("refresh token is not valid")
            record = await self._check_presented(locked, token_hash, now)
            session = locked.session
            if record.rotated_at is None:
                idle_expires_at = min(now + self._policy.idle_timeout, session.expires_at)
                successor_id = await locked.rotate(
                    consumed=record,
                    successor_box=successor_box,
                    successor_hash=successor_hash,
                    now=now,
                    idle_expires_at=idle_expires_at,
                    signing_key_id=signer.kid,
                    idempotency_key_hash=key_hash,
                )
                rotated: _Rotated | None = _Rotated(successor, idle_expires_at, successor_id)
                outcome = metrics.REFRESH_OK
                step = RefreshOutcome.ROTATED
            elif retried := await idempotent_refresh.retried_rotation(
                locked, refresh_token, record, key_hash
            ):
                # Exactly-once Refresh: a retry of this rotation, whenever it comes.
                rotated = _Rotated(retried.token, retried.expires_at, retried.token_id)
                outcome = metrics.REFRESH_IDEMPOTENT_REPLAY
                step = RefreshOutcome.IDEMPOTENT_REPLAY
            elif now - record.rotated_at <= self._policy.refresh_grace:
                rotated = await self._current_successor(locked, refresh_token, record)
                outcome = metrics.REFRESH_GRACE_REPLAY
                step = RefreshOutcome.GRACE_REPLAY
            else:
                rotated = None
                step = RefreshOutcome.REUSE_DETECTED
            await self._record_presentation(locked, record, rotated, step, now, origin)
            if rotated is None:
                await self._revoke_for_reuse(locked, now, origin)
        if rotated is None:
            self._ended_here([_ended(session)], now, SessionEndReason.REFRESH_TOKEN_REUSE)
            raise _reused(now)
        tokens = self._issue(
            session.user_id, session.id, rotated.token, rotated.expires_at, signer, session.proven
        )
        outcome.inc()
        return tokens

    async def _record_presentation(
        self,
        locked: LockedSession,
        presented: RefreshTokenRecord,
        answer: _Rotated | None,
        outcome: RefreshOutcome,
        now: datetime,
        origin: RequestOrigin,
    ) -> None:
        """Refresh lineage's step for a presentation decided under the session's lock
        (any outcome: an idempotent replay is one more caller of this)."""
        if not self._policy.refresh_lineage:
            return
        rotated_at = presented.rotated_at
        await locked.record_presentation(
            LineageStep(
                token_id=presented.id,
                successor_token_id=None if answer is None else answer.token_id,
                presented_at=now,
                origin=origin,
                outcome=outcome,
                within_grace=rotated_at is not None
                and now - rotated_at <= self._policy.refresh_grace,
            )
        )

    @staticmethod
    async def _revoke_for_reuse(
        locked: LockedSession, now: datetime, origin: RequestOrigin
    ) -> None:
        """Theft response: a spent token came back after the grace window."""
        session = locked.session
        _log.warning(
            "refresh token reuse: session revoked",
            extra={
                "event": "refresh_token_reused",
                "user_id": str(session.user_id),
                "session_id": str(session.id),
            },
        )
        await locked.revoke(
            now=now,
            reason="refresh_token_reused",
            ended_by=SessionEndReason.REFRESH_TOKEN_REUSE,
            ender=SYSTEM,
            event=AuditEvent(
                event="refresh_token_reused",
                occurred_at=now,
                user_id=session.user_id,
                session_id=session.id,
                origin=origin,
                detail={"session_revoked": True},
            ),
        )

    async def _route_presented(self, refresh_token: str) -> tuple[UserId, bytes]:
        """The presented token's user and hash. Its prefix names the user (an edited one
        names a user who holds no token with this hash); a legacy token without one costs
        a lookup of its user by hash first."""
        if not refresh_tokens.is_well_formed(refresh_token):
            raise RefreshTokenInvalid("refresh token is not valid")
        token_hash = refresh_tokens.hash_refresh_token(refresh_token)
        user_id = refresh_tokens.routed_user(refresh_token)
        if user_id is None:
            user_id = await self._sessions.find_token_owner(token_hash)
        if user_id is None:
            raise RefreshTokenInvalid("refresh token is not valid")
        return user_id, token_hash

    async def _check_presented(
        self, locked: LockedSession, token_hash: bytes, now: datetime
    ) -> RefreshTokenRecord:
        """The presented token's record, if its session is live and it has not expired.

        A rotated token is on record until its own expiry (then the sweeper deletes
        it): replaying it before then is reuse, since it could still have been
        used; after, it is only expired and leaves the session alone. Within the
        grace period of its rotation it still recovers its successor, expired or
        not (two tabs refreshing as the token expires).
        """
        self._check_live(locked.session, now)
        record = await locked.find_token(token_hash)
        if record is None or not hmac.compare_digest(record.token_hash, token_hash):
            raise RefreshTokenInvalid("refresh token is not valid")
        in_grace = (
            record.rotated_at is not None and now - record.rotated_at <= self._policy.refresh_grace
        )
        if now >= record.expires_at and not in_grace:
            raise RefreshTokenExpired("refresh token has expired")
        return record

    async def _current_successor(
        self, locked: LockedSession, presented: str, record: RefreshTokenRecord
    ) -> _Rotated:
        """Open the successor boxes from `presented` up to the live token."""
        token, current = presented, record
        for _ in range(_MAX_CHAIN_HOPS):
            if current.rotated_at is None:
                return _Rotated(token, current.expires_at, current.id)
            opened = (
                None
                if current.successor_box is None
                else refresh_tokens.open_successor(token, current.successor_box)
            )
            found = (
                None
                if opened is None
                else await locked.find_token(refresh_tokens.hash_refresh_token(opened))
            )
            if opened is None or found is None:
                raise RefreshTokenInvalid("refresh token is not valid")
            token, current = opened, found
        raise RefreshTokenInvalid("refresh token is not valid")

    @staticmethod
    def _check_live(session: Session, now: datetime) -> None:
        end = end_of(session, now)
        if end is not None:
            raise refusal(end)

    # --- access tokens ----------------------------------------------------

    async def authenticate(self, access_token: str) -> Principal:
        """The principal of an access token whose session is live right now."""
        try:
            principal = await self._access.verify(access_token)
        except TokenExpired as exc:
            raise await self._expiry(exc) from None
        await self._check_session(principal)
        return principal

    async def _expiry(self, expired: TokenExpired) -> Unauthenticated:
        """Why an expired token is refused: its session's end when its `exp` was capped at
        that session's deadline and the session is over (as the answer was before tokens
        were capped), else its own expiry."""
        if not self._access.is_capped(expired.principal):
            return expired
        try:
            await self._check_session_in_database(expired.principal)
        except Unauthenticated as exc:
            return exc
        return expired

    async def _check_session(self, principal: Principal) -> None:
        """Raise unless the token's session is live and its user's. The token is unexpired,
        so its session is (its `exp` is capped at the session's deadlines): while the
        liveness cache is current and knows the session, it answers without a database
        read."""
        cache = self._liveness
        if cache is None:
            await self._check_session_in_database(principal)
            return
        known = cache.check(principal.session_id, principal.user_id)
        if known is Liveness.REVOKED:
            raise refusal(cache.end_of(principal.session_id))
        if known is Liveness.WRONG_USER:
            raise TokenInvalid("access token does not match its session")
        if known is Liveness.UNKNOWN:
            await self._check_session_in_database(principal)
            cache.checked_live(principal.session_id, principal.user_id)

    async def _check_session_in_database(self, principal: Principal) -> None:
        # Routed by the token's `sub`; the unrouted lookup runs only when that finds nothing.
        session = await self._sessions.get_session(principal.user_id, principal.session_id)
        if session is None:
            if await self._sessions.session_exists(principal.session_id):
                raise TokenInvalid("access token does not match its session")
            # Swept: it expired or was revoked long ago.
            raise SessionExpired("session has expired")
        self._check_live(session, self._clock.now())

    async def validate(self, access_token: str) -> Validation:
        """Introspect a token: an inactive token is an answer, not an error."""
        try:
            principal = await self._access.verify(access_token)
        except TokenExpired as exc:
            inactive = await self._expiry(exc)
            known = None if isinstance(inactive, TokenInvalid) else exc.principal
            return Validation(inactive=inactive, principal=known)
        except TokenInvalid as exc:
            return Validation(inactive=exc, principal=None)
        try:
            await self._check_session(principal)
        except TokenInvalid as exc:
            return Validation(inactive=exc, principal=None)
        except Unauthenticated as exc:
            return Validation(inactive=exc, principal=principal)
        return Validation(inactive=None, principal=principal)

    # --- second factors and step-up ----------------------------------------

    async def _second_step(
        self, user: User, remember_me: bool, device: DeviceInfo, verified_hash: str
    ) -> SecondFactorStep | None:
        """A pending login when the user has a factor (complete it with one) or must enrol
        one (the policy or an operator's mark); None: sign in with the password alone."""
        kinds = await self._factor_kinds(user.id)
        required = user.second_factor_required or (
            self._policy.second_factor_policy is SecondFactorPolicy.ALL
        )
        if not kinds and not required:
            return None
        now = self._clock.now()
        token = refresh_tokens.new_refresh_token(user.id)
        pending = StoredPendingLogin(
            id=uuid.uuid4(),
            user_id=user.id,
            email=user.email,
            password_hash=verified_hash,
            created_at=now,
            expires_at=now + self._policy.pending_login_lifetime,
            enrolment_required=not kinds,
            remember_me=remember_me,
            device_name=device.device_name,
            ip_address=device.ip_address,
            user_agent=device.user_agent,
        )
        await self._pending.create(pending, token_hash=refresh_tokens.hash_refresh_token(token))
        _log.info(
            "login awaits a second factor",
            extra={
                "event": "login_pending",
                "user_id": str(user.id),
                "enrolment_required": pending.enrolment_required,
            },
        )
        return SecondFactorStep(
            pending_login_token=token,
            expires_at=pending.expires_at,
            factor_kinds=kinds,
            enrolment_required=pending.enrolment_required,
        )

    async def _factor_kinds(self, user_id: UserId) -> frozenset[FactorKind]:
        return frozenset() if self._factors is None else await self._factors.factor_kinds(user_id)

    def _verifier(self) -> SecondFactors:
        if self._factors is None:
            raise SecondFactorInvalid("the second factor is not valid")
        return self._factors

    async def pending_login(self, token: str, *, for_enrolment: bool) -> PendingLogin:
        """SessionAssurance.pending_login. Its token is routed by its user as a refresh
        token is, and only its hash is stored."""
        user_id = (
            refresh_tokens.routed_user(token) if refresh_tokens.is_well_formed(token) else None
        )
        stored = (
            None
            if user_id is None
            else await self._pending.find(
                user_id,
                refresh_tokens.hash_refresh_token(token),
                now=self._clock.now(),
                max_failures=MAX_FAILED_ATTEMPTS,
            )
        )
        if stored is None or stored.enrolment_required is not for_enrolment:
            raise PendingLoginInvalid("the pending login is not valid: sign in again")
        return PendingLogin(
            id=stored.id,
            user_id=UserId(stored.user_id),
            email=stored.email,
            expires_at=stored.expires_at,
            enrolment_required=stored.enrolment_required,
            origin=RequestOrigin(ip_address=stored.ip_address, user_agent=stored.user_agent),
            stored=stored,
        )

    async def complete_login_with(
        self, token: str, proof: FactorProof, origin: RequestOrigin
    ) -> IssuedTokens:
        """CompleteLogin: verify one factor for a pending login, then start its session.
        A wrong code counts against the pending login and, through the factors, the login
        throttle."""
        pending = await self.pending_login(token, for_enrolment=False)
        try:
            verified = await self._verifier().verify(
                pending.user_id, pending.email, proof, origin=origin, binding=pending.id
            )
        except SecondFactorInvalid:
            await self._pending.failed(pending.user_id, pending.id)
            raise
        return await self.complete_login(pending, verified)

    async def complete_login(self, pending: PendingLogin, verified: VerifiedFactor) -> IssuedTokens:
        """SessionAssurance.complete_login."""
        stored = pending.stored
        if not await self._pending.consume(pending.user_id, pending.id, now=self._clock.now()):
            raise PendingLoginInvalid("the pending login is not valid: sign in again")
        device = describe_device(
            user_agent=stored.user_agent,
            ip_address=stored.ip_address,
            device_name=stored.device_name,
        )
        assurance = Assurance(
            AssuranceLevel.AAL2,
            (AuthMethod(method=PASSWORD_METHOD, verified_at=stored.created_at), verified.method()),
        )
        return await self._signed_in(
            pending.user_id, stored.remember_me, device, stored.password_hash, assurance
        )

    async def passkey_login(
        self, user_id: UserId, verified: VerifiedFactor, *, remember_me: bool, device: DeviceInfo
    ) -> IssuedTokens:
        """SessionAssurance.passkey_login."""
        user = await self._users.find_by_id(user_id)
        if user is None:
            raise SecondFactorInvalid("the passkey is not valid")
        assurance = Assurance(AssuranceLevel.AAL2, (verified.method(),))
        return await self._signed_in(user_id, remember_me, device, user.password_hash, assurance)

    async def _signed_in(
        self,
        user_id: UserId,
        remember_me: bool,
        device: DeviceInfo,
        verified_hash: str,
        assurance: Assurance,
    ) -> IssuedTokens:
        origin = _origin_of(device)
        try:
            tokens = await self._start_session(
                user_id,
                remember_me,
                device,
                event="login_succeeded",
                verified_hash=verified_hash,
                assurance=assurance,
            )
        except UserDisabled:
            await self._refuse_disabled(user_id, origin)
        except SessionLimitReached:
            await self._refuse_over_limit(user_id, origin)
        metrics.LOGIN_OK.inc()
        _log.info(
            "login",
            extra={
                "event": "login",
                "user_id": str(user_id),
                "session_id": str(tokens.session_id),
                "acr": assurance.level.acr,
            },
        )
        return tokens

    async def step_up_with(
        self, principal: Principal, proof: FactorProof, origin: RequestOrigin
    ) -> SteppedUp:
        """StepUp: verify one factor in the caller's session and record it there."""
        user = await self._users.find_by_id(principal.user_id)
        if user is None:
            raise SessionRevoked("session has been revoked")
        verified = await self._verifier().verify(
            user.id, user.email, proof, origin=origin, binding=principal.session_id
        )
        return await self.step_up(principal, verified)

    async def step_up(self, principal: Principal, verified: VerifiedFactor) -> SteppedUp:
        """SessionAssurance.step_up: the session's level and methods, then an access token
        that carries them. Its refresh token and id stay; Refresh keeps the new level."""
        session = await self._live_session(principal)
        assurance = session.proven.with_factor(verified)
        now = self._clock.now()
        if not await self._sessions.record_assurance(
            principal.user_id, principal.session_id, assurance, now=now
        ):
            raise SessionRevoked("session has been revoked")
        access = self._access.mint(
            principal.user_id,
            principal.session_id,
            session_ends_at=session.idle_expires_at,
            assurance=assurance,
        )
        _log.info(
            "session stepped up",
            extra={
                "event": "step_up",
                "user_id": str(principal.user_id),
                "session_id": str(principal.session_id),
                "factor": verified.kind.value,
            },
        )
        return SteppedUp(
            access_token=access.token,
            access_token_expires_at=access.expires_at,
            step_up_expires_at=verified.verified_at + self._policy.step_up_window,
        )

    async def require_step_up(self, principal: Principal) -> None:
        """SessionAssurance.require_step_up: for changes to the factors themselves."""
        await self._check_step_up(principal.user_id, principal.session_id, without_factor=True)

    async def _require_step_up_if_enrolled(self, user_id: UserId, session_id: SessionId) -> None:
        """For the sensitive RPCs a user without a factor may use as before."""
        await self._check_step_up(user_id, session_id, without_factor=False)

    async def _check_step_up(
        self, user_id: UserId, session_id: SessionId, *, without_factor: bool
    ) -> None:
        kinds = await self._factor_kinds(user_id)
        if not kinds and not without_factor:
            return
        session = await self._sessions.get_session(user_id, session_id)
        if session is None:
            raise SessionRevoked("session has been revoked")
        now = self._clock.now()
        window = self._policy.step_up_window
        proven = session.proven
        if kinds:
            at = proven.second_factor_at
            if at is None or now - at > window:
                raise StepUpRequired(
                    "verify a second factor with StepUp, then retry",
                    factor_types=",".join(sorted(kind.type_name for kind in kinds)),
                )
        elif now - proven.authenticated_at > window:
            raise StepUpRequired("sign in again, then retry", factor_types="")

    async def _live_session(self, principal: Principal) -> Session:
        session = await self._sessions.get_session(principal.user_id, principal.session_id)
        if session is None:
            raise SessionRevoked("session has been revoked")
        self._check_live(session, self._clock.now())
        return session

    # --- the account lifecycle --------------------------------------------

    async def change_password(
        self,
        principal: Principal,
        *,
        current_password: str,
        new_password: str,
        origin: RequestOrigin,
    ) -> int:
        """Replace the caller's password, given the current one, and end every other
        session of the account (PASSWORD_CHANGED); the caller's stays. Returns how many
        it ended.

        The new password meets the policy or WeakPassword, before anything else. The
        current one is checked as Login checks a password, under the login throttle for
        the account's email and the client address: a wrong one counts as a failed
        login and is InvalidCredentials, and once locked the answer is RateLimited. A
        stolen access token alone therefore cannot take the account over. Changed by a
        concurrent call since it was checked: InvalidCredentials, nothing written.
        """
        validation.check_password_given(current_password, field="current_password")
        await self._require_step_up_if_enrolled(principal.user_id, principal.session_id)
        user = await self._users.find_by_id(principal.user_id)
        if user is None:
            raise SessionRevoked("session has been revoked")
        validation.check_new_password(
            new_password,
            min_length=self._policy.password_min_length,
            email=user.email,
            field="new_password",
        )
        refused = AuditEvent(
            event="password_change_failed",
            occurred_at=self._clock.now(),
            user_id=user.id,
            session_id=principal.session_id,
            origin=origin,
            detail={"reason": "rate_limited"},
        )
        client = self._throttle.client_of(origin.ip_address)
        async with self._throttle.attempt(user.email, origin.ip_address, refused) as attempt:
            async with asyncio.timeout(ATTEMPT_TIME_LIMIT.total_seconds()):
                verified = await self._hasher.verify(
                    user.password_hash, current_password, client=client
                )
            if not verified:
                await self._password_change_failed(attempt, principal, origin)
            await attempt.succeeded()
        new_hash = await self._hasher.hash(new_password, Lane.SIGN_IN, client=client)
        now = self._clock.now()
        ended = await self._accounts.change_password(
            user.id,
            verified_hash=user.password_hash,
            new_hash=new_hash,
            now=now,
            keep=principal.session_id,
            event=AuditEvent(
                event="password_changed",
                occurred_at=now,
                user_id=user.id,
                session_id=principal.session_id,
                origin=origin,
            ),
        )
        if ended is None:
            raise InvalidCredentials("the current password is not valid")
        self._user_sessions_ended(user.id, ended, SessionEndReason.PASSWORD_CHANGED, now)
        return len(ended)

    async def _password_change_failed(
        self, attempt: LoginAttempt, principal: Principal, origin: RequestOrigin
    ) -> NoReturn:
        _log.info(
            "password change failed",
            extra={"event": "password_change_failed", "user_id": str(principal.user_id)},
        )
        await attempt.failed(
            AuditEvent(
                event="password_change_failed",
                occurred_at=self._clock.now(),
                user_id=principal.user_id,
                session_id=principal.session_id,
                origin=origin,
                detail={"reason": "invalid_credentials"},
            )
        )
        raise InvalidCredentials("the current password is not valid")

    async def disable_user(
        self, user_id: UserId, *, reason: str, ender: SessionEnder, event: AuditEvent
    ) -> tuple[Account, int]:
        """Disable the account for `reason` and end every session of it (USER_DISABLED),
        recording `event` (the operator's `admin_user_disabled`) in the same transaction
        with what it ended. Login refuses the account from then until `enable_user`, and
        no Login in flight leaves a session behind. Disabling a disabled account succeeds
        and keeps its first disabling. Returns the account after it and how many sessions
        it ended; UserNotFound if there is no such account."""
        now = self._clock.now()
        disabled = await self._accounts.disable(
            user_id, now=now, reason=reason, ender=ender, event=event
        )
        if disabled is None:
            raise UserNotFound("user not found")
        account, ended = disabled
        self._user_sessions_ended(user_id, ended, SessionEndReason.USER_DISABLED, now)
        return account, len(ended)

    async def enable_user(self, user_id: UserId, *, event: AuditEvent) -> Account:
        """Let a disabled account sign in again, recording `event` (the operator's
        `admin_user_enabled`) in the same transaction. Enabling an enabled account
        succeeds. Returns the account after it; UserNotFound if there is none."""
        account = await self._accounts.enable(user_id, now=self._clock.now(), event=event)
        if account is None:
            raise UserNotFound("user not found")
        _log.info("user enabled", extra={"event": "user_enabled", "user_id": str(user_id)})
        return account

    # --- managing sessions ------------------------------------------------

    async def list_sessions(
        self, principal: Principal, *, page_size: int, after: tuple[datetime, SessionId] | None
    ) -> SessionPage:
        return await self._sessions.list_live_sessions(
            principal.user_id, now=self._clock.now(), limit=page_size, after=after
        )

    async def get_session(
        self, principal: Principal, session_id: SessionId
    ) -> tuple[Session, SessionEnd | None]:
        """One of the caller's user's sessions, live or ended while it is kept, with how it
        ended (None while live; an operator unnamed). Another user's session and one that
        does not exist are the same SessionNotFound, after the same one lookup, so ids
        cannot be probed."""
        session = await self._sessions.get_session(principal.user_id, session_id)
        if session is None:
            raise SessionNotFound("session not found")
        end = end_of(session, self._clock.now())
        return session, None if end is None else as_the_user_sees_it(end)

    async def revoke_session(
        self, principal: Principal, session_id: SessionId, note: str, origin: RequestOrigin
    ) -> None:
        """Revoke one of the caller's sessions.

        Someone else's session and a session that does not exist get the same
        SessionNotFound, so ids cannot be probed. Revoking twice succeeds.
        """
        reason = f"revoked_by_user: {note}" if note else "revoked_by_user"
        now = self._clock.now()
        revoked = await self._sessions.revoke_session(
            principal.user_id,
            session_id,
            now=now,
            reason=reason,
            ended_by=SessionEndReason.USER_REVOKED,
            ender=SessionEnder.user(principal.session_id),
            event=AuditEvent(
                event="session_revoked",
                occurred_at=now,
                origin=origin,
                detail={"by_session_id": str(principal.session_id), "note": note},
            ),
        )
        if not revoked and not await self._sessions.session_belongs_to(
            principal.user_id, session_id
        ):
            raise SessionNotFound("session not found")
        if revoked:
            self._ended_here([revoked], now, SessionEndReason.USER_REVOKED)
            _log.info(
                "session revoked",
                extra={
                    "event": "session_revoked",
                    "user_id": str(principal.user_id),
                    "session_id": str(session_id),
                },
            )

    async def logout(self, principal: Principal, scope: LogoutScope, origin: RequestOrigin) -> int:
        return await self._logout(principal.user_id, principal.session_id, scope, origin)

    async def logout_with_refresh_token(
        self, refresh_token: str, scope: LogoutScope, origin: RequestOrigin
    ) -> int:
        """Logout for a client that holds only its refresh token.

        The token must be the session's current one (or within the grace
        window); a replayed old token is treated as theft, as in refresh.
        """
        user_id, token_hash = await self._route_presented(refresh_token)
        now = self._clock.now()
        async with self._sessions.lock_session_by_token(user_id, token_hash) as locked:
            if locked is None:
                raise RefreshTokenInvalid("refresh token is not valid")
            record = await self._check_presented(locked, token_hash, now)
            session = locked.session
            reused = (
                record.rotated_at is not None
                and now - record.rotated_at > self._policy.refresh_grace
            )
            if reused:
                # A replay is theft whichever RPC brings it: its lineage names it too.
                step = RefreshOutcome.REUSE_DETECTED
                await self._record_presentation(locked, record, None, step, now, origin)
                await self._revoke_for_reuse(locked, now, origin)
        if reused:
            self._ended_here([_ended(session)], now, SessionEndReason.REFRESH_TOKEN_REUSE)
            raise _reused(now)
        return await self._logout(session.user_id, session.id, scope, origin)

    async def _logout(
        self, user_id: UserId, session_id: SessionId, scope: LogoutScope, origin: RequestOrigin
    ) -> int:
        if scope is not LogoutScope.THIS_SESSION:
            # Ending the others is what a thief with one session would do first.
            await self._require_step_up_if_enrolled(user_id, session_id)
        now = self._clock.now()
        event = AuditEvent(
            event="logout",
            occurred_at=now,
            origin=origin,
            detail={"scope": scope.value, "by_session_id": str(session_id)},
        )
        ender = SessionEnder.user(session_id)
        if scope is LogoutScope.THIS_SESSION:
            ended = await self._sessions.revoke_session(
                user_id,
                session_id,
                now=now,
                reason="logout",
                ended_by=SessionEndReason.USER_LOGOUT,
                ender=ender,
                event=event,
            )
            ended_sessions = [] if ended is None else [ended]
        elif scope is LogoutScope.OTHER_SESSIONS:
            ended_sessions = await self._sessions.revoke_user_sessions(
                user_id,
                now=now,
                reason="logout_other_sessions",
                ended_by=SessionEndReason.USER_LOGOUT,
                ender=ender,
                event=event,
                keep=session_id,
            )
        else:
            ended_sessions = await self._sessions.revoke_user_sessions(
                user_id,
                now=now,
                reason="logout_all_sessions",
                ended_by=SessionEndReason.USER_LOGOUT,
                ender=ender,
                event=event,
            )
        self._ended_here(ended_sessions, now, SessionEndReason.USER_LOGOUT)
        count = len(ended_sessions)
        _log.info(
            "logout",
            extra={
                "event": "logout",
                "user_id": str(user_id),
                "session_id": str(session_id),
                "scope": scope.value,
                "revoked": count,
            },
        )
        return count

    async def end_user_sessions(
        self,
        user_id: UserId,
        reason: SessionEndReason,
        *,
        ender: SessionEnder,
        audit_event: str,
        origin: RequestOrigin,
        detail: dict[str, object] | None = None,
        keep: SessionId | None = None,
        note: str = "",
    ) -> int:
        """End every live session of the user but `keep`, for `reason`, by `ender`, through the
        revocation feed; this process refuses them before it returns. One audit event
        `audit_event` (from `origin`, with `detail`, the count and the ids ended) is
        written in the same transaction, even when no session was live. `note` joins
        the sessions' free-text revoke reason. Returns how many sessions this call
        ended: sessions already over are not counted."""
        now = self._clock.now()
        ended = await self._sessions.end_user_sessions(
            user_id,
            now=now,
            revoke_reason=f"{reason.value}: {note}" if note else reason.value,
            ended_by=reason,
            ender=ender,
            event=AuditEvent(
                event=audit_event,
                occurred_at=now,
                user_id=user_id,
                session_id=keep,
                origin=origin,
                detail=dict(detail or {}),
            ),
            keep=keep,
        )
        self._user_sessions_ended(user_id, ended, reason, now)
        return len(ended)

    def _user_sessions_ended(
        self, user_id: UserId, ended: list[EndedSession], reason: SessionEndReason, now: datetime
    ) -> None:
        self.endings.user_sessions_ended(user_id, ended, reason, now)

    def sessions_ended(
        self, user_id: UserId, ended: list[EndedSession], reason: SessionEndReason, now: datetime
    ) -> None:
        """The user's sessions another use case ended with `end_user_sessions`' statement
        inside its own transaction (a password reset, an account deletion, each with its
        change), now committed: applied and logged as `end_user_sessions` does."""
        self.endings.user_sessions_ended(user_id, ended, reason, now)

    def bulk_ended(
        self, ended: Sequence[EndedSession], reason: SessionEndReason, now: datetime
    ) -> None:
        """Sessions of any users that another use case ended (RevokeSessions' batches), now
        committed: applied as every ending is; the caller logs them, once per call."""
        self.endings.ended(ended, now, reason)

    def _ended_here(
        self, ended: Sequence[EndedSession], now: datetime, reason: SessionEndReason
    ) -> None:
        self.endings.ended(ended, now, reason)


def _reused(now: datetime) -> RefreshTokenReused:
    return RefreshTokenReused(
        "refresh token was already used; the session is revoked",
        end_reason=SessionEndReason.REFRESH_TOKEN_REUSE,
        ended_at=now,
    )


def _ended(session: Session) -> EndedSession:
    return EndedSession(id=session.id, created_at=session.created_at)
