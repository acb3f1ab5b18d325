"""The trust pillars and the event types that feed them, declared in one place.

Every feature, explanation, plot and report in trustml is organised by these
pillars. Each event type of the data contract belongs to exactly one pillar.

Examples
--------
>>> from trustml.pillars import PILLARS, pillar_of_event
>>> pillar_of_event("promise_broken")
'promises'
>>> PILLARS["advocacy"].label
'Advocacy'
>>> pillar_of_event("ethics_incident"), PILLARS["values"].label
('values', 'Values')
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Pillar", "EventType", "PILLARS", "EVENT_TYPES", "TRUST_PILLARS", "pillar_of_event"]


@dataclass(frozen=True)
class Pillar:
    name: str
    label: str
    description: str
    is_trust: bool = True


@dataclass(frozen=True)
class EventType:
    name: str
    pillar: str
    description: str
    value: str | None = None  # meaning and unit of the optional numeric value


_PILLAR_LIST = [
    Pillar("service_quality", "Service quality",
           "Problems fixed fast and for good: tickets, resolution time, re-opened tickets, CSAT."),
    Pillar("empathy", "Empathy",
           "How support treats the customer: agent empathy scores."),
    Pillar("promises", "Promises kept",
           "Commitments made to the customer and whether they were kept on time."),
    Pillar("transparency", "Transparency",
           "No surprises on price, fees or data use: announced price changes, surprise fees, privacy incidents."),
    Pillar("respect_for_time", "Respect for time",
           "Not wasting the customer's time: marketing contact beyond what they want erodes trust."),
    Pillar("advocacy", "Advocacy",
           "Customers who recommend you: referrals given and received, the strongest trust signal."),
    Pillar("values", "Values",
           "What the company stands for: the causes it supports, its partners, fair pay, working conditions, "
           "sustainability; ethics incidents, values commitments and values-related complaints. "
           "It moves trust most for customers who care."),
    Pillar("engagement", "Engagement",
           "How much the customer uses the product (context, not a trust pillar).", is_trust=False),
    Pillar("account", "Account",
           "Plan, price and tenure (context, not a trust pillar).", is_trust=False),
    Pillar("other", "Other",
           "Anything a user's data has that is not mapped to a pillar; kept, never dropped.", is_trust=False),
]
PILLARS: dict[str, Pillar] = {p.name: p for p in _PILLAR_LIST}
TRUST_PILLARS: tuple[str, ...] = tuple(p.name for p in _PILLAR_LIST if p.is_trust)

_EVENT_LIST = [
    EventType("ticket_opened", "service_quality", "A support ticket was opened."),
    EventType("ticket_resolved", "service_quality", "A support ticket was resolved.", "resolution time, hours"),
    EventType("ticket_reopened", "service_quality", "A resolved ticket was reopened: the fix did not hold."),
    EventType("csat", "service_quality", "Customer satisfaction survey answer.", "score 1-5"),
    EventType("empathy_score", "empathy", "Quality-assurance score of the agent's empathy on a contact.", "score 1-5"),
    EventType("promise_made", "promises", "A commitment was made to the customer.", "days until due"),
    EventType("promise_kept", "promises", "A commitment was kept by its due date."),
    EventType("promise_broken", "promises", "A commitment was not kept by its due date."),
    EventType("price_change_announced", "transparency", "Price changed with advance notice.", "price change, %"),
    EventType("price_change_unannounced", "transparency", "Price changed without notice.", "price change, %"),
    EventType("surprise_fee", "transparency", "A fee the customer did not expect.", "amount, currency"),
    EventType("privacy_incident", "transparency", "The customer's data was mishandled or used unexpectedly."),
    EventType("marketing_contact", "respect_for_time", "An outbound marketing contact (mail, call, push).",
              "1 if the customer engaged with it, 0 if ignored"),
    EventType("referral_given", "advocacy", "The customer referred someone who signed up."),
    EventType("usage", "engagement", "A product session.", "minutes"),
    EventType("purchase", "engagement", "A purchase.", "amount, currency"),
    EventType("cancellation", "account", "The customer cancelled (the churn event in contractual data)."),
    # values (listed last: existing event-type codes keep their order)
    EventType("ethics_incident", "values",
              "A company-wide ethics incident the customer was exposed to (e.g. a partner's labour scandal, a misleading claim)."),
    EventType("values_commitment", "values",
              "A company-wide values commitment the customer was told about (e.g. sustainability, fair pay)."),
    EventType("values_complaint", "values", "The customer complained about the company's values or conduct."),
]
EVENT_TYPES: dict[str, EventType] = {e.name: e for e in _EVENT_LIST}


def pillar_of_event(event_type: str) -> str:
    """The pillar an event type belongs to ('other' for types outside the contract)."""
    et = EVENT_TYPES.get(event_type)
    return et.pillar if et else "other"
