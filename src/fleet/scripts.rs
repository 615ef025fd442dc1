//! The Lua scripts that make the fleet's writes atomic in Redis.

/// Writes an environment's snapshot: the same content is left alone (only `confirmed_at`
/// may move forward); a newer version wins; the lease holder's differing content wins too
/// (with the next version). Then announces it. KEYS: env hash, lease, channel. ARGV: version,
/// hash, document, now (ms), scopes, writer, environment, confirmed_at (ms).
pub(super) const WRITE: &str = r"
local cur = redis.call('HGET', KEYS[1], 'version')
local h = redis.call('HGET', KEYS[1], 'hash')
if h == ARGV[2] then
  local c = tonumber(redis.call('HGET', KEYS[1], 'confirmed_at') or '0')
  if tonumber(ARGV[8]) > c then
    redis.call('HSET', KEYS[1], 'confirmed_at', ARGV[8])
  end
  return -1
end
local version = tonumber(ARGV[1])
if cur and tonumber(cur) >= version then
  if redis.call('GET', KEYS[2]) ~= ARGV[6] then return -2 end
  version = tonumber(cur) + 1
end
redis.call('HSET', KEYS[1], 'version', string.format('%.0f', version), 'hash', ARGV[2],
  'document', ARGV[3], 'written_at', ARGV[4], 'confirmed_at', ARGV[8], 'scopes', ARGV[5],
  'writer', ARGV[6])
redis.call('PUBLISH', KEYS[3], 'snapshot ' .. string.format('%.0f', version) .. ' ' .. ARGV[7])
return version
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

/// Confirms an environment's record is current, if its content is `hash`. KEYS: env hash.
/// ARGV: hash, now (ms).
pub(super) const CONFIRM: &str = r"
if redis.call('HGET', KEYS[1], 'hash') == ARGV[1] then
  redis.call('HSET', KEYS[1], 'confirmed_at', ARGV[2])
  return 1
end
return 0
";
