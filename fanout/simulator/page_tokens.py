"""Opaque, signed page tokens bound to their list.

Why its own module: the token format is part of what the simulator promises (long, with
``+ / =``, tamper-evident, stable across restarts with the same seed) and is tested alone.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json

_TOKEN_PREFIX = "hp1+"


class _PageTokens:
    """Opaque, signed, path-bound page tokens.

    Format: ``"hp1+" + standard-base64(json + 12-byte MAC)``, about 70-80 characters. The
    literal "+" (and base64's "/" and "=") mean a client that pastes the token into a URL
    without query-encoding it gets a 400, as it would from any server with opaque tokens.
    The key derives from the seed, so tokens survive a simulator restart with the same seed.
    """

    def __init__(self, seed: int) -> None:
        self._key = hashlib.blake2b(f"hermes-sim-page-token:{seed}".encode()).digest()[:32]

    def _mac(self, payload: bytes) -> bytes:
        return hashlib.blake2b(payload, key=self._key, digest_size=12).digest()

    @staticmethod
    def _path_hash(path_key: str) -> str:
        return hashlib.blake2b(path_key.encode("utf-8"), digest_size=6).hexdigest()

    def encode(self, path_key: str, offset: int, state: int = 0) -> str:
        """A token for ``offset`` in this list; ``state`` (hostile modes only) rides along."""
        data: dict[str, int | str] = {"v": 1, "o": offset, "p": self._path_hash(path_key)}
        if state:
            data["s"] = state
        payload = json.dumps(data, separators=(",", ":")).encode()
        return _TOKEN_PREFIX + base64.b64encode(payload + self._mac(payload)).decode("ascii")

    def decode(self, path_key: str, token: str) -> int:
        """The offset a token points at; ``ValueError`` if it is malformed, tampered or foreign."""
        return self.decode_state(path_key, token)[0]

    def decode_state(self, path_key: str, token: str) -> tuple[int, int]:
        """The offset and the state a token carries (see :meth:`encode`)."""
        if not token.startswith(_TOKEN_PREFIX):
            raise ValueError("not a page token of this server")
        try:
            raw = base64.b64decode(token[len(_TOKEN_PREFIX) :], validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError("page token is not valid base64") from exc
        payload, mac = raw[:-12], raw[-12:]
        if len(raw) <= 12 or not hmac.compare_digest(mac, self._mac(payload)):
            raise ValueError("page token signature does not match")
        data = json.loads(payload)
        if data.get("p") != self._path_hash(path_key):
            raise ValueError("page token belongs to another list")
        offset = data.get("o")
        state = data.get("s", 0)
        if not isinstance(offset, int) or offset <= 0 or not isinstance(state, int):
            raise ValueError("page token offset is invalid")
        return offset, state
