"""Velocity counters shared by several gateway workers, in Redis.

Same counters, windows and accuracy as :mod:`paywarden.fraud.velocity`. Each
update and each record-and-read is one Lua script (``EVALSHA``), so it is atomic:
two workers recording at once both count, and each sees a distinct total.

Keys (``prefix`` defaults to ``pw:vel:``)::

    {prefix}e:{entity}:{value}   hash, field "{window}:{bucket}:{metric}" -> int,
                                 plus "p", the minute it was last pruned
    {prefix}c:{entity}:{value}   sorted set, card -> last seen (customer, email,
                                 ip_address, device): exact distinct-card counts
    {prefix}a:{attempt_id}       hash, an attempt awaiting its outcome

Every key is given a TTL of the longest window plus one bucket (7 days 2 hours)
on each write, so idle entities vanish by themselves; stale hash fields and
sorted-set members are pruned as the entity is written. Distinct cards are kept
exactly (one sorted-set member per card and entity, for a week): at our scale
that is small, and a HyperLogLog's 0.8 % error would make a rule like
``card_count_for_ip_address_daily > 3`` flaky. The keys of one event live in
different hash slots: this backend targets a single Redis (or a primary with
replicas), not Redis Cluster. Needs Redis 6.2 or later (``ZADD ... GT``).
"""

from __future__ import annotations

from typing import Any

from paywarden.fraud.velocity import (
    CARD_COUNT_NAMES,
    CARD_COUNT_SLOTS,
    CHARGE_NAMES,
    ENTITIES,
    METRICS,
    OUTCOMES,
    RETENTION_SECONDS,
    WINDOWS,
    Outcome,
    PaymentEvent,
    VelocityError,
    entity_tuple,
)

# ARGV: 1 mode ("r" record, "s" snapshot, "rs" both), 2 presence ("10110": which
# of the five entity keys are real), 3-5 bucket of `at` per window, 6-8 buckets
# per window, 9 at, 10 card ("" if none), 11 USD cents, 12 outcome metric (0 if
# unknown), 13 TTL, 14-16 distinct-card lower bounds (exclusive) per window,
# 17 oldest card score kept, 18 "1" if KEYS[1] is an attempt to remember.
# KEYS: 1 attempt, 2-6 entity hashes, 7-10 card sets (slots 1-4).
# Returns {recorded (1/0), 5 x 3 x 6 charge metrics, 4 x 3 card counts}.
_RECORD = """
local mode, pres = ARGV[1], ARGV[2]
local b = {tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5])}
local n = {tonumber(ARGV[6]), tonumber(ARGV[7]), tonumber(ARGV[8])}
local at, card, usd, outcome = ARGV[9], ARGV[10], tonumber(ARGV[11]), tonumber(ARGV[12])
local ttl = tonumber(ARGV[13])
local recorded = 0
if string.find(mode, 'r', 1, true) then
  if ARGV[18] == '1' and redis.call('EXISTS', KEYS[1]) == 1 then
    recorded = 0
  else
    recorded = 1
    local deltas = {{0, 1}, {4, usd}}
    if outcome > 0 then
      table.insert(deltas, {outcome, 1})
      if outcome == 1 then table.insert(deltas, {5, usd}) end
    end
    for s = 1, 5 do
      if string.sub(pres, s, s) == '1' then
        local key = KEYS[1 + s]
        local mark = redis.call('HGET', key, 'p')
        if (not mark) or tonumber(mark) < b[1] then
          for _, f in ipairs(redis.call('HKEYS', key)) do
            local w, bk = string.match(f, '^(%d):(%d+):')
            if w and tonumber(bk) < b[tonumber(w) + 1] - n[tonumber(w) + 1] then
              redis.call('HDEL', key, f)
            end
          end
          redis.call('HSET', key, 'p', b[1])
        end
        for w = 1, 3 do
          for _, d in ipairs(deltas) do
            if d[2] ~= 0 then
              redis.call('HINCRBY', key, (w - 1) .. ':' .. b[w] .. ':' .. d[1], d[2])
            end
          end
        end
        redis.call('EXPIRE', key, ttl)
        if card ~= '' and s > 1 then
          local z = KEYS[5 + s]
          redis.call('ZADD', z, 'GT', at, card)
          redis.call('ZREMRANGEBYSCORE', z, '-inf', ARGV[17])
          redis.call('EXPIRE', z, ttl)
        end
      end
    end
    if ARGV[18] == '1' then
      local fields = {'bh', b[1], 'bd', b[2], 'bw', b[3], 'usd', usd}
      for s = 1, 5 do
        if string.sub(pres, s, s) == '1' then
          table.insert(fields, 'k' .. s)
          table.insert(fields, KEYS[1 + s])
        end
      end
      if outcome > 0 then
        table.insert(fields, 'o')
        table.insert(fields, outcome)
      end
      redis.call('HSET', KEYS[1], unpack(fields))
      redis.call('EXPIRE', KEYS[1], ttl)
    end
  end
end
local out = {recorded}
if not string.find(mode, 's', 1, true) then return out end
for s = 1, 5 do
  local acc = {}
  for i = 1, 18 do acc[i] = 0 end
  if string.sub(pres, s, s) == '1' then
    local flat = redis.call('HGETALL', KEYS[1 + s])
    for i = 1, #flat, 2 do
      local w, bk, m = string.match(flat[i], '^(%d):(%d+):(%d)$')
      if w then
        local wi, bkn = tonumber(w) + 1, tonumber(bk)
        if bkn <= b[wi] and bkn >= b[wi] - n[wi] then
          local k = (wi - 1) * 6 + tonumber(m) + 1
          acc[k] = acc[k] + tonumber(flat[i + 1])
        end
      end
    end
  end
  for i = 1, 18 do table.insert(out, acc[i]) end
end
for s = 2, 5 do
  for w = 1, 3 do
    if string.sub(pres, s, s) == '1' then
      table.insert(out, redis.call('ZCOUNT', KEYS[5 + s], '(' .. ARGV[13 + w], at))
    else
      table.insert(out, 0)
    end
  end
end
return out
"""

# KEYS: 1 attempt, 2.. its entity hashes. ARGV: 1 outcome metric, 2 TTL.
# Returns 1 counted, 0 already counted, -1 unknown attempt, -2 another outcome.
_OUTCOME = """
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
local cur = redis.call('HGET', KEYS[1], 'o')
if cur then
  if cur == ARGV[1] then return 0 end
  return -2
end
local v = redis.call('HMGET', KEYS[1], 'bh', 'bd', 'bw', 'usd')
redis.call('HSET', KEYS[1], 'o', ARGV[1])
for i = 2, #KEYS do
  for w = 1, 3 do
    redis.call('HINCRBY', KEYS[i], (w - 1) .. ':' .. v[w] .. ':' .. ARGV[1], 1)
    if ARGV[1] == '1' and tonumber(v[4]) ~= 0 then
      redis.call('HINCRBY', KEYS[i], (w - 1) .. ':' .. v[w] .. ':5', v[4])
    end
  end
  redis.call('EXPIRE', KEYS[i], tonumber(ARGV[2]))
end
return 1
"""


class RedisVelocityStore:
    def __init__(self, url: str, *, prefix: str = "pw:vel:") -> None:
        import redis

        self.prefix = prefix
        self._r = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._record_script = self._r.register_script(_RECORD)
        self._outcome_script = self._r.register_script(_OUTCOME)

    def close(self) -> None:
        self._r.close()

    def record(self, event: PaymentEvent, *, attempt_id: str | None = None) -> None:
        self._run("r", event.at, event.entities(), event=event, attempt_id=attempt_id)

    def record_and_snapshot(
        self, event: PaymentEvent, *, attempt_id: str | None = None
    ) -> dict[str, int]:
        return self._run("rs", event.at, event.entities(), event=event, attempt_id=attempt_id)

    def snapshot(
        self,
        *,
        at: float,
        card: str | None = None,
        customer: str | None = None,
        email: str | None = None,
        ip_address: str | None = None,
        device: str | None = None,
    ) -> dict[str, int]:
        entities = entity_tuple(card, customer, email, ip_address, device)
        return self._run("s", at, entities, event=None, attempt_id=None)

    def record_outcome(self, attempt_id: str, outcome: Outcome) -> bool:
        if outcome not in OUTCOMES:
            raise ValueError(f"outcome must be one of {', '.join(OUTCOMES)}")
        akey = self._attempt_key(attempt_id)
        stored: dict[bytes, bytes] = self._r.hgetall(akey)
        keys = [v.decode() for k, v in sorted(stored.items()) if k.startswith(b"k")]
        if not stored:
            return False
        res = int(
            self._outcome_script(
                keys=[akey, *keys], args=[1 + OUTCOMES.index(outcome), RETENTION_SECONDS]
            )
        )
        if res == -2:
            raise VelocityError("a different outcome was already recorded for this attempt")
        return res == 1

    def clear(self) -> int:
        """Delete every key under this store's prefix (tests, tear-down)."""
        deleted = 0
        for key in self._r.scan_iter(match=_glob_escape(self.prefix) + "*", count=500):
            deleted += int(self._r.delete(key))
        return deleted

    def _attempt_key(self, attempt_id: str) -> str:
        return f"{self.prefix}a:{attempt_id}"

    def _run(
        self,
        mode: str,
        at: float,
        entities: tuple[str | None, ...],
        *,
        event: PaymentEvent | None,
        attempt_id: str | None,
    ) -> dict[str, int]:
        dummy = f"{self.prefix}-"
        hashes = [
            f"{self.prefix}e:{ENTITIES[s]}:{v}" if v is not None else dummy
            for s, v in enumerate(entities)
        ]
        sets = [
            f"{self.prefix}c:{ENTITIES[s]}:{entities[s]}" if entities[s] is not None else dummy
            for s in CARD_COUNT_SLOTS
        ]
        akey = self._attempt_key(attempt_id) if attempt_id is not None else dummy
        card = (entities[0] or "") if event is not None else ""
        outcome = 0
        if event is not None and event.outcome is not None:
            outcome = 1 + OUTCOMES.index(event.outcome)
        args: list[Any] = [
            mode,
            "".join("0" if v is None else "1" for v in entities),
            *(w.bucket(at) for w in WINDOWS),
            *(w.buckets for w in WINDOWS),
            repr(float(at)),
            card,
            event.usd_cents if event is not None else 0,
            outcome,
            RETENTION_SECONDS,
            *(repr(float(at - w.seconds)) for w in WINDOWS),
            repr(float(at - WINDOWS[-1].seconds)),
            "1" if attempt_id is not None else "0",
        ]
        raw: list[int] = self._record_script(keys=[akey, *hashes, *sets], args=args)
        if "s" not in mode:
            return {}
        return _decode(raw, entities)


def _decode(raw: list[int], entities: tuple[str | None, ...]) -> dict[str, int]:
    out: dict[str, int] = {}
    pos = 1
    for slot, value in enumerate(entities):
        if value is not None:
            for wi in range(len(WINDOWS)):
                start = pos + wi * METRICS
                out.update(
                    zip(CHARGE_NAMES[slot][wi], map(int, raw[start : start + METRICS]), strict=True)
                )
        pos += len(WINDOWS) * METRICS
    for slot in CARD_COUNT_SLOTS:
        if entities[slot] is not None:
            out.update(zip(CARD_COUNT_NAMES[slot], map(int, raw[pos : pos + 3]), strict=True))
        pos += len(WINDOWS)
    return out


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)
