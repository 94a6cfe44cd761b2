"""The decision inside confirm: signals, velocity, risk score, rules, one action.

:meth:`FraudEngine.assess` runs in the confirm transaction, before anything is
sent to an acquirer. It

1. derives the payment's signals (IP country from the offline GeoIP file, the
   device fingerprint from a signed device token plus user agent and language,
   a keyed hash of the normalized email, the amount in US dollars);
2. counts the attempt in the velocity store and reads every counter back in one
   atomic step (two workers on Redis see one count);
3. scores it with the risk model through the same :class:`FeatureState` code the
   backtest replays, and keeps the top reasons;
4. applies the merchant's rules and Paywarden's built-in ones in Radar's order
   (request 3DS, allow, block, review); shadow rules are evaluated and reported,
   never acted on.

The result is a :class:`Decision`: ``allow``, ``request_3ds``, ``review`` or
``block``, with the score, level, deciding rule and reasons that end up on the
charge's ``outcome``. The outcome of the acquirer call is fed back with
:meth:`FraudEngine.record_outcome`, and confirmed fraud with
:meth:`FraudEngine.add_label`.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Literal

import numpy as np
from sqlalchemy import select
from sqlalchemy.orm import Session

from paywarden.core.money import CURRENCY_EXPONENTS
from paywarden.fraud import admin
from paywarden.fraud.features import FeatureState, Tx
from paywarden.fraud.model import RiskModel, RiskThresholds
from paywarden.fraud.rules import Rule, RuleSyntaxError, decide, parse_rule
from paywarden.fraud.rules_api import attribute_types
from paywarden.fraud.signals import (
    DeviceTokens,
    IpGeo,
    device_fingerprint,
    primary_language,
    user_agent_family,
)
from paywarden.fraud.velocity import (
    Outcome,
    PaymentEvent,
    VelocityError,
    VelocityStore,
    hash_identifier,
    normalize_email,
)

log = logging.getLogger("paywarden.fraud")

Action = Literal["allow", "request_3ds", "review", "block"]

DEFAULT_MODEL_PATH = Path(__file__).with_name("data") / "risk-model.json"

# Reference rates to turn an amount into US cents for `:amount_in_usd:`, the
# amount counters and the model. Fraud scoring needs the order of magnitude, not
# the cent: these are rounded mid-market rates (USD per unit, November 2026).
# An operator adds or replaces rates with a CSV file (`fraud_usd_rates_path`,
# :func:`load_usd_rates`). A currency without a rate has no `:amount_in_usd:` (a
# missing attribute, as in Radar) and no model score (`risk_level`
# `not_assessed`); the velocity counts and the other rules still apply.
USD_PER_UNIT: Mapping[str, Decimal] = {
    "usd": Decimal("1"),
    "eur": Decimal("1.08"),
    "gbp": Decimal("1.27"),
    "chf": Decimal("1.13"),
    "cad": Decimal("0.72"),
    "aud": Decimal("0.65"),
    "nzd": Decimal("0.59"),
    "jpy": Decimal("0.0066"),
    "cny": Decimal("0.14"),
    "hkd": Decimal("0.128"),
    "sgd": Decimal("0.74"),
    "inr": Decimal("0.012"),
    "brl": Decimal("0.17"),
    "mxn": Decimal("0.05"),
    "sek": Decimal("0.094"),
    "nok": Decimal("0.092"),
    "dkk": Decimal("0.145"),
    "pln": Decimal("0.25"),
    "czk": Decimal("0.043"),
    "krw": Decimal("0.00072"),
    "zar": Decimal("0.055"),
}

# Paywarden's built-in rules (``fraud_default_rules``), in Radar's spirit: block
# the highest risk, review the elevated, and stop card testing (many cards, or
# many declines, from one IP address or device within the hour) after a few
# tries. The block lists are filled by confirmed fraud (``fraud_auto_block``).
BLOCKED_CARDS, BLOCKED_IPS, BLOCKED_DEVICES = (
    "paywarden_blocked_cards",
    "paywarden_blocked_ips",
    "paywarden_blocked_devices",
)
DEFAULT_RULES: tuple[tuple[str, str], ...] = (
    ("rule_default_highest_risk", "Block if :risk_level: = 'highest'"),
    ("rule_default_blocked_card", f"Block if :card_fingerprint: in @{BLOCKED_CARDS}"),
    ("rule_default_blocked_ip", f"Block if :ip_address: in @{BLOCKED_IPS}"),
    ("rule_default_blocked_device", f"Block if :device_id: in @{BLOCKED_DEVICES}"),
    ("rule_default_cards_per_ip", "Block if :card_count_for_ip_address_hourly: > 4"),
    ("rule_default_cards_per_device", "Block if :card_count_for_device_hourly: > 4"),
    ("rule_default_declines_per_ip", "Block if :declined_charges_per_ip_address_hourly: > 5"),
    ("rule_default_declines_per_card", "Block if :declined_charges_per_card_number_daily: > 5"),
    ("rule_default_elevated_risk", "Review if :risk_level: = 'elevated'"),
)

# Plain words for the features a reviewer sees most (names from FeatureState.names).
_FEATURE_LABELS = {
    "amount": "the amount",
    "hour": "the time of day",
    "is_weekend": "a weekend payment",
    "is_night": "a night-time payment",
    "customer_nb_tx_30d": "the card's payments in the last 30 days",
    "customer_nb_tx_7d": "the card's payments in the last 7 days",
    "customer_nb_tx_1d": "the card's payments today",
    "customer_avg_amount_30d": "the card's average amount over 30 days",
    "customer_avg_amount_7d": "the card's average amount over 7 days",
    "customer_avg_amount_1d": "the card's average amount today",
    "terminal_nb_tx_30d": "the merchant's payments over 30 days (before the label delay)",
    "terminal_nb_tx_7d": "the merchant's payments over 7 days (before the label delay)",
    "terminal_nb_tx_1d": "the merchant's payments over a day (before the label delay)",
    "terminal_risk_30d": "fraud at this merchant over 30 days",
    "terminal_risk_7d": "recent fraud at this merchant",
    "terminal_risk_1d": "fraud at this merchant in a day",
    "customer_hist_nb_tx": "the card's history with us",
    "customer_hist_avg_amount": "the card's usual amount",
    "amount_over_hist_avg": "the amount against the card's usual amounts",
    "amount_zscore_hist": "the amount against the card's usual amounts",
    "amount_over_prev_avg_30d": "the amount against the card's last 30 days",
    "customer_known_frauds": "fraud already reported on this card",
    "terminal_known_fraud_age_days": "how long ago fraud was last known at this merchant",
    "terminal_fraud_streak": "the merchant's latest payments were all fraud",
    "customer_spikes_14d": "unusually large payments on this card lately",
    "terminal_fraud_run_days": "how long the merchant's run of fraud has lasted",
}


LABEL_SYNC_SECONDS = 2.0
"""How often a worker looks for reports other workers recorded."""
_LABEL_SYNC_OVERLAP = 120.0  # seconds each look reaches back before the last report seen
_MAX_LABELLED = 200_000


def model_key(entity: str, livemode: bool) -> str:
    """A card or merchant as the model's state knows it: test-mode payments and
    reports never shape live-mode scores."""
    return f"{entity}/{'live' if livemode else 'test'}"


def velocity_scope(account_id: str, *, livemode: bool) -> str:
    """The velocity counters' tenant scope: one account in one mode."""
    return f"{account_id}/{'live' if livemode else 'test'}/"


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentSignals:
    """What the gateway knows about one confirm (never a card number)."""

    account_id: str
    livemode: bool
    payment_intent_id: str
    attempt_key: str  # one per confirm attempt: velocity counts it once
    at: float
    amount: int
    currency: str
    card_fingerprint: str | None = None
    card_bin: str | None = None
    card_country: str | None = None
    card_brand: str | None = None
    card_funding: str | None = None
    customer: str | None = None
    email: str | None = None
    ip_address: str | None = None
    user_agent: str | None = None
    accept_language: str | None = None
    device_token: str | None = None
    is_new_card_on_customer: bool | None = None
    # One of Stripe's documented test payment methods (`pm_card_visa`…): every
    # test everywhere shares its "card", so it has no history of its own. It
    # gets no model score and no card-keyed velocity (its behaviour is the test
    # card's, as in Stripe's test mode); rules and the other entities apply.
    shared_test_card: bool = False


@dataclass(frozen=True, slots=True)
class Decision:
    action: Action
    risk_score: int | None
    risk_level: str  # normal | elevated | highest | not_assessed
    rule_id: str | None = None
    rule_predicate: str | None = None
    reasons: tuple[str, ...] = ()
    shadow_rules: tuple[dict[str, str], ...] = ()
    attempt_key: str | None = None
    ip_address: str | None = None
    ip_country: str | None = None
    device_id: str | None = None
    card_fingerprint: str | None = None
    # The review rule that holds the payment once 3-D Secure has succeeded.
    review_after_3ds: dict[str, str] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """What is stored on the intent (``payment_intents.risk``)."""
        return {
            "action": self.action,
            "risk_score": self.risk_score,
            "risk_level": self.risk_level,
            "rule": self.rule_id,
            "rule_predicate": self.rule_predicate,
            "reasons": list(self.reasons),
            "shadow_rules": [dict(r) for r in self.shadow_rules],
            "attempt_key": self.attempt_key,
            "ip_address": self.ip_address,
            "ip_country": self.ip_country,
            "device_id": self.device_id,
            "card_fingerprint": self.card_fingerprint,
            "review_after_3ds": dict(self.review_after_3ds) if self.review_after_3ds else None,
        }


class RatesError(ValueError):
    """A reference-rate file is unreadable or holds a bad line."""


_MAX_RATE = Decimal(1_000_000)  # USD per unit; no currency is worth more


def load_usd_rates(path: Path) -> dict[str, Decimal]:
    """The built-in rates, with those of a CSV file (``currency,usd_per_unit``,
    a header line, one currency per line) added or replacing them."""
    import csv

    rates = dict(USD_PER_UNIT)
    try:
        with path.open(encoding="utf-8", newline="") as fh:
            reader = csv.reader(fh)
            header = next(reader, None)
            if header is None or [h.strip().lower() for h in header] != [
                "currency",
                "usd_per_unit",
            ]:
                raise RatesError(f"{path}: the first line must be 'currency,usd_per_unit'")
            for line, row in enumerate(reader, start=2):
                if not row or not "".join(row).strip():
                    continue
                if len(row) != 2:
                    raise RatesError(f"{path}:{line}: expected 'currency,usd_per_unit'")
                code = row[0].strip().lower()
                if code not in CURRENCY_EXPONENTS:
                    raise RatesError(f"{path}:{line}: {row[0].strip()!r} is not a known currency")
                try:
                    rate = Decimal(row[1].strip())
                except ArithmeticError:
                    raise RatesError(f"{path}:{line}: {row[1].strip()!r} is not a number") from None
                if not rate.is_finite() or not 0 < rate <= _MAX_RATE:
                    raise RatesError(f"{path}:{line}: the rate must be above 0 and at most 1e6")
                rates[code] = rate
    except OSError as exc:
        raise RatesError(f"{path}: {exc.strerror or exc}") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise RatesError(f"{path}: not a CSV text file ({exc})") from None
    return rates


def amount_in_usd_cents(
    amount: int, currency: str, rates: Mapping[str, Decimal] = USD_PER_UNIT
) -> int | None:
    rate = rates.get(currency.lower())
    exponent = CURRENCY_EXPONENTS.get(currency.lower())
    if rate is None or exponent is None:
        return None
    return int(Decimal(amount) * rate * Decimal(10) ** (2 - exponent))


class FraudEngine:
    def __init__(
        self,
        *,
        velocity: VelocityStore,
        identifier_key: bytes,
        ipgeo: IpGeo | None = None,
        device_tokens: DeviceTokens | None = None,
        model: RiskModel | None = None,
        thresholds: RiskThresholds | None = None,
        default_rules: bool = True,
        auto_block: bool = True,
        delay_days: float = 7.0,
        usd_rates: Mapping[str, Decimal] | None = None,
    ) -> None:
        self.velocity = velocity
        self.usd_rates: Mapping[str, Decimal] = usd_rates if usd_rates is not None else USD_PER_UNIT
        self.ipgeo = ipgeo
        self.device_tokens = device_tokens
        self.model = model
        self.thresholds = thresholds or (model.thresholds if model else RiskThresholds())
        self.auto_block = auto_block
        self._identifier_key = identifier_key
        self._defaults: tuple[tuple[str, Rule], ...] = (
            tuple((rid, parse_rule(src)) for rid, src in DEFAULT_RULES) if default_rules else ()
        )
        self._parsed: dict[tuple[str, str], Rule | None] = {}
        self._features = FeatureState(delay_days=delay_days) if model is not None else None
        self._x = np.zeros(self._features.n_features if self._features else 0)
        self._lock = threading.Lock()
        # Payments known to be fraud (dict: insertion order bounds it), and how
        # far this worker has read the reports table (see `sync_labels`).
        self._labelled: dict[str, None] = {}
        self._labels_since = time.time()  # until warm_up says when it read the reports
        self._labels_synced_at = -math.inf

    def close(self) -> None:
        self.velocity.close()
        if self.ipgeo is not None:
            self.ipgeo.close()

    # ------------------------------------------------------------- the decision
    def assess(self, s: Session, sig: PaymentSignals) -> Decision:
        ip_country = self.ipgeo.country(sig.ip_address) if self.ipgeo else None
        claims = (
            self.device_tokens.verify(sig.device_token, now=sig.at)
            if self.device_tokens is not None
            else None
        )
        device = device_fingerprint(
            claims, ip=sig.ip_address, user_agent=sig.user_agent,
            accept_language=sig.accept_language,
        )  # fmt: skip
        email = normalize_email(sig.email) if sig.email else None
        email_id = hash_identifier(email, key=self._identifier_key) if email else None
        usd_cents = amount_in_usd_cents(sig.amount, sig.currency, self.usd_rates)
        event = PaymentEvent(
            at=sig.at,
            amount_minor=sig.amount,
            currency=sig.currency,
            amount_usd_minor=usd_cents,
            card=None if sig.shared_test_card else sig.card_fingerprint,
            customer=sig.customer,
            email=email_id,
            ip_address=sig.ip_address,
            device=device,
            scope=velocity_scope(sig.account_id, livemode=sig.livemode),
        )
        counters = self.velocity.record_and_snapshot(event, attempt_id=sig.attempt_key)

        self.sync_labels(s, now=time.monotonic())
        score, level, reasons = self._score(sig, usd_cents)
        attributes: dict[str, Any] = dict(counters)
        attributes.update(
            {
                "amount": sig.amount,
                "currency": sig.currency,
                "card_country": sig.card_country,
                "card_bin": sig.card_bin,
                "card_brand": sig.card_brand,
                "card_funding": sig.card_funding,
                "card_fingerprint": sig.card_fingerprint,
                "customer": sig.customer,
                "email": email,
                "email_domain": email.rpartition("@")[2] if email else None,
                "ip_address": sig.ip_address,
                "ip_country": ip_country,
                "device_id": device,
                "user_agent_family": user_agent_family(sig.user_agent) if sig.user_agent else None,
                "accept_language": primary_language(sig.accept_language)
                if sig.accept_language
                else None,
                "risk_score": score,
                "risk_level": level if score is not None else None,
                "is_new_card_on_customer": sig.is_new_card_on_customer,
            }
        )
        if usd_cents is not None:
            attributes["amount_in_usd"] = Decimal(usd_cents) / 100
        rules = self._rules(s, sig)
        candidates = [v for v in attributes.values() if isinstance(v, str) and 0 < len(v) <= 800]
        lists = admin.list_hits(
            s, account_id=sig.account_id, livemode=sig.livemode, values=candidates
        )
        ids = {id(rule): rid for rid, rule, _ in rules}
        verdict = decide(
            ((rule, shadow) for _, rule, shadow in rules), attributes=attributes, lists=lists
        )
        action: Action = "allow"
        if verdict.action in ("request_3ds", "review", "block"):
            action = verdict.action
        rule = verdict.rule
        then = verdict.review_after_3ds
        decision = Decision(
            action=action,
            risk_score=score,
            risk_level=level if score is not None else "not_assessed",
            rule_id=ids[id(rule)] if rule is not None else None,
            rule_predicate=rule.to_source() if rule is not None else None,
            reasons=reasons,
            shadow_rules=tuple(
                {"id": ids[id(r)], "action": r.action, "predicate": r.to_source()}
                for r in verdict.shadow_hits
            ),
            attempt_key=sig.attempt_key,
            ip_address=sig.ip_address,
            ip_country=ip_country,
            device_id=device,
            card_fingerprint=None if sig.shared_test_card else sig.card_fingerprint,
            review_after_3ds=(
                {"rule": ids[id(then)], "rule_predicate": then.to_source()}
                if then is not None
                else None
            ),
        )
        if decision.shadow_rules:
            log.info(
                "shadow rules matched",
                extra={
                    "payment_intent": sig.payment_intent_id,
                    "rules": [r["id"] for r in decision.shadow_rules],
                },
            )
        if action == "block":
            self.record_outcome(sig.attempt_key, "blocked")
        return decision

    def _score(
        self, sig: PaymentSignals, usd_cents: int | None
    ) -> tuple[int | None, str, tuple[str, ...]]:
        if (
            self.model is None
            or self._features is None
            or usd_cents is None
            or sig.shared_test_card
        ):
            return None, "not_assessed", ()
        # The model knows a card by its fingerprint and a merchant as a terminal,
        # exactly as `paywarden fraud train` replayed the labelled history.
        tx = Tx(
            tx_id=sig.payment_intent_id,
            ts=sig.at,
            customer=model_key(sig.card_fingerprint or sig.payment_intent_id, sig.livemode),
            terminal=model_key(sig.account_id, sig.livemode),
            amount=usd_cents / 100,
        )
        with self._lock:
            self._features.features_into(tx=tx, out=self._x)
            assessment = self.model.assess(self._x)
            self._features.update(tx)
        level = self.thresholds.level(assessment.risk_score)
        reasons = tuple(
            f"{_FEATURE_LABELS.get(r.feature, r.feature)} ({r.feature} = {r.value:.4g})"
            for r in assessment.reasons
        )
        return assessment.risk_score, level, reasons

    def _rules(self, s: Session, sig: PaymentSignals) -> list[tuple[str, Rule, bool]]:
        out: list[tuple[str, Rule, bool]] = [(rid, rule, False) for rid, rule in self._defaults]
        for rid, _action, source, shadow in admin.active_rules(
            s, account_id=sig.account_id, livemode=sig.livemode
        ):
            rule = self._parse(rid, source)
            if rule is not None:
                out.append((rid, rule, shadow))
        return out

    def _parse(self, rule_id: str, source: str) -> Rule | None:
        key = (rule_id, source)
        if key not in self._parsed:
            try:
                rule: Rule | None = parse_rule(source.strip(), attribute_types=attribute_types())
            except RuleSyntaxError:
                # Stored rules were checked when written; one that no longer
                # parses (an attribute renamed since) is skipped, loudly.
                log.error("stored rule does not parse", extra={"rule": rule_id})
                rule = None
            if len(self._parsed) > 10_000:
                self._parsed.clear()
            self._parsed[key] = rule
        return self._parsed[key]

    # ---------------------------------------------------------------- feedback
    def record_outcome(self, attempt_key: str | None, outcome: Outcome) -> None:
        if not attempt_key:
            return
        try:
            self.velocity.record_outcome(attempt_key, outcome)
        except VelocityError:
            log.warning("velocity outcome already counted", extra={"attempt": attempt_key})

    def add_label(self, payment_intent_id: str, *, fraudulent: bool, known_at: float) -> None:
        """A reported label reaches the model's entity features once its delay
        has passed (see :class:`FeatureState`). A payment counts as fraud once,
        however many reports (fraud, then a dispute) it gets."""
        if self._features is None:
            return
        with self._lock:
            if fraudulent and not self._note_label(payment_intent_id):
                return
            self._features.add_label(payment_intent_id, fraudulent, known_at)

    def _note_label(self, payment_intent_id: str) -> bool:
        """Under the lock: remember a fraud label; False if it was known already."""
        if payment_intent_id in self._labelled:
            return False
        self._labelled[payment_intent_id] = None
        if len(self._labelled) > _MAX_LABELLED:
            del self._labelled[next(iter(self._labelled))]
        return True

    def sync_labels(self, s: Session, *, now: float) -> int:
        """Take in the fraud and dispute reports other workers recorded.

        Each worker keeps its own model state, and a report reaches the engine
        of the worker that took it. Every other worker reads the reports made
        since its last look, at most every few seconds, within the confirm's
        own transaction. The look overlaps the previous one, so a report
        committed late is still seen, and one already known is skipped.
        Returns how many reached this worker's state (a report on a payment
        another worker scored after this one started has no history here).
        """
        if self._features is None or now - self._labels_synced_at < LABEL_SYNC_SECONDS:
            return 0
        self._labels_synced_at = now
        from paywarden.fraud.models import FraudLabel

        rows = s.execute(
            select(FraudLabel.payment_intent_id, FraudLabel.created)
            .where(
                # An integer: compared with a float, PostgreSQL casts the column
                # and cannot use its index.
                FraudLabel.created >= int(self._labels_since - _LABEL_SYNC_OVERLAP),
                FraudLabel.label.in_(("fraudulent", "dispute")),
            )
            .order_by(FraudLabel.created)
        ).all()
        new = 0
        with self._lock:
            for pi_id, created in rows:
                self._labels_since = max(self._labels_since, float(created))
                # Only a payment this worker scored (or replayed at start) has
                # history here for the report to mark.
                if self._note_label(pi_id) and self._features.add_label(
                    pi_id, True, float(created)
                ):
                    new += 1
        return new

    def warm_up(
        self,
        history: Collection[tuple[str, float, str, str, int]],
        labels: Collection[tuple[str, float]] = (),
        *,
        as_of: float | None = None,
    ) -> int:
        """Replay recent payments ``(pi_id, at, card, account, usd_cents)`` (card
        and account as :func:`model_key` makes them) in
        time order, then the fraud reports on them ``(pi_id, known_at)``, so card
        and merchant habits and reported fraud survive a restart. ``as_of`` is
        when those were read: :meth:`sync_labels` takes in later reports."""
        if self._features is None:
            return 0
        if as_of is not None:
            self._labels_since = as_of
        with self._lock:
            for pi_id, at, card, account, cents in history:
                self._features.update(
                    Tx(tx_id=pi_id, ts=at, customer=card, terminal=account, amount=cents / 100)
                )
            # A label waits in the state until its delay has passed, exactly as
            # when it was reported live, so replaying labels after the payments
            # gives the same state as interleaving them.
            for pi_id, known_at in labels:
                if self._note_label(pi_id):
                    self._features.add_label(pi_id, True, known_at)
        return len(history)


def auto_block_lists(
    s: Session,
    *,
    account_id: str,
    livemode: bool,
    now: int,
    risk: Mapping[str, Any],
    actor: str,
) -> list[str]:
    """Add a confirmed fraud's card, device and IP to the account's block lists
    (created on first use); returns what was added, as ``list:value``."""
    from paywarden.core.errors import InvalidRequestError
    from paywarden.fraud.models import ValueList, ValueListItem

    added: list[str] = []
    for alias, item_type, value in (
        (BLOCKED_CARDS, "card_fingerprint", risk.get("card_fingerprint")),
        (BLOCKED_DEVICES, "string", risk.get("device_id")),
        (BLOCKED_IPS, "ip_address", risk.get("ip_address")),
    ):
        if not value:
            continue
        vl = s.scalar(
            select(ValueList).where(
                ValueList.account_id == account_id,
                ValueList.livemode == livemode,
                ValueList.alias == alias,
            )
        )
        if vl is None:
            vl = admin.create_list(
                s,
                account_id=account_id,
                livemode=livemode,
                alias=alias,
                name=alias.replace("_", " ").capitalize(),
                item_type=item_type,
                metadata={},
                now=now,
                actor=actor,
            )
        normalized = admin.normalize_item(vl.item_type, str(value))
        exists = s.scalar(
            select(ValueListItem.id).where(
                ValueListItem.value_list_id == vl.id, ValueListItem.value == normalized
            )
        )
        if exists is None:
            try:
                admin.add_item(s, vl=vl, value=str(value), now=now, actor=actor)
            except InvalidRequestError:
                continue
            added.append(f"{alias}:{normalized}")
    return added
