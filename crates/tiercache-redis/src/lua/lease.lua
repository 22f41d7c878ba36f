-- A key of another type (a list, a hash) under the cache's name is not a value: replaced, as a
-- plain SET would replace it.
local kind = redis.call('TYPE', KEYS[1])['ok']
if kind ~= 'none' and kind ~= 'string' then
  redis.call('DEL', KEYS[1])
end
local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {0}
end
if string.sub(current, 1, 4) == string.sub(ARGV[1], 1, 4) then
  local left = redis.call('PTTL', KEYS[1])
  if left > 0 then
    return {2, left}
  end
  -- A lease frame without an expiry (written by hand, or PERSISTed) would be waited for forever.
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {0}
end
return {1, current, redis.sha1hex(current)}
