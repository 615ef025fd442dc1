//! The Lua scripts that make the fleet's writes atomic in Redis.

/// Writes an environment's snapshot, fenced by the lease: only the instance holding the lease
/// (its value is the fencing token) writes; anyone else is refused (-2), whatever it believes.
/// The same content is left alone (-1; a confirmation moves `confirmed_at`). New content gets
/// the next version, assigned here: one above the current, and at least Redis's clock in
/// seconds, so versions keep growing across a flushed store as the instances' event ids do.
/// Every time is Redis's (`TIME`). Then announces it. Returns `{result, now_ms}`.
/// KEYS: env hash, lease, channel. ARGV: hash, document, scopes, writer, environment,
/// confirmed ("now" for a confirmation, else the Redis time in ms it was last confirmed).
pub(super) const WRITE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('GET', KEYS[2]) ~= ARGV[4] then return {-2, now} end
local confirmed = ARGV[6]
if confirmed == 'now' then confirmed = string.format('%.0f', now) end
if redis.call('HGET', KEYS[1], 'hash') == ARGV[1] then
  local c = tonumber(redis.call('HGET', KEYS[1], 'confirmed_at') or '0')
  if tonumber(confirmed) > c then
    redis.call('HSET', KEYS[1], 'confirmed_at', confirmed)
  end
  return {-1, now}
end
local cur = tonumber(redis.call('HGET', KEYS[1], 'version') or '0')
local version = math.max(cur + 1, tonumber(t[1]))
redis.call('HSET', KEYS[1], 'version', string.format('%.0f', version), 'hash', ARGV[1],
  'document', ARGV[2], 'written_at', string.format('%.0f', now), 'confirmed_at', confirmed,
  'scopes', ARGV[3], 'writer', ARGV[4])
redis.call('PUBLISH', KEYS[3], 'snapshot ' .. string.format('%.0f', version) .. ' ' .. ARGV[5])
return {version, now}
";

/// Renews the lease if this instance holds it. KEYS: lease. ARGV: me, ttl (ms).
pub(super) const RENEW: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
";

/// Gives the lease up if this instance holds it. KEYS: lease. ARGV: me.
pub(super) const RELEASE: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
";

/// Confirms an environment's record is current, if its content is `hash` and this instance
/// holds the lease; the time is Redis's. Returns `{1 or 0, now_ms}`. KEYS: env hash, lease.
/// ARGV: hash, me.
pub(super) const CONFIRM: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
if redis.call('GET', KEYS[2]) == ARGV[2] and redis.call('HGET', KEYS[1], 'hash') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'confirmed_at', string.format('%.0f', now))
  return {1, now}
end
return {0, now}
";
