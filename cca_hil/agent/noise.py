"""Fault injection for the agent link: a stream wrapper that flips bits, drops, duplicates and delays bytes.

Deterministic from a seed: each direction has its own random generator and the
decision for a byte depends only on how many bytes went that way before, not on
how the bytes were chunked into reads and writes.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, fields

from cca_hil.agent.streams import ByteStream
from cca_hil.errors import InputError


@dataclass(frozen=True, slots=True)
class NoiseSpec:
    """Per-byte fault rates and the largest added delay; parsed from ``ber=1e-4,drop=1e-3,dup=1e-3``."""

    ber: float = 0.0
    """Bit error rate: probability that any one bit is inverted."""
    drop: float = 0.0
    """Probability that a byte is lost."""
    dup: float = 0.0
    """Probability that a byte is delivered twice."""
    delay: float = 0.0
    """Largest pause, in seconds, before each write (uniformly drawn)."""

    def __post_init__(self) -> None:
        for name in ("ber", "drop", "dup"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise InputError(f"noise {name}={value} is not a probability between 0 and 1")
        if not 0.0 <= self.delay <= 10.0:
            raise InputError(f"noise delay={self.delay} must be between 0 and 10 seconds")

    @classmethod
    def parse(cls, text: str) -> NoiseSpec:
        """Parse ``key=value`` pairs separated by commas; unknown keys list the valid ones."""
        valid = [f.name for f in fields(cls)]
        values: dict[str, float] = {}
        for item in filter(None, (part.strip() for part in text.split(","))):
            key, sep, raw = item.partition("=")
            key = key.strip()
            if not sep or key not in valid:
                raise InputError(f"noise parameter {item!r} is not key=value with a known key", valid=valid)
            try:
                values[key] = float(raw)
            except ValueError:
                raise InputError(f"noise parameter {key}: {raw!r} is not a number") from None
        return cls(**values)

    def __str__(self) -> str:
        return ",".join(f"{f.name}={getattr(self, f.name):g}" for f in fields(self))


class _Channel:
    """The noise applied to one direction of the stream."""

    def __init__(self, spec: NoiseSpec, rng: random.Random) -> None:
        self.spec = spec
        self.rng = rng
        # Probability that a byte has at least one flipped bit, then a flip per bit given that.
        self.byte_error = 1.0 - (1.0 - spec.ber) ** 8
        self.flipped = 0
        self.dropped = 0
        self.duplicated = 0

    def apply(self, data: bytes) -> bytes:
        """The bytes as the other end receives them."""
        spec, rng = self.spec, self.rng
        if not (self.byte_error or spec.drop or spec.dup):
            return data
        out = bytearray()
        for byte in data:
            if spec.drop and rng.random() < spec.drop:
                self.dropped += 1
                continue
            if self.byte_error and rng.random() < self.byte_error:
                mask = 1 << rng.randrange(8)
                for bit in range(8):
                    if rng.random() < self.spec.ber:
                        mask |= 1 << bit
                byte ^= mask
                self.flipped += 1
            out.append(byte)
            if spec.dup and rng.random() < spec.dup:
                out.append(byte)
                self.duplicated += 1
        return bytes(out)


class NoisyStream:
    """Wraps a byte stream; corrupts what is written through it and what is read from it."""

    def __init__(self, inner: ByteStream, spec: NoiseSpec | str, *, seed: int = 0) -> None:
        self.inner = inner
        self.spec = NoiseSpec.parse(spec) if isinstance(spec, str) else spec
        self.tx = _Channel(self.spec, random.Random(f"{seed}:tx"))
        self.rx = _Channel(self.spec, random.Random(f"{seed}:rx"))
        self._delay_rng = random.Random(f"{seed}:delay")

    @property
    def timeout(self) -> float | None:
        """The wrapped stream's read timeout."""
        value: float | None = getattr(self.inner, "timeout", None)
        return value

    @timeout.setter
    def timeout(self, value: float | None) -> None:
        """Set the wrapped stream's read timeout."""
        self.inner.timeout = value  # type: ignore[attr-defined]

    @property
    def in_waiting(self) -> int:
        """Bytes the wrapped stream can deliver at once (before noise)."""
        count: int = getattr(self.inner, "in_waiting", 0)
        return count

    def read(self, size: int = 1) -> bytes:
        """Read from the wrapped stream and apply the receive-direction noise."""
        return self.rx.apply(self.inner.read(size))

    def write(self, data: bytes, /) -> int:
        """Apply the transmit-direction noise (and delay), then write to the wrapped stream."""
        if self.spec.delay:
            time.sleep(self._delay_rng.uniform(0.0, self.spec.delay))
        noisy = self.tx.apply(data)
        if noisy:
            self.inner.write(noisy)
        return len(data)

    def close(self) -> None:
        """Close the wrapped stream if it can be closed."""
        close = getattr(self.inner, "close", None)
        if close is not None:
            close()
