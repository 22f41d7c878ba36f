local current = redis.call('GET', KEYS[1])
if not current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return {0}
end
if string.sub(current, 1, 4) == string.sub(ARGV[1], 1, 4) then
  return {2, redis.call('PTTL', KEYS[1])}
end
return {1, current, redis.sha1hex(current)}
