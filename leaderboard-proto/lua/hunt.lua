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
local LIBRARY_VERSION = 10

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
local MAX_POINTS = {{MAX_POINTS}}

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

-- A tier's fence check: every function that writes a tier's board or awards runs it first.
local function fenced(fence, token)
  if redis.call('GET', fence) ~= token then
    return redis.error_reply('FENCED the fence token is not the tier\'s current one')
  end
  return nil
end

-- Writes score changes to a tier's board. `players` lists the players in the order they reached
-- their new totals; `delta` holds each one's changes, a list in the order they happened. A player
-- is on the board from their first change (at 0 too); a player whose score changes gets a new
-- member "<order><player>", where <order> is a fixed-width, decreasing counter handed out in that
-- order, so that among equal scores the one reached first sorts first in ZREVRANGE and ZREVRANK.
-- The changes are taken one by one, as if each came alone: one that would take the running total
-- past +-(2^53 - 1) is left out and counted, and the next ones go on from the total before it, so
-- a board never depends on how changes were batched. The board is written with a handful of
-- variadic calls, however many players change.
-- Returns rejected, top (1 when the first <top_size> ranks may have changed).
local function write_board(scores, members, top_size, players, delta)
  local rejected, top = 0, 0
  if #players == 0 then
    return rejected, top
  end
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
    local score = member and old_score[member] or 0
    local total = score
    for _, change in ipairs(delta[player]) do
      local next_total = total + change
      if next_total > MAX_POINTS or next_total < -MAX_POINTS then
        rejected = rejected + 1
      else
        total = next_total
      end
    end
    -- No net change keeps an existing member, and so its place among equal scores.
    if total ~= score or not member then
      updates[#updates + 1] = {player, member, total}
      if threshold == nil or total >= threshold or (member and score >= threshold) then
        top = 1
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
      local fresh = string.format('%0{{MEMBER_ORDER_WIDTH}}d', MAX_POINTS - (first + k)) .. player
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
  return rejected, top
end

-- An award record in hunt:{t<N>}:awards: "<state>\t<chest>\t<player>\t<points>\t<shard>".
-- Ids never hold control characters, so a tab separates the fields. States:
--   pending      scored, waiting for the saga to claim its chest;
--   confirmed    holds its chest (final);
--   revoked      lost its chest, points taken back, its shard not told yet (still pending);
--   compensated  lost its chest, points taken back, its shard told (final);
--   withdrawn    revoked by its own shard (an AwardRevoked in the shard's stream): points taken
--                back if it had scored, never scores later (final).
local function award_record(state, chest, player, points, shard)
  return state .. '\t' .. chest .. '\t' .. player .. '\t' .. points .. '\t' .. shard
end

local function award_parse(record)
  local state, chest, player, points, shard =
    string.match(record, '^([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)\t([^\t]*)$')
  return state, chest, player, tonumber(points), shard
end

-- hunt_apply(KEYS = tier fence, applied, replay, scores, members, cursor, clues, awards,
--                   awards pending;
--            ARGV = fence token, stream cursor, top size, then per entry: shard, tier_seq, player,
--            points, kind, ref, ref2)
-- Applies a batch of stream entries exactly once. The token must be the tier's current fence,
-- or nothing happens and the call fails with FENCED. Per shard, an entry at or below the applied
-- watermark is a duplicate and skipped; the next one (watermark + 1) is applied; anything past
-- a hole records a replay request (the first missing tier_seq) and the shard's later entries in
-- the batch are skipped. An entry with an empty player carries no points (a wave reset).
-- Kinds:
--   ''  points for the player;
--   'c' a clue solve (ref = clue id, ref2 = its claim token): scores only when the token is
--       greater than every token of that clue applied in the tier before, so a stale (or
--       repeated) token scores nothing;
--   'a' a chest award (ref = award id, ref2 = chest key): scores once per award id and is
--       recorded as pending for the saga;
--   'r' the shard revoking its own award (ref = award id): a pending award is withdrawn and its
--       points taken back once; a settled one is left alone; an unknown one is recorded as
--       withdrawn so it can never score later.
-- Points are kept per player in order and written by write_board. An entry whose points would
-- take the player's running total past +-(2^53 - 1) is not scored (the entry still counts as
-- applied) and is reported; the entries before and after it are, as if each came alone.
-- Returns {applied, duplicates, gaps, rejected, top, awards, stale}: top is 1 when the batch may
-- have changed the first <top size> ranks; awards counts the awards recorded as pending; stale
-- counts clue solves refused for their token.
local function apply(keys, args)
  local fence, applied_key, replay_key, scores, members, cursor, clues, awards, pending =
    keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7], keys[8], keys[9]
  local refused = fenced(fence, args[1])
  if refused then
    return refused
  end
  local top_size = tonumber(args[3])
  local watermark, blocked = {}, {}
  local delta, last_seen, players = {}, {}, {}
  local applied, duplicates, gaps, awarded, stale = 0, 0, 0, 0, 0
  local clue_tokens = {}
  for i = 4, #args, 7 do
    local shard, tier_seq = args[i], tonumber(args[i + 1])
    local player, points = args[i + 2], tonumber(args[i + 3])
    local kind, ref, ref2 = args[i + 4], args[i + 5], args[i + 6]
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
        if kind == 'c' then
          local token = tonumber(ref2)
          local best = clue_tokens[ref]
          if best == nil then
            best = hash_get_number(clues, ref)
          end
          if token > best then
            clue_tokens[ref] = token
          else
            clue_tokens[ref] = best
            stale = stale + 1
            points = 0
          end
        elseif kind == 'a' then
          if redis.call('HEXISTS', awards, ref) == 1 then
            points = 0
          else
            local order = redis.call('HINCRBY', awards, '', 1)
            redis.call('HSET', awards, ref, award_record('pending', ref2, player, int(points), shard))
            redis.call('ZADD', pending, order, ref)
            awarded = awarded + 1
          end
        elseif kind == 'r' then
          -- The entry's own points are not trusted: the record says what the award scored.
          points = 0
          local record = redis.call('HGET', awards, ref)
          if record then
            local state, chest, holder, scored, owner = award_parse(record)
            if state == 'pending' then
              redis.call('HSET', awards, ref, award_record('withdrawn', chest, holder, int(scored), owner))
              redis.call('ZREM', pending, ref)
              if holder == player then
                points = -scored
              elseif delta[holder] ~= nil then
                table.insert(delta[holder], -scored)
              else
                delta[holder] = {-scored}
                players[#players + 1] = holder
                last_seen[holder] = i
              end
            end
          else
            redis.call('HSET', awards, ref, award_record('withdrawn', '', player, '0', shard))
          end
        end
        if player ~= '' then
          if delta[player] == nil then
            delta[player] = {}
            players[#players + 1] = player
          end
          if points ~= 0 then
            table.insert(delta[player], points)
          end
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
  for clue, token in pairs(clue_tokens) do
    redis.call('HSET', clues, clue, int(token))
  end

  -- In the order the players reached their new totals.
  table.sort(players, function(a, b) return last_seen[a] < last_seen[b] end)
  local rejected, top = write_board(scores, members, top_size, players, delta)
  redis.call('SET', cursor, args[2])
  return {applied, duplicates, gaps, rejected, top, awarded, stale}
end

-- The claims gate. `hunt:claims` (a hash) names the Redis incarnation the claim state belongs to
-- and whether that state is complete: after a Redis lost its data (restarted empty, flushed),
-- the state is created again under a new incarnation with the gate closed, every shard restores
-- the claim decisions its file records (hunt_restore_clue, hunt_restore_chest) and joins
-- (hunt_claims_join), and the gate opens once every expected shard has. Until then the claim
-- functions refuse with RECOVERING rather than answer from a state that misses decisions.
-- Fields: incarnation, open (0/1), expected (shards), joined (count), shard:<id> (1 per joiner).

-- The gate of a claim function called with KEYS[2] = claims state and its incarnation as the
-- last argument: an error reply unless the state is of that incarnation and open. Without
-- KEYS[2] (Redis Cluster, where the state lives in another slot) the caller checked the gate
-- itself just before the call.
local function gate(keys, incarnation)
  if not keys[2] then
    return nil
  end
  local state = redis.call('HMGET', keys[2], 'incarnation', 'open')
  if state[1] ~= incarnation or state[2] ~= '1' then
    return redis.error_reply('RECOVERING the claim state is being restored from the shard files')
  end
  return nil
end

-- hunt_claims_state(KEYS[1] = claims state; ARGV[1] = an incarnation id for a state created now)
-- Returns {incarnation, open (0/1), joined, expected}. A missing state (a new Redis, or one that
-- lost its data) is created under ARGV[1] with the gate closed.
local function claims_state(keys, args)
  local state = keys[1]
  if redis.call('HSETNX', state, 'incarnation', args[1]) == 1 then
    redis.call('HSET', state, 'open', '0', 'expected', '0', 'joined', '0')
  end
  local v = redis.call('HMGET', state, 'incarnation', 'open', 'joined', 'expected')
  return {v[1], tonumber(v[2] or '0'), tonumber(v[3] or '0'), tonumber(v[4] or '0')}
end

-- hunt_claims_join(KEYS[1] = claims state; ARGV = incarnation, shard id, expected shards)
-- The shard has restored its decisions under this incarnation. The expected count only rises;
-- the gate opens once as many distinct shards have joined. Returns {1, open} or, when the
-- incarnation is no longer the current one (Redis lost data again: restore again), {0, 0}.
local function claims_join(keys, args)
  local state, incarnation, shard, expected = keys[1], args[1], args[2], tonumber(args[3])
  if redis.call('HGET', state, 'incarnation') ~= incarnation then
    return {0, 0}
  end
  if redis.call('HSETNX', state, 'shard:' .. shard, '1') == 1 then
    redis.call('HINCRBY', state, 'joined', 1)
  end
  if expected > hash_get_number(state, 'expected') then
    redis.call('HSET', state, 'expected', int(expected))
  end
  if hash_get_number(state, 'joined') >= hash_get_number(state, 'expected') then
    redis.call('HSET', state, 'open', '1')
  end
  return {1, hash_get_number(state, 'open')}
end

-- hunt_claims_open(KEYS[1] = claims state)
-- The operator's override: opens the gate without the shards that have not joined (a shard gone
-- for good). Returns {incarnation or '', joined, expected}; nothing is created when the state
-- is missing.
local function claims_open(keys, args)
  local state = keys[1]
  local incarnation = redis.call('HGET', state, 'incarnation')
  if not incarnation then
    return {'', 0, 0}
  end
  redis.call('HSET', state, 'open', '1')
  return {incarnation, hash_get_number(state, 'joined'), hash_get_number(state, 'expected')}
end

-- hunt_restore_clue(KEYS[1] = clue; ARGV = wave, token, holder ('' for none))
-- Puts back what a shard file records of a clue: its token counter never below the token, the
-- wave opened, and the holder of that wave. Nothing is lowered and a holder is never replaced,
-- so shards may restore in any order and any number of times. Returns 1.
local function restore_clue(keys, args)
  local clue, wave, token, holder = keys[1], tonumber(args[1]), tonumber(args[2]), args[3]
  local state = redis.call('HMGET', clue, 'reset_at', 'current_hunter', 'token')
  local stored, current = tonumber(state[1] or '0'), state[2]
  if token > tonumber(state[3] or '0') then
    redis.call('HSET', clue, 'token', int(token))
  end
  if wave > stored then
    redis.call('HDEL', clue, 'current_hunter')
    redis.call('HSET', clue, 'reset_at', int(wave))
    stored, current = wave, nil
  end
  if holder ~= '' and wave == stored and not current then
    redis.call('HSET', clue, 'current_hunter', holder)
  end
  return 1
end

-- The chest goes to the first award that sets it (SET NX EX); the holder setting it again is told
-- it holds it. Returns {1, award id} or {0, holder}.
local function take_chest(chest, award, ttl)
  if redis.call('SET', chest, award, 'NX', 'EX', ttl) then
    return {1, award}
  end
  local holder = redis.call('GET', chest)
  if holder == award then
    return {1, award}
  end
  return {0, holder}
end

-- hunt_restore_chest(KEYS[1] = chest, KEYS[2] = chest recorded; ARGV = award id, ttl seconds)
-- Puts back a chest claim a shard file records, ungated, and marks it recorded. Returns
-- {1, award id}, or {0, holder} when another award already holds the chest.
local function restore_chest(keys, args)
  local claim = take_chest(keys[1], args[1], args[2])
  if claim[1] == 1 then
    redis.call('SET', keys[2], args[1], 'EX', args[2])
  end
  return claim
end

-- hunt_chest_recorded(KEYS[1] = chest, KEYS[2] = chest recorded; ARGV = award id, mark)
-- Whether the award holds the chest; with mark '1' (its holding now in a shard file), also marks
-- the chest recorded for it, for as long as the claim lives. Returns 1 when the award holds the
-- chest, 0 when it does not (nothing marked).
local function chest_recorded(keys, args)
  if redis.call('GET', keys[1]) ~= args[1] then
    return 0
  end
  if args[2] == '1' then
    local ttl = redis.call('PTTL', keys[1])
    if ttl > 0 then
      redis.call('SET', keys[2], args[1], 'PX', ttl)
    else
      redis.call('SET', keys[2], args[1])
    end
  end
  return 1
end

-- hunt_verdict_send(KEYS[1] = shard verdicts; ARGV = award id, chest, cap)
-- Asks a shard to record in its file that the award holds the chest (fields a, c). A stream
-- holding cap entries refuses with INBOX_FULL: nothing is trimmed unread. Sending twice is
-- harmless (recording is idempotent). Returns 1.
local function verdict_send(keys, args)
  if redis.call('XLEN', keys[1]) >= tonumber(args[3]) then
    return redis.error_reply('INBOX_FULL the shard\'s verdict stream holds ' .. int(tonumber(args[3])) .. ' unrecorded entries')
  end
  redis.call('XADD', keys[1], '*', 'a', args[1], 'c', args[2])
  return 1
end

-- hunt_open_clue(KEYS[1] = clue, [KEYS[2] = claims state]; ARGV = wave, [incarnation])
-- Opens the clue to new claims for a wave (waves count from 1): its holder (current_hunter) is
-- cleared and the wave stored in reset_at. A wave at or below the one stored changes nothing, so a
-- repeated or late reset never reopens a clue claimed in a later wave. The token counter is
-- kept: every claim of every wave gets a greater token.
-- Returns {1, wave} when opened, {0, stored wave} when not.
local function open_clue(keys, args)
  local refused = gate(keys, args[2])
  if refused then
    return refused
  end
  local clue, wave = keys[1], tonumber(args[1])
  local stored = hash_get_number(clue, 'reset_at')
  if wave <= stored then
    return {0, stored}
  end
  redis.call('HDEL', clue, 'current_hunter')
  redis.call('HSET', clue, 'reset_at', int(wave))
  return {1, wave}
end

-- hunt_claim_clue(KEYS[1] = clue, [KEYS[2] = claims state]; ARGV = player_id, solve time ms
--                 (the shard's clock, kept for people, never compared), [incarnation])
-- First solver wins: a compare-and-swap of current_hunter from none to the player. The winner
-- gets token = previous token + 1, greater than every token of the clue before. The holder
-- asking again gets its own token back (a retried claim).
-- Returns {1, player_id, token, wave} won (or already held by this player), {0, holder, token,
-- wave} held by another, {-1} for a clue never opened.
local function claim_clue(keys, args)
  local refused = gate(keys, args[3])
  if refused then
    return refused
  end
  local clue, player_id = keys[1], args[1]
  local state = redis.call('HMGET', clue, 'reset_at', 'current_hunter', 'token')
  if not state[1] then
    return {-1}
  end
  local wave, holder, token = tonumber(state[1]), state[2], tonumber(state[3] or '0')
  if holder then
    if holder == player_id then
      return {1, holder, token, wave}
    end
    return {0, holder, token, wave}
  end
  token = redis.call('HINCRBY', clue, 'token', 1)
  redis.call('HSET', clue, 'current_hunter', player_id, 'last_solve_ms', args[2])
  return {1, player_id, token, wave}
end

-- hunt_check_clue(KEYS[1] = clue, [KEYS[2] = claims state]; ARGV = player_id, token,
--                 [incarnation])
-- Whether a write carrying this token may go ahead: 'ok' when the player holds the clue under
-- exactly this token; 'stale' for an older token; 'future' for a token never handed out;
-- 'not_holder' when the token is current but another player (or nobody) holds the clue;
-- 'unknown' for a clue never opened.
local function check_clue(keys, args)
  local refused = gate(keys, args[3])
  if refused then
    return refused
  end
  local clue, player_id, token = keys[1], args[1], tonumber(args[2])
  local state = redis.call('HMGET', clue, 'reset_at', 'current_hunter', 'token')
  if not state[1] then
    return 'unknown'
  end
  local current = tonumber(state[3] or '0')
  if token > current then
    return 'future'
  end
  if token < current then
    return 'stale'
  end
  if state[2] ~= player_id then
    return 'not_holder'
  end
  return 'ok'
end

-- hunt_claim_chest(KEYS[1] = chest, [KEYS[2] = claims state]; ARGV = award id, ttl seconds,
--                  [incarnation])
-- The chest goes to the first award that claims it (SET NX EX). The holder claiming again is
-- told it holds it. Returns {1, award id} or {0, holder}.
local function claim_chest(keys, args)
  local refused = gate(keys, args[3])
  if refused then
    return refused
  end
  return take_chest(keys[1], args[1], args[2])
end

-- hunt_award_pending(KEYS = awards, awards pending or awards revoked; ARGV[1] = limit)
-- The oldest awards of that set, in the order they were applied: {award id, record, ...}.
local function award_pending(keys, args)
  local ids = redis.call('ZRANGE', keys[2], 0, tonumber(args[1]) - 1)
  if #ids == 0 then
    return {}
  end
  local records = redis.call('HMGET', keys[1], unpack(ids))
  local out = {}
  for k, id in ipairs(ids) do
    out[#out + 1] = id
    out[#out + 1] = records[k] or ''
  end
  return out
end

-- hunt_award_settle(KEYS = tier fence, awards, awards pending, awards settled, scores, members,
--                          awards revoked, awards confirming;
--                   ARGV = fence token, now ms, top size, then pairs: award id, chest holder)
-- Settles pending awards once their chests are claimed: the award holding its chest is
-- confirmed (and waits in the confirming set until its shard is asked to record it); any other
-- is revoked, its points taken back exactly once (only a pending award
-- changes state) and moved to the revoked set (keeping its apply order) until its shard has been
-- told: a shard whose inbox is full then delays only its own compensations, never the settling
-- of newer awards. Fenced like hunt_apply. now ms (the router's clock) only decides when a
-- settled record expires.
-- Returns {confirmed, revoked, rejected, top, revoked award id...}.
local function award_settle(keys, args)
  local fence, awards, pending, settled, scores, members, revoked_set, confirming =
    keys[1], keys[2], keys[3], keys[4], keys[5], keys[6], keys[7], keys[8]
  local refused = fenced(fence, args[1])
  if refused then
    return refused
  end
  local now, top_size = args[2], tonumber(args[3])
  local confirmed, revoked = 0, 0
  local delta, players, revoked_ids = {}, {}, {}
  for i = 4, #args, 2 do
    local id, holder = args[i], args[i + 1]
    local record = redis.call('HGET', awards, id)
    if record then
      local state, chest, player, points, shard = award_parse(record)
      if state == 'pending' then
        if holder == id then
          redis.call('HSET', awards, id, award_record('confirmed', chest, player, int(points), shard))
          local order = redis.call('ZSCORE', pending, id) or '0'
          redis.call('ZREM', pending, id)
          redis.call('ZADD', settled, now, id)
          if chest ~= '' then
            redis.call('ZADD', confirming, order, id)
          end
          confirmed = confirmed + 1
        else
          redis.call('HSET', awards, id, award_record('revoked', chest, player, int(points), shard))
          local order = redis.call('ZSCORE', pending, id) or '0'
          redis.call('ZREM', pending, id)
          redis.call('ZADD', revoked_set, order, id)
          if delta[player] == nil then
            delta[player] = {}
            players[#players + 1] = player
          end
          table.insert(delta[player], -points)
          revoked = revoked + 1
          revoked_ids[#revoked_ids + 1] = id
        end
      end
    end
  end
  local rejected, top = write_board(scores, members, top_size, players, delta)
  local out = {confirmed, revoked, rejected, top}
  for _, id in ipairs(revoked_ids) do
    out[#out + 1] = id
  end
  return out
end

-- hunt_compensate(KEYS = shard inbox, shard inbox sent; ARGV = award id, payload, now ms,
--                 keep ms, inbox cap)
-- Tells a shard one of its awards was revoked: adds the payload (an AwardRevoked HuntEvent) to
-- its inbox once per award id. The sent set remembers award ids for keep ms (the router's clock;
-- older entries are dropped as new ones come). An inbox holding cap unacknowledged entries
-- refuses with INBOX_FULL, so nothing is trimmed unread: the saga retries later.
-- Returns 1 when added, 0 when the award was already sent.
local function compensate(keys, args)
  local inbox, sent = keys[1], keys[2]
  local award, payload, now, keep, cap = args[1], args[2], tonumber(args[3]), tonumber(args[4]), tonumber(args[5])
  if redis.call('ZSCORE', sent, award) then
    return 0
  end
  if redis.call('XLEN', inbox) >= cap then
    return redis.error_reply('INBOX_FULL the shard\'s compensation inbox holds ' .. int(cap) .. ' unacknowledged entries')
  end
  redis.call('XADD', inbox, '*', 'e', payload)
  redis.call('ZADD', sent, int(now), award)
  redis.call('ZREMRANGEBYSCORE', sent, '-inf', '(' .. int(now - keep))
  return 1
end

-- hunt_inbox_ack(KEYS[1] = inbox; ARGV = consumer group, entry id)
-- Acknowledges an inbox entry and deletes it, in one single-key call (so on Redis Cluster it
-- follows the inbox's slot wherever it moves, which a MULTI does not). Returns the entries
-- deleted (0 or 1); acknowledging twice is harmless.
local function inbox_ack(keys, args)
  redis.call('XACK', keys[1], args[1], args[2])
  return redis.call('XDEL', keys[1], args[2])
end

-- hunt_award_finish(KEYS = tier fence, awards, awards revoked, awards settled;
--                   ARGV = fence token, now ms, award id...)
-- Marks revoked awards whose shard has been told as compensated and takes them out of the
-- revoked set. Fenced. Returns how many changed.
local function award_finish(keys, args)
  local fence, awards, revoked_set, settled = keys[1], keys[2], keys[3], keys[4]
  local refused = fenced(fence, args[1])
  if refused then
    return refused
  end
  local now, finished = args[2], 0
  for i = 3, #args do
    local id = args[i]
    local record = redis.call('HGET', awards, id)
    if record then
      local state, chest, player, points, shard = award_parse(record)
      if state == 'revoked' then
        redis.call('HSET', awards, id, award_record('compensated', chest, player, int(points), shard))
        redis.call('ZREM', revoked_set, id)
        redis.call('ZADD', settled, now, id)
        finished = finished + 1
      end
    end
  end
  return finished
end

-- hunt_award_expire(KEYS = awards, awards settled; ARGV = before ms, limit)
-- Forgets up to limit awards settled before the given time (records live 24 h by default).
-- Returns how many were forgotten.
local function award_expire(keys, args)
  local awards, settled = keys[1], keys[2]
  local ids = redis.call('ZRANGEBYSCORE', settled, '-inf', '(' .. args[1], 'LIMIT', 0, tonumber(args[2]))
  if #ids == 0 then
    return 0
  end
  redis.call('HDEL', awards, unpack(ids))
  redis.call('ZREM', settled, unpack(ids))
  return #ids
end

redis.register_function{function_name = 'hunt_version', callback = version, flags = {'no-writes'}}
redis.register_function('hunt_publish', publish)
redis.register_function('hunt_next_epoch', next_epoch)
redis.register_function('hunt_lease_acquire', lease_acquire)
redis.register_function('hunt_lease_renew', lease_renew)
redis.register_function('hunt_lease_release', lease_release)
redis.register_function('hunt_apply', apply)
redis.register_function('hunt_claims_state', claims_state)
redis.register_function('hunt_claims_join', claims_join)
redis.register_function('hunt_claims_open', claims_open)
redis.register_function('hunt_restore_clue', restore_clue)
redis.register_function('hunt_restore_chest', restore_chest)
redis.register_function('hunt_chest_recorded', chest_recorded)
redis.register_function('hunt_verdict_send', verdict_send)
redis.register_function('hunt_open_clue', open_clue)
redis.register_function('hunt_claim_clue', claim_clue)
redis.register_function{function_name = 'hunt_check_clue', callback = check_clue, flags = {'no-writes'}}
redis.register_function('hunt_claim_chest', claim_chest)
redis.register_function{function_name = 'hunt_award_pending', callback = award_pending, flags = {'no-writes'}}
redis.register_function('hunt_award_settle', award_settle)
redis.register_function('hunt_compensate', compensate)
redis.register_function('hunt_inbox_ack', inbox_ack)
redis.register_function('hunt_award_finish', award_finish)
redis.register_function('hunt_award_expire', award_expire)
