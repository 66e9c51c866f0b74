"""The demo data set: a few hundred users, their subscriptions, thousands of payments.

Everything is drawn from a seeded random generator, so ids and outcomes are the same
on every run. Seeding is idempotent: states that exist are left alone (one
``batch_get_state`` per chunk finds them), new ones are created with
``batch_set_state`` (one transaction per chunk), and only states still ``created``
are moved along their lifecycle, with ``batch_update_state`` (one transaction per
chunk of states that take the same transition for the same reason). A second run
adds nothing; an interrupted run is completed by the next.

Old payments are imported history (``data.imported``): the billing callbacks skip
them. The last two payments of each subscription are processed live, in time order,
so the callbacks activate, renew and suspend subscriptions and users, and record
notifications, as they would in production: their batches are runs of consecutive
payments, and callbacks follow each batch's commit in the payments' order.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from flask_tiered_state.domain.manager import StateManager
from flask_tiered_state.domain.model import StateStatus, StateTransition

from .core import feature_id, iso, user_id_for, utc_now
from .schemas import PLANS

__all__ = ["Progress", "SeedReport", "no_progress", "seed_demo"]

#: ``progress(label, length)`` -> a context manager yielding ``advance(n)``.
Progress = Callable[[str, int], AbstractContextManager[Callable[[int], None]]]
CHUNK = 500
#: ``(state id, transition, changes merged into the record, reason)``
_Step = tuple[str, StateTransition, "dict[str, Any] | None", str]
#: ``planner(status by id) -> (steps in any order per state, steps in strict order)``
_Planner = Callable[[dict[str, str]], tuple[list[_Step], list[_Step]]]
_CREATED = StateStatus.CREATED.value
_FIRST = (
    "ada", "alan", "grace", "edsger", "barbara", "donald", "margaret", "ken", "linus", "guido",
    "frances", "john", "radia", "tim", "katherine", "dennis", "hedy", "niklaus",
)  # fmt: skip
_LAST = (
    "lovelace", "turing", "hopper", "dijkstra", "liskov", "knuth", "hamilton", "thompson",
    "torvalds", "rossum", "allen", "backus", "perlman", "berners", "johnson", "ritchie",
)  # fmt: skip
_COUNTRIES = ("DE", "FR", "GB", "US", "NL", "ES", "IT", "SE", "PL", "CA", "JP", "BR")
_FAILURES = ("card declined", "insufficient funds", "card expired", "3-D Secure failed")
#: key, description, rollout percentage, target status.
FEATURES = (
    ("new-checkout", "The one-page checkout", 50, "active"),
    ("dark-mode", "Dark theme for the account pages", 100, "active"),
    ("spending-insights", "Monthly spending insights", 20, "active"),
    ("instant-payouts", "Payouts within minutes", 5, "active"),
    ("crypto-payments", "Pay with stablecoins", 0, "created"),
    ("legacy-export", "The old CSV export", 100, "suspended"),
)  # fmt: skip


@contextmanager
def _silent(label: str, length: int) -> Iterator[Callable[[int], None]]:
    yield lambda n: None


no_progress: Progress = _silent


@dataclass
class SeedReport:
    """What a run did, per kind of state."""

    created: dict[str, int] = field(default_factory=dict)
    transitioned: dict[str, int] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"created": self.created, "transitioned": self.transitioned}


@dataclass
class _Plan:
    users: dict[str, dict[str, Any]] = field(default_factory=dict)
    verified: list[str] = field(default_factory=list)
    reviewed: set[str] = field(default_factory=set)  # suspended and resumed by an admin
    subscriptions: dict[str, dict[str, Any]] = field(default_factory=dict)
    payments: dict[str, dict[str, Any]] = field(default_factory=dict)
    outcomes: dict[str, str | None] = field(default_factory=dict)  # None: success


def _draw(users: int, transactions: int, seed: int, now: datetime) -> _Plan:
    rng = random.Random(seed)
    plan = _Plan()
    for number in range(users):
        first, last = rng.choice(_FIRST), rng.choice(_LAST)
        email = f"{first}.{last}.{number}@example.com"
        user_id = user_id_for(email)
        data = {
            "email": email,
            "full_name": f"{first.title()} {last.title()}",
            "country": rng.choice(_COUNTRIES),
            "marketing_opt_in": rng.random() < 0.4,
            "registered_at": iso(now - timedelta(days=rng.randint(20, 400))),
        }
        plan.users[user_id] = {"type": "user", "name": data["full_name"], "data": data}
        if rng.random() < 0.92:
            plan.verified.append(user_id)
            if rng.random() < 0.03:
                plan.reviewed.add(user_id)
            if rng.random() < 0.65:
                tier = rng.choices(tuple(PLANS), weights=(5, 3, 1))[0]
                cycle = "monthly" if rng.random() < 0.8 else "yearly"
                plan.subscriptions["sub-" + user_id[4:]] = {
                    "type": "subscription",
                    "name": f"{tier} ({cycle})",
                    "data": {
                        "user_id": user_id, "plan": tier, "billing_cycle": cycle,
                        "price_cents": PLANS[tier][cycle], "currency": "EUR",
                        "started_at": data["registered_at"], "current_period_start": None,
                        "current_period_end": None, "renewals": 0, "last_payment_id": None,
                    },
                }  # fmt: skip
    by_user = {s["data"]["user_id"]: sid for sid, s in plan.subscriptions.items()}
    moments = sorted(
        now - timedelta(minutes=rng.randint(5, 180 * 24 * 60))
        for _ in range(transactions if plan.verified else 0)
    )
    last_two: dict[str, list[str]] = {}
    for number, moment in enumerate(moments):
        user_id = rng.choice(plan.verified)
        txn_id = f"txn-seed-{number:05d}"
        sub_id = by_user.get(user_id)
        amount = (
            plan.subscriptions[sub_id]["data"]["price_cents"]
            if sub_id
            else rng.randint(100, 50_000)
        )
        plan.payments[txn_id] = {
            "type": "transaction",
            "data": {
                "user_id": user_id, "subscription_id": sub_id,
                "kind": "subscription" if sub_id else "one_off", "amount_cents": amount,
                "currency": "EUR", "description": "renewal" if sub_id else "purchase",
                "occurred_at": iso(moment), "settled_at": None, "failure_reason": None,
                "imported": True,
            },
        }  # fmt: skip
        plan.outcomes[txn_id] = rng.choice(_FAILURES) if rng.random() < 0.07 else None
        if sub_id:
            last_two.setdefault(sub_id, []).append(txn_id)
            del last_two[sub_id][:-2]
    for txn_ids in last_two.values():
        if plan.outcomes[txn_ids[0]] is not None and len(txn_ids) == 2:
            plan.outcomes[txn_ids[0]] = None  # a subscription starts with a paid period
        for txn_id in txn_ids:
            plan.payments[txn_id]["data"]["imported"] = False
    return plan


def _create_missing(
    manager: StateManager, items: dict[str, dict[str, Any]], label: str, progress: Progress
) -> tuple[dict[str, str], int]:
    """Create the states of ``items`` that do not exist; the status of every one and how
    many were created."""
    ids = list(items)
    status: dict[str, str] = {}
    created = 0
    with progress(label, len(ids)) as advance:
        for start in range(0, len(ids), CHUNK):
            chunk = ids[start : start + CHUNK]
            found = manager.batch_get_state(chunk, include_deleted=True)
            status.update({sid: record["status"] for sid, record in found.items()})
            missing = {sid: items[sid] for sid in chunk if sid not in found}
            if missing:
                manager.batch_set_state(missing, actor="seed-demo", reason="demo data")
                status.update(dict.fromkeys(missing, _CREATED))
                created += len(missing)
            advance(len(chunk))
    return status, created


def _batches(steps: Sequence[_Step], *, ordered: bool) -> list[list[_Step]]:
    """Group steps into batches of one transition and reason, each state at most once
    per batch, so that every state takes its steps in the order given.

    ``ordered``: batches are runs of consecutive steps, so everything happens in the
    order of ``steps`` (callbacks that react to the steps see them in that order).
    Otherwise a state's first steps all go before its second steps, and so on.
    """
    if ordered:
        runs: list[list[_Step]] = []
        seen: set[str] = set()
        for step in steps:
            last = runs[-1][-1] if runs else None
            if last is None or (last[1], last[3]) != (step[1], step[3]) or step[0] in seen:
                runs.append([])
                seen = set()
            runs[-1].append(step)
            seen.add(step[0])
        return runs
    waves: dict[tuple[int, StateTransition, str], list[_Step]] = {}
    taken: dict[str, int] = {}
    for step in steps:
        wave = taken.get(step[0], 0)
        taken[step[0]] = wave + 1
        waves.setdefault((wave, step[1], step[3]), []).append(step)
    return [waves[key] for key in sorted(waves, key=lambda key: key[0])]


def _transition(
    manager: StateManager,
    steps: Sequence[_Step],
    label: str,
    progress: Progress,
    *,
    ordered: Sequence[_Step] = (),
) -> int:
    """Apply ``steps`` (in any order per wave) and then ``ordered`` (strictly in order)."""
    batches = [*_batches(steps, ordered=False), *_batches(ordered, ordered=True)]
    with progress(label, len(steps) + len(ordered)) as advance:
        for batch in batches:
            transition, reason = batch[0][1], batch[0][3]
            for start in range(0, len(batch), CHUNK):
                chunk = batch[start : start + CHUNK]
                manager.batch_update_state(
                    {state_id: changes for state_id, _, changes, _ in chunk},
                    transition,
                    actor="seed-demo",
                    reason=reason,
                    merge=True,
                    chunk_size=CHUNK,
                )
                advance(len(chunk))
    return len(steps) + len(ordered)


def _feature_steps(status: dict[str, str]) -> list[_Step]:
    steps: list[_Step] = []
    for key, _text, _pct, target in FEATURES:
        state_id = feature_id(key)
        if status[state_id] == _CREATED and target != "created":
            steps.append((state_id, StateTransition.ACTIVATE, None, "launched"))
            if target == "suspended":
                steps.append((state_id, StateTransition.SUSPEND, None, "kill switch"))
    return steps


def _user_steps(plan: _Plan, status: dict[str, str]) -> list[_Step]:
    steps: list[_Step] = []
    for user_id in plan.verified:
        if status[user_id] != _CREATED:
            continue
        verified = {"verified_at": plan.users[user_id]["data"]["registered_at"]}
        steps.append((user_id, StateTransition.ACTIVATE, {"data": verified}, "email verified"))
        if user_id in plan.reviewed:
            review = "chargeback review"
            suspended = {"data": {"suspended_reason": review}}
            steps.append((user_id, StateTransition.SUSPEND, suspended, review))
            resumed = {"data": {"suspended_reason": None}}
            steps.append((user_id, StateTransition.RESUME, resumed, "review passed"))
    return steps


def _payment_steps(plan: _Plan, status: dict[str, str]) -> tuple[list[_Step], list[_Step]]:
    """The steps of imported payments, and those of live ones (in time order)."""
    imported: list[_Step] = []
    live: list[_Step] = []
    for txn_id, failure in plan.outcomes.items():
        if status[txn_id] != _CREATED:
            continue
        data = plan.payments[txn_id]["data"]
        steps = imported if data["imported"] else live
        if failure is None:
            settled = {"data": {"settled_at": data["occurred_at"]}}
            steps.append((txn_id, StateTransition.ACTIVATE, settled, "payment succeeded"))
        else:
            failed = {"data": {"failure_reason": failure}}
            steps.append((txn_id, StateTransition.EXPIRE, failed, failure))
    return imported, live


def seed_demo(
    manager: StateManager,
    *,
    users: int = 300,
    transactions: int = 3000,
    seed: int = 2024,
    progress: Progress = no_progress,
) -> SeedReport:
    """Create (or complete) the demo data set; see the module docstring."""
    plan = _draw(users, transactions, seed, utc_now())
    flags = {
        feature_id(key): {
            "type": "feature",
            "name": key,
            "data": {"key": key, "description": text, "rollout_percentage": percentage},
        }
        for key, text, percentage, _ in FEATURES
    }
    report = SeedReport()
    groups: list[tuple[str, dict[str, dict[str, Any]], _Planner]] = [
        ("feature", flags, lambda status: (_feature_steps(status), [])),
        ("user", plan.users, lambda status: (_user_steps(plan, status), [])),
        ("subscription", plan.subscriptions, lambda status: ([], [])),
        ("transaction", plan.payments, lambda status: _payment_steps(plan, status)),
    ]
    for kind, items, steps_for in groups:
        status, report.created[kind] = _create_missing(
            manager, items, f"Creating {kind}s", progress
        )
        steps, ordered = steps_for(status)
        report.transitioned[kind] = _transition(
            manager, steps, f"Updating {kind}s", progress, ordered=ordered
        )
    return report
