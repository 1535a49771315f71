-- keytypes.lua: the first thing every script runs (scripts.py puts it right after the generated
-- header, before the reply-cache lookup). Every key of the run holds the type the key table
-- gives it (KEY_TYPES, from keys.RUN_KEY_TYPES) or does not exist: a key of another type
-- (written by hand, a bad restore) would fail a command with WRONGTYPE after the script's first
-- write, so it is refused here, before anything is read or written.
for i = 1, #KEYS do
  local t = redis.call('TYPE', KEYS[i])
  t = type(t) == 'table' and t.ok or t
  if t ~= 'none' and t ~= KEY_TYPES[i] then
    return redis.error_reply('INVALID key ' .. KEYS[i] .. ' holds a ' .. tostring(t) .. ', not a '
      .. KEY_TYPES[i] .. '; nothing was written (see swarm-redis verify)')
  end
end
