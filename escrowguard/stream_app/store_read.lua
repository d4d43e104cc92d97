-- escrowguard: read the as-of context of a batch of candidate events, in one round trip.
--
-- ARGV[1] is a msgpack array:
--   1 key prefix            2 own partitions ("topic:partition")   3 own bound (us)
--   4 backer history window (us)  5 wallet window (us)
--   6 bandit window (days)  7 day length (us)  8 bandit days already cached by the caller
--   9 candidates: {type, t_us, event_id, shard, gen, a, b, c, have_pp, have_mv} in
--     processing order; have_* = how much of the project's pledge log / the milestone's
--     vote log the caller already holds (as-of prefixes are final once read)
--     type 1 backer_registered(a=backer) 2 project_created(a=project)
--          3 milestone_created(a=project, b=milestone) 4 pledge(a=backer, b=project, c=wallet)
--          5 vote(a=project, b=milestone) 6 milestone_resolved(a=project, b=milestone)
--  10 max members per log read (newest kept)
--  11 gate: false reads every candidate regardless of the frontier (on-demand scoring)
--  12 bandit days to read in any case
-- Returns msgpack {F, processed_max, events, bandit, marker}: only candidates with t <= F are read
-- (the global event-time frontier, docs/ordering.md), each as {seen, data...}. A log comes
-- back as ONE string, entries "score\31member" joined by "\30" (cheap to split in Python);
-- a prefix log as {count as of t, first index sent, entries from there}.
local req = cmsgpack.unpack(ARGV[1])
local P, own_list, own_bound = req[1], req[2], req[3]
local hist_us, wallet_us = req[4], req[5]
local window_days, day_us = req[6], req[7]
local cached, cands, max_members = {}, req[9], req[10]
for _, d in ipairs(req[8]) do cached[d] = true end
local own = {}
for _, tp in ipairs(own_list) do own[tp] = true end

local F = own_bound
if req[11] then
  local frontier = redis.call('HGETALL', P .. ':frontier')
  for i = 1, #frontier, 2 do
    if not own[frontier[i]] then
      local v = tonumber(frontier[i + 1])
      if v < F then F = v end
    end
  end
end
local pmax = tonumber(redis.call('HGET', P .. ':meta', 'processed_max') or '-4611686018427387904')
-- the namespace's state marker (false when Redis lost it): the caller checks it is the one it
-- decides against (stream_app/state_marker.py)
local marker = redis.call('GET', P .. ':marker') or false

local function fmt(x) return string.format('%.0f', x) end
local function joined(flat)
  local parts = {}
  for i = 1, #flat, 2 do parts[#parts + 1] = flat[i + 1] .. '\31' .. flat[i] end
  return table.concat(parts, '\30')
end
local function before(key, lo, t)
  local hi = '(' .. fmt(t)
  local n = redis.call('ZCOUNT', key, lo and fmt(lo) or '-inf', hi)
  if n > max_members then
    return joined(redis.call('ZRANGEBYSCORE', key, lo and fmt(lo) or '-inf', hi, 'WITHSCORES',
      'LIMIT', n - max_members, max_members))
  end
  return joined(redis.call('ZRANGEBYSCORE', key, lo and fmt(lo) or '-inf', hi, 'WITHSCORES'))
end
-- a project's milestones: its log holds milestone ids; each record lives once, in its own key
-- (already "t\31event_id\31..." text: the same shape as a log entry)
local function milestones(project, t)
  local ids = redis.call('ZRANGEBYSCORE', P .. ':pm:' .. project, '-inf', '(' .. fmt(t),
    'LIMIT', 0, max_members)
  local parts = {}
  for _, mid in ipairs(ids) do
    local ref = redis.call('GET', P .. ':m:' .. mid)
    if ref then parts[#parts + 1] = ref end
  end
  return table.concat(parts, '\30')
end
local sent = {}
local function prefix(key, t, have)
  local n = redis.call('ZCOUNT', key, '-inf', '(' .. fmt(t))
  local from = math.max(have, sent[key] or 0)
  if n <= from then return {n, from, ''} end
  sent[key] = n
  return {n, from, joined(redis.call('ZRANGE', key, from, n - 1, 'WITHSCORES'))}
end
local function seen(eid, shard, gen)
  for g = gen - 1, gen + 1 do
    local v = redis.call('HGET', P .. ':seen:' .. fmt(g) .. ':' .. shard, eid)
    if v then return v end
  end
  return false
end
local function field(text, n)
  local start = 1
  for _ = 1, n - 1 do
    local sep = string.find(text, '\31', start, true)
    if not sep then return nil end
    start = sep + 1
  end
  local stop = string.find(text, '\31', start, true)
  return string.sub(text, start, stop and stop - 1 or -1)
end

local bandit, wanted = {}, {}
for _, d in ipairs(req[12] or {}) do wanted[d] = true end
local function want_day(mref)
  if not mref then return end
  local opens = tonumber(field(mref, 7))
  local day = math.floor(opens / day_us) - 1
  if not cached[day] and not wanted[day] then wanted[day] = true end
end

local out = {}
for _, c in ipairs(cands) do
  local kind, t, eid, shard, gen, a, b, w = c[1], c[2], c[3], c[4], c[5], c[6], c[7], c[8]
  local have_pp, have_mv = c[9], c[10]
  if t > F then break end
  local row = {seen(eid, shard, gen)}
  if kind == 1 then
    row[2] = redis.call('GET', P .. ':b:' .. a) or false
  elseif kind == 2 then
    row[2] = redis.call('GET', P .. ':p:' .. a) or false
  elseif kind == 3 then
    row[2] = redis.call('GET', P .. ':p:' .. a) or false
    row[3] = redis.call('GET', P .. ':m:' .. b) or false
  elseif kind == 4 then
    local project = redis.call('GET', P .. ':p:' .. b) or false
    row[2] = redis.call('GET', P .. ':b:' .. a) or false
    row[3] = before(P .. ':bp:' .. a, t - hist_us, t)
    row[4] = project
    row[5] = prefix(P .. ':pp:' .. b, t, have_pp)
    row[6] = before(P .. ':wc:' .. w, nil, t)
    row[7] = before(P .. ':wp:' .. w, t - wallet_us, t)
    row[8] = milestones(b, t)
  else
    local mref = redis.call('GET', P .. ':m:' .. b) or false
    row[2] = mref
    row[3] = redis.call('GET', P .. ':p:' .. a) or false
    row[4] = prefix(P .. ':pp:' .. a, t, have_pp)
    row[5] = prefix(P .. ':mv:' .. b, t, have_mv)
    row[6] = before(P .. ':pr:' .. a, nil, t)
    if kind == 6 then row[7] = milestones(a, t) end
    if kind == 5 then want_day(mref) end
  end
  out[#out + 1] = row
end

for day, _ in pairs(wanted) do
  local counts = {}
  local lo, hi = (day - window_days) * day_us, day * day_us
  local res = redis.call('ZRANGEBYSCORE', P .. ':res', fmt(lo), '(' .. fmt(hi))
  for _, member in ipairs(res) do
    local sep = string.find(member, '\31', 1, true)
    local mid, approved = string.sub(member, 1, sep - 1), string.sub(member, sep + 1)
    local arm = redis.call('GET', P .. ':arm:' .. mid)
    if arm then
      counts[arm] = counts[arm] or {0, 0}
      if approved == '1' then counts[arm][1] = counts[arm][1] + 1
      else counts[arm][2] = counts[arm][2] + 1 end
    end
  end
  local flat = {day}
  for arm, c in pairs(counts) do
    flat[#flat + 1] = arm; flat[#flat + 1] = c[1]; flat[#flat + 1] = c[2]
  end
  bandit[#bandit + 1] = flat
end

return cmsgpack.pack({F, pmax, out, bandit, marker})
