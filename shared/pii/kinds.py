"""The kinds of personal data and secrets the gateway finds, and the label of each kind's placeholders."""

from __future__ import annotations

from typing import Literal

Kind = Literal["email", "phone", "card", "iban", "ssn", "ip", "secret"]
KINDS: tuple[Kind, ...] = ("email", "phone", "card", "iban", "ssn", "ip", "secret")

LABELS: dict[Kind, str] = {
    "email": "EMAIL", "phone": "PHONE", "card": "CARD", "iban": "IBAN", "ssn": "SSN", "ip": "IP", "secret": "SECRET",
}
