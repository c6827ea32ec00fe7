"""The server's limits and batching options (command-line flags of `crossrec-peft serve`)."""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ..errors import ConfigError


@dataclass
class Settings:
    # Micro-batching: a batch closes at `max_batch` rows (histories plus items to encode) or `max_wait_ms`
    # after its first request, whichever comes first. max_batch 1 turns batching off.
    max_batch: int = 64
    max_wait_ms: float = 5.0
    # Request limits: what one request may ask (a bad request gets a 400 naming the field, never a 500).
    max_k: int = 100
    max_history: int = 200  # items in one history
    max_rows: int = 256  # histories of /v1/score, candidates per history, items of /v1/items/encode
    max_body_bytes: int = 1 << 20
    # POST /v1/domains answers only requests carrying this token (Authorization: Bearer TOKEN); None: off.
    admin_token: str | None = None

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "admin_token":
                continue
            if not math.isfinite(value):  # nan passes `value <= 0`, and a nan or infinite wait never ends a batch
                raise ConfigError(f"serve: --{f.name.replace('_', '-')} must be a finite number, got {value}.")
            if value <= 0:
                raise ConfigError(f"serve: --{f.name.replace('_', '-')} must be positive, got {value}.")
        if self.admin_token is not None and len(self.admin_token) < 8:
            raise ConfigError("serve: the admin token must be at least 8 characters long.")
