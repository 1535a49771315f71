-- ack_batch: apply the server's answer to the queue call of a claimed batch and close it.
-- Refused (nothing written) unless the caller holds the batch under its incarnation and its
-- lease is alive. Only tasks of the batch that are still G or A in Redis take the answer (a
-- sync that already moved a task on is newer than the answer); DONE/ERROR_FATAL stay final;
-- with a stamp, the stale guard of apply_update applies and the task's stamp moves forward.
-- With propagate, new completions are counted once and what became ready is queued.
-- Then the reservation and the claims are released; tasks of the batch still G or A go back to
-- the front of the queue in batch order.
-- KEYS: the run's keys.
-- ARGV: 1 seen, 2 actor, 3 epoch, 4 replica id, 5 incarnation, 6 batch id, 7 propagate (1/0),
--       8 stamp (µs, or ""), 9 n, then n pairs: task id, status
-- Returns: {version, "id:status:done:old ..." changed, "id ..." ready and queued,
--           "id:done:status ..." credited downstreams, {"", "", 0}, {id, ...} requeued,
--           {id, ...} unfinished fan-outs (see apply_update)}
--          (the shape of apply_update's reply, plus the requeued ids)
-- Errors: STATELOST, INVALID (a malformed argument, a corrupt task record or counter it would
--         touch), LEASELOST. Nothing is written on an error.
--!include prelude
--!include batch
--!include check
--!include records
--!include apply
local bad = chk_name(ARGV[4], 'replica id') or chk_name(ARGV[5], 'incarnation')
  or chk_name(ARGV[6], 'batch id') or chk_flag(ARGV[7], 'propagate')
  or chk_opt_int(ARGV[8], 'sync stamp') or chk_int(ARGV[9], 'number of changes')
  or chk_pairs(10, tonumber(ARGV[9]))
  or chk_int_hash(K.reserved, 'reserved') or chk_int_hash(K.active, 'active')
  or chk_int_hash(K.counters, 'counter')
if bad then
  return bad
end
--!phase validate
local rid, inc, bid = ARGV[4], ARGV[5], ARGV[6]
local propagate = ARGV[7] == '1'
local stamp = ARGV[8]
local n = tonumber(ARGV[9])
local b, err = live_holder_batch(rid, inc, bid)
if err then
  return err
end
-- the usual answer names the batch's tasks in batch order: then its ids are the batch's and no
-- id needs a lookup (splitting the batch's list costs more than the rest of a task's share)
local answer_ids = {}
for i = 1, n do
  answer_ids[i] = ARGV[8 + 2 * i]
end
local batch_ids, of_batch
if table.concat(answer_ids, ',') == b.ids then
  batch_ids = answer_ids
else
  batch_ids = split_ids(b.ids)
  local in_batch = {}
  for _, id in ipairs(batch_ids) do
    in_batch[id] = true
  end
  of_batch = function(id)
    return in_batch[id]
  end
end

--!phase ack:batch
local function takes_answer(status)
  return status == 'G' or status == 'A'
end
local r, invalid, R = apply_changes(10, n, stamp, propagate, takes_answer, of_batch)
if invalid then
  return invalid
end
report_changes(r, n)
--!phase report
local back = close_batch(bid, b, function(id)
  return recs_status(R, id)
end, batch_ids)
--!phase ack:close
redis.call('HINCRBY', K.counters, 'acks', 1)
emit('type', 'ack', 'batch', bid, 'replica', rid, 'changed', #r.changed, 'requeued', #back)
touch()
return changes_reply(r, {'', '', 0}, back)
