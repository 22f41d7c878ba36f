local current = redis.call('GET', KEYS[1])
if not current then
  return 0
end
if ARGV[1] == 'L' then
  if current ~= ARGV[2] then
    return 0
  end
elseif redis.sha1hex(current) ~= ARGV[2] then
  return 0
end
redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
return 1
