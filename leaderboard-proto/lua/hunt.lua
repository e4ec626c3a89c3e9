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
local LIBRARY_VERSION = 1

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

redis.register_function{function_name = 'hunt_version', callback = version, flags = {'no-writes'}}
redis.register_function('hunt_publish', publish)
redis.register_function('hunt_next_epoch', next_epoch)
