#!lua name=hunt
-- The hunt-pipeline Redis Functions library. Loaded by the shard writer and the tier router with
-- FUNCTION LOAD REPLACE whenever a call finds it missing (a Redis restarted without its data).
--
-- Rules for every function here:
-- * every key a function touches is passed in KEYS, and all keys of one call share one hash tag,
--   so each call is single-slot and runs unchanged on Redis Cluster;
-- * no function reads the clock to decide anything: ordering comes from counters and fences;
-- * integers travel as decimal strings; points and sequence numbers stay below 2^53, where a Lua
--   number is exact.

-- Raised by hand whenever a function is added or changed, so an older process never replaces a
-- newer library (see leaderboard_proto::functions::ensure_loaded).
local LIBRARY_VERSION = 4

local function hash_get_number(key, field)
  local value = redis.call('HGET', key, field)
  if value then
    return tonumber(value)
  end
  return 0
end

-- hunt_version() -> the library version.
local function version()
  return LIBRARY_VERSION
end

-- hunt_publish(KEYS[1] = tier stream, KEYS[2] = tier published hash;
--              ARGV = shard field, stream cap, floor, highest tier_seq in the batch, payloads...)
-- Appends the payloads to the stream (field "e", MAXLEN ~ cap) and raises the shard's published
-- mark to the batch's highest tier_seq, never lowering it (a re-send covers older tier_seqs).
-- The floor is the lowest mark the writer expects Redis to hold (the batch's first tier_seq
-- minus one): a mark below it means Redis lost what was published, and adding the batch would
-- leave a hole, so nothing is added and the writer re-sends from the mark.
-- Returns {1, mark} when the batch was added, {0, mark} when it was refused.
local function publish(keys, args)
  local stream, published = keys[1], keys[2]
  local shard, cap = args[1], args[2]
  local floor, highest = tonumber(args[3]), tonumber(args[4])
  local mark = hash_get_number(published, shard)
  if mark < floor then
    return {0, mark}
  end
  for i = 5, #args do
    redis.call('XADD', stream, 'MAXLEN', '~', cap, '*', 'e', args[i])
  end
  if highest > mark then
    redis.call('HSET', published, shard, highest)
    mark = highest
  end
  return {1, mark}
end

-- hunt_next_epoch(KEYS[1] = shard epoch key; ARGV[1] = lowest acceptable epoch)
-- Increments the shard's epoch and returns it, never below ARGV[1]: a Redis that lost its data
-- must not hand out an epoch the shard has already used.
local function next_epoch(keys, args)
  local floor = tonumber(args[1])
  local epoch = redis.call('INCR', keys[1])
  if epoch < floor then
    redis.call('SET', keys[1], floor)
    epoch = floor
  end
  return epoch
end

-- The largest integer a Redis score (a double) holds exactly; points and totals stay within it.
local MAX_POINTS = 9007199254740991

-- Integers go to Redis formatted by hand: Lua's own number-to-string conversion keeps only 14
-- significant digits.
local function int(value)
  return string.format('%d', value)
end

-- A fence token names a counter and the router instance that acquired it: "<n>:<router>".
local function fence_counter(token)
  if not token then
    return 0
  end
  return tonumber(string.match(token, '^(%d+):')) or 0
end

-- hunt_lease_acquire(KEYS[1] = tier lease, KEYS[2] = tier fence; ARGV = router id, ttl ms)
-- Takes the tier's lease for the router, or renews it if the router holds it already.
-- A new holder gets a new fence token, greater than every earlier one of the tier (unless Redis
-- lost its data, in which case the router id, random per process start, still tells the tokens
-- apart). Returns {1, token} when the router holds the lease, {0, holder} when another does.
local function lease_acquire(keys, args)
  local lease, fence = keys[1], keys[2]
  local router, ttl = args[1], args[2]
  local holder = redis.call('GET', lease)
  if holder == router then
    local token = redis.call('GET', fence)
    if token then
      redis.call('PEXPIRE', lease, ttl)
      return {1, token}
    end
  elseif holder then
    return {0, holder}
  end
  redis.call('SET', lease, router, 'PX', ttl)
  local token = int(fence_counter(redis.call('GET', fence)) + 1) .. ':' .. router
  redis.call('SET', fence, token)
  return {1, token}
end

-- hunt_lease_renew(KEYS[1] = tier lease, KEYS[2] = tier fence; ARGV = router id, ttl ms, token)
-- Keeps the lease of a router that holds the fence token: fails with FENCED when the tier's fence
-- has moved on (another router took the tier, or Redis lost it), so a router that was paused past
-- its lease learns it from the fence, whether its next call is a renewal or an apply. A lease
-- that expired while the fence stayed is simply taken again under the same token: nobody else
-- applied in between. Returns the token.
local function lease_renew(keys, args)
  local lease, fence = keys[1], keys[2]
  local router, ttl, token = args[1], args[2], args[3]
  if redis.call('GET', fence) ~= token then
    return redis.error_reply('FENCED the fence token is not the tier\'s current one')
  end
  local holder = redis.call('GET', lease)
  if holder and holder ~= router then
    return redis.error_reply('FENCED the lease is held by another router')
  end
  redis.call('SET', lease, router, 'PX', ttl)
  return token
end

-- hunt_lease_release(KEYS[1] = tier lease; ARGV[1] = router id) -> 1 if released, 0 if not held.
local function lease_release(keys, args)
  if redis.call('GET', keys[1]) == args[1] then
    redis.call('DEL', keys[1])
    return 1
  end
  return 0
end

-- hunt_apply(KEYS = tier fence, applied, replay, scores, members, cursor;
--            ARGV = fence token, stream cursor, top size, then per entry: shard, tier_seq, player,
--            points)
-- Applies a batch of stream entries exactly once. The token must be the tier's current fence,
-- or nothing happens and the call fails with FENCED. Per shard, an entry at or below the applied
-- watermark is a duplicate and skipped; the next one (watermark + 1) is applied; anything past
-- a hole records a replay request (the first missing tier_seq) and the shard's later entries in
-- the batch are skipped. An entry with an empty player carries no points (a wave reset).
-- Points are summed per player first. A player is on the board from their first applied entry
-- (at 0 too); a player whose score changes gets a new member "<order><player>", where <order> is
-- a fixed-width, decreasing counter handed out in the order the players reached their new totals
-- (the position of their last entry in the batch), so that among equal scores the one reached
-- first sorts first in ZREVRANGE and ZREVRANK. A total that would leave +-(2^53 - 1) is not
-- applied (the entry still counts as applied) and is reported. The board is written with a
-- handful of variadic calls per batch, whatever its size.
-- Returns {applied, duplicates, gaps, rejected, top}, where top is 1 when the batch may have
-- changed the first <top size> ranks (so the router refreshes its copy only then).
local function apply(keys, args)
  local fence, applied_key, replay_key, scores, members, cursor =
    keys[1], keys[2], keys[3], keys[4], keys[5], keys[6]
  if redis.call('GET', fence) ~= args[1] then
    return redis.error_reply('FENCED the fence token is not the tier\'s current one')
  end
  local top_size = tonumber(args[3])
  local watermark, blocked = {}, {}
  local delta, last_seen, players = {}, {}, {}
  local applied, duplicates, gaps, rejected = 0, 0, 0, 0
  for i = 4, #args, 4 do
    local shard, tier_seq = args[i], tonumber(args[i + 1])
    local player, points = args[i + 2], tonumber(args[i + 3])
    if not blocked[shard] then
      local mark = watermark[shard]
      if mark == nil then
        mark = hash_get_number(applied_key, shard)
        watermark[shard] = mark
      end
      if tier_seq <= mark then
        duplicates = duplicates + 1
      elseif tier_seq == mark + 1 then
        watermark[shard] = tier_seq
        applied = applied + 1
        if player ~= '' then
          if delta[player] == nil then
            delta[player] = 0
            players[#players + 1] = player
          end
          delta[player] = delta[player] + points
          last_seen[player] = i
        end
      else
        blocked[shard] = true
        gaps = gaps + 1
        redis.call('HSET', replay_key, shard, int(mark + 1))
      end
    end
  end
  for shard, mark in pairs(watermark) do
    redis.call('HSET', applied_key, shard, int(mark))
    local wanted = redis.call('HGET', replay_key, shard)
    if wanted and tonumber(wanted) <= mark and not blocked[shard] then
      redis.call('HDEL', replay_key, shard)
    end
  end

  local top = 0
  if #players > 0 then
    -- In the order the players reached their new totals.
    table.sort(players, function(a, b) return last_seen[a] < last_seen[b] end)
    -- The score a player must reach (or leave) to touch the top; none while the board is short.
    local threshold = nil
    if redis.call('ZCARD', scores) >= top_size then
      local last = redis.call('ZREVRANGE', scores, top_size - 1, top_size - 1, 'WITHSCORES')
      threshold = tonumber(last[2])
    end
    local old_members = redis.call('HMGET', members, unpack(players))
    local present = {}
    for _, member in ipairs(old_members) do
      if member then
        present[#present + 1] = member
      end
    end
    local old_score = {}
    if #present > 0 then
      local found = redis.call('ZMSCORE', scores, unpack(present))
      for k, member in ipairs(present) do
        old_score[member] = tonumber(found[k]) or 0
      end
    end
    local updates = {}
    for k, player in ipairs(players) do
      local member = old_members[k]
      local change = delta[player]
      -- A change of 0 keeps an existing member, and so its place among equal scores.
      if change ~= 0 or not member then
        local score = member and old_score[member] or 0
        local total = score + change
        if total > MAX_POINTS or total < -MAX_POINTS then
          rejected = rejected + 1
        else
          updates[#updates + 1] = {player, member, total}
          if threshold == nil or total >= threshold or (member and score >= threshold) then
            top = 1
          end
        end
      end
    end
    if #updates > 0 then
      -- The order counter lives in the members hash under the empty field: no player id is
      -- empty, so it cannot collide with a player.
      local first = redis.call('HINCRBY', members, '', #updates) - #updates
      local removed, added, renamed = {}, {}, {}
      for k, update in ipairs(updates) do
        local player, member, total = update[1], update[2], update[3]
        local fresh = string.format('%016d', MAX_POINTS - (first + k)) .. player
        if member then
          removed[#removed + 1] = member
        end
        added[#added + 1] = int(total)
        added[#added + 1] = fresh
        renamed[#renamed + 1] = player
        renamed[#renamed + 1] = fresh
      end
      if #removed > 0 then
        redis.call('ZREM', scores, unpack(removed))
      end
      redis.call('ZADD', scores, unpack(added))
      redis.call('HSET', members, unpack(renamed))
    end
  end
  redis.call('SET', cursor, args[2])
  return {applied, duplicates, gaps, rejected, top}
end

redis.register_function{function_name = 'hunt_version', callback = version, flags = {'no-writes'}}
redis.register_function('hunt_publish', publish)
redis.register_function('hunt_next_epoch', next_epoch)
redis.register_function('hunt_lease_acquire', lease_acquire)
redis.register_function('hunt_lease_renew', lease_renew)
redis.register_function('hunt_lease_release', lease_release)
redis.register_function('hunt_apply', apply)
