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
local LIBRARY_VERSION = 3

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
--            ARGV = fence token, stream cursor, then per entry: shard, tier_seq, player, points)
-- Applies a batch of stream entries exactly once. The token must be the tier's current fence,
-- or nothing happens and the call fails with FENCED. Per shard, an entry at or below the applied
-- watermark is a duplicate and skipped; the next one (watermark + 1) is applied; anything past
-- a hole records a replay request (the first missing tier_seq) and the shard's later entries in
-- the batch are skipped. Points are summed per player first; a player whose score changes gets
-- a new member "<order><player>" where <order> is a fixed-width, decreasing counter, so that among
-- equal scores the one reached first sorts first in ZREVRANGE and ZREVRANK. An entry with an
-- empty player carries no points (a wave reset). A total that would leave +-(2^53 - 1) is not
-- applied (the entry still counts as applied) and is reported.
-- Returns {applied, duplicates, gaps, rejected}.
local function apply(keys, args)
  local fence, applied_key, replay_key, scores, members, cursor =
    keys[1], keys[2], keys[3], keys[4], keys[5], keys[6]
  if redis.call('GET', fence) ~= args[1] then
    return redis.error_reply('FENCED the fence token is not the tier\'s current one')
  end
  local watermark, blocked = {}, {}
  local delta, players = {}, {}
  local applied, duplicates, gaps, rejected = 0, 0, 0, 0
  for i = 3, #args, 4 do
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
  for _, player in ipairs(players) do
    local change = delta[player]
    local member = redis.call('HGET', members, player)
    -- A player is on the board from their first applied entry, even at 0 points; a change of 0
    -- keeps an existing member (and so its place among equal scores).
    if change ~= 0 or not member then
      local score = 0
      if member then
        score = tonumber(redis.call('ZSCORE', scores, member)) or 0
      end
      local total = score + change
      if total > MAX_POINTS or total < -MAX_POINTS then
        rejected = rejected + 1
      else
        -- The order counter lives in the members hash under the empty field: no player id is
        -- empty, so it cannot collide with a player.
        local order = redis.call('HINCRBY', members, '', 1)
        local fresh = string.format('%016d', MAX_POINTS - order) .. player
        if member then
          redis.call('ZREM', scores, member)
        end
        redis.call('ZADD', scores, int(total), fresh)
        redis.call('HSET', members, player, fresh)
      end
    end
  end
  redis.call('SET', cursor, args[2])
  return {applied, duplicates, gaps, rejected}
end

redis.register_function{function_name = 'hunt_version', callback = version, flags = {'no-writes'}}
redis.register_function('hunt_publish', publish)
redis.register_function('hunt_next_epoch', next_epoch)
redis.register_function('hunt_lease_acquire', lease_acquire)
redis.register_function('hunt_lease_renew', lease_renew)
redis.register_function('hunt_lease_release', lease_release)
redis.register_function('hunt_apply', apply)
