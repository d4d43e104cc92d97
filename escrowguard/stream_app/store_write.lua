-- escrowguard: apply one decided batch atomically (idempotent: every write is keyed by an
-- event id or is a max/min), publish this worker's partition frontiers, record positions.
--
-- ARGV[1] is a msgpack array:
--   1 prefix
--   2 seen        {event_id, shard, gen, position tag (CRC-32 of "topic:partition:offset")}
--   3 backers     {backer_id, text, t_us, event_id}
--   4 projects    {project_id, text, t_us, event_id, creator_id, creator_wallet}
--   5 milestones  {milestone_id, text, t_us, event_id, project_id}
--   6 pledges     {t_us, member, backer_id, project_id, source_wallet}
--   7 votes       {t_us, member, milestone_id}
--   8 resolutions {t_us, member, project_id, milestone_id, approved}
--   9 arms        {milestone_id, arm}
--  10 frontier    {"topic:partition", t_us}
--  11 processed_max t_us
--  12 positions   {"topic:partition", offset}
--  13 labels key ("" for none)  14 new labels
--  15 ttls {ref_s, seen_s, backer_s, wallet_s}
--  16 trims {backer_history_us, wallet_us, bandit outcomes kept (us)}
--  17 the state marker the batch was decided against (nil: not checked); when Redis holds
--     another one (or none: it lost its data) nothing is written (stream_app/state_marker.py)
-- Returns the label counter after the increment (0 when no key).
local req = cmsgpack.unpack(ARGV[1])
local P = req[1]
local ref_ttl, seen_ttl, backer_ttl, wallet_ttl = req[15][1], req[15][2], req[15][3], req[15][4]
local hist_us, wallet_us, res_keep_us = req[16][1], req[16][2], req[16][3]
local function fmt(x) return string.format('%.0f', x) end
if req[17] and redis.call('GET', P .. ':marker') ~= req[17] then
  return redis.error_reply('ESCROWGUARD_STATE_MARKER changed: nothing written')
end

-- reference data: one record per id, the earliest (t, event_id) wins
local function keep_earliest(key, text, t, eid)
  local cur = redis.call('GET', key)
  if cur then
    local sep1 = string.find(cur, '\31', 1, true)
    local sep2 = string.find(cur, '\31', sep1 + 1, true)
    local ct, ceid = tonumber(string.sub(cur, 1, sep1 - 1)), string.sub(cur, sep1 + 1, sep2 - 1)
    if ct < t or (ct == t and ceid <= eid) then
      redis.call('EXPIRE', key, ref_ttl)
      return
    end
  end
  redis.call('SET', key, text, 'EX', ref_ttl)
end

for _, s in ipairs(req[2]) do
  local key = P .. ':seen:' .. fmt(s[3]) .. ':' .. s[2]
  redis.call('HSETNX', key, s[1], s[4])
  redis.call('EXPIRE', key, seen_ttl)
end
for _, b in ipairs(req[3]) do keep_earliest(P .. ':b:' .. b[1], b[2], b[3], b[4]) end
for _, p in ipairs(req[4]) do
  keep_earliest(P .. ':p:' .. p[1], p[2], p[3], p[4])
  local wc = P .. ':wc:' .. p[6]
  redis.call('ZADD', wc, 'LT', fmt(p[3]), p[5])
  redis.call('EXPIRE', wc, ref_ttl)
end
for _, m in ipairs(req[5]) do
  keep_earliest(P .. ':m:' .. m[1], m[2], m[3], m[4])
  -- the project's milestone log holds ids (short: Redis keeps it compact); the record is in
  -- its own key, and its time is the earliest, like the record
  local pm = P .. ':pm:' .. m[5]
  redis.call('ZADD', pm, 'LT', fmt(m[3]), m[1])
  redis.call('EXPIRE', pm, ref_ttl)
end
for _, p in ipairs(req[6]) do
  local t, member = fmt(p[1]), p[2]
  local bp, pp, wp = P .. ':bp:' .. p[3], P .. ':pp:' .. p[4], P .. ':wp:' .. p[5]
  redis.call('ZADD', bp, t, member)
  redis.call('ZREMRANGEBYSCORE', bp, '-inf', '(' .. fmt(p[1] - 2 * hist_us))
  redis.call('EXPIRE', bp, backer_ttl)
  redis.call('ZADD', pp, t, member)
  redis.call('EXPIRE', pp, ref_ttl)
  redis.call('ZADD', wp, t, member)
  redis.call('ZREMRANGEBYSCORE', wp, '-inf', '(' .. fmt(p[1] - 2 * wallet_us))
  redis.call('EXPIRE', wp, wallet_ttl)
end
for _, v in ipairs(req[7]) do
  local mv = P .. ':mv:' .. v[3]
  redis.call('ZADD', mv, fmt(v[1]), v[2])
  redis.call('EXPIRE', mv, ref_ttl)
end
for _, r in ipairs(req[8]) do
  local pr = P .. ':pr:' .. r[3]
  redis.call('ZADD', pr, fmt(r[1]), r[2])
  redis.call('EXPIRE', pr, ref_ttl)
  redis.call('ZADD', P .. ':res', fmt(r[1]), r[4] .. '\31' .. r[5])
  redis.call('ZREMRANGEBYSCORE', P .. ':res', '-inf', '(' .. fmt(r[1] - res_keep_us))
end
for _, a in ipairs(req[9]) do
  redis.call('SET', P .. ':arm:' .. a[1], a[2], 'NX', 'EX', ref_ttl)
end
for _, f in ipairs(req[10]) do
  redis.call('HSET', P .. ':frontier', f[1], fmt(f[2]))
end
local pmax = tonumber(redis.call('HGET', P .. ':meta', 'processed_max') or '-4611686018427387904')
if req[11] > pmax then redis.call('HSET', P .. ':meta', 'processed_max', fmt(req[11])) end
for _, p in ipairs(req[12]) do
  redis.call('HSET', P .. ':pos', p[1], fmt(p[2]))
end
if req[13] ~= '' and req[14] > 0 then
  return redis.call('HINCRBY', P .. ':meta', req[13], req[14])
end
return 0
