"""What every message model is: an immutable, tolerant-reading pydantic model with its routing metadata.

Reading policy (deliberate, the same for our own events and for upstream commands on `orders.inbound.v1`):

* **Unknown fields are ignored** (`extra="ignore"`), in the envelope and in every data model. A producer may add
  an optional field before every consumer has upgraded; a reader never breaks because a message carries more
  than it knows (the "tolerant reader" rule that makes additive evolution possible). Unknown fields are
  dropped, not round-tripped.
* **What is there is validated strictly**: the decoders (`Envelope.from_bytes`, `decode`, `parse_inbound`)
  validate JSON in pydantic's strict mode, so ``"5"`` is not an integer, ``"true"`` is not a boolean, ``1.5`` is
  not money and a timestamp without an offset is rejected. Python-side construction stays lax (an enum value
  may be given as its string), which is what producers building messages from database rows need.

Each concrete contract sets three class variables: `EVENT_TYPE` (the CloudEvents ``type``, ending in
``.v{SCHEMA_VERSION}``), `TOPIC` and `SCHEMA_VERSION`; and it says how its record key is built.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import ClassVar

from pydantic import BaseModel, ConfigDict

from contracts.topics import Topic


class ContractModel(BaseModel):
    """Base of every model that travels inside a message (the contracts and their nested parts)."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class Contract(ContractModel):
    """Base of the data models that are the `data` of an envelope: events and commands."""

    EVENT_TYPE: ClassVar[str]
    TOPIC: ClassVar[Topic]
    SCHEMA_VERSION: ClassVar[int] = 1

    @abstractmethod
    def record_key(self, partner_id: str) -> bytes:
        """The Kafka record key for this message, given the envelope's partner id."""

    def event_subject(self) -> str | None:
        """The CloudEvents `subject` the envelope gets by default (the order id, the status code...)."""
        return None

    def owner_partner_id(self) -> str | None:
        """The partner id the payload itself names, if any; the envelope's `partnerid` must equal it."""
        return None
