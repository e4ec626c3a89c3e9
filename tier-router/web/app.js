// The live leaderboard page: follows one tier over /ws (snapshot, then deltas) and reconnects
// with backoff, resuming from the last version it saw. Frames are hunt.v1.SpectatorRequest and
// SpectatorResponse in the proto3 JSON mapping (64-bit integers arrive as strings, and fields at
// their default value are left out: an update without `stale` is fresh, one without
// `changedAtMs` comes from a router that does not say when the board changed).
//
// Rows are kept per player and updated in place: a frame moves the rows whose rank changed
// (animated unless the reader prefers reduced motion) and marks each change with ▲/▼, the
// places gained or lost and the score change, for MOVE_MS.
//
// "Follow a hunter": the page asks GET /player?tier=N&id=P&around=AROUND (hunt.v1.GetPlayerResponse
// in the proto3 JSON mapping; errors as {"error":{"code","message"}} with 400, 404 or 503) and
// shows the player's rank, score and neighbours in a panel, asks again when the board changes (at
// most once every REFRESH_MS), and marks the player's row in the board. The followed id is kept in
// the URL hash: #tier-1&follow=ada.
"use strict";

const state = document.getElementById("state");
const announce = document.getElementById("announce");
const tiersNav = document.getElementById("tiers");
const tbody = document.querySelector("#board tbody");
const caption = document.getElementById("caption");
const empty = document.getElementById("empty");
const updated = document.getElementById("updated");
const followForm = document.getElementById("follow-form");
const followInput = document.getElementById("follow-id");
const followPanel = document.getElementById("follow-panel");
const followSummary = document.getElementById("follow-summary");
const followNote = document.getElementById("follow-note");
const followAround = document.getElementById("follow-around");
const followStop = document.getElementById("follow-stop");

/// How long a change stays marked beside its row.
const MOVE_MS = 3000;
/// How long a row takes to slide to its new place.
const SLIDE_MS = 450;
const MAX_BACKOFF_MS = 30000;
/// Neighbours asked for on each side of a followed player (the router allows up to 50).
const AROUND = 3;
/// The least time between two refreshes of the followed player.
const REFRESH_MS = 1000;
/// How long a look-up of the followed player may take before the page gives up on it.
const LOOKUP_TIMEOUT_MS = 8000;
const reducedMotion = window.matchMedia("(prefers-reduced-motion: reduce)");

let tier = null;
let tierName = "";
let version = null; // the last version applied, as the string the router sent
let epoch = null; // the lineage that version counts in (one router's run)
let stale = false; // the router could not read this tier's top for the last update
let changedAt = null; // when the board last changed, Unix ms (the router's, or this page's)
let rows = new Map(); // player -> Row
let socket = null;
let connected = false;
let backoff = 1000;
let reconnectAt = null; // when the next connection attempt starts, while waiting for it
let reconnectTimer = null;
let error = null; // {code, message} of the last error frame, until a good update arrives
let failure = null; // why the page cannot start at all
let followed = null; // the id of the player followed, or null

// ---- the status badge and the footer -----------------------------------------------------

function clock(ms) {
  return new Date(ms).toLocaleTimeString(undefined, {
    hour: "2-digit",
    minute: "2-digit",
    second: "2-digit",
  });
}

function ago(ms) {
  const seconds = Math.max(0, Math.floor((Date.now() - ms) / 1000));
  if (seconds < 1) return "updated just now";
  if (seconds < 60) return `updated ${seconds} s ago`;
  const minutes = Math.floor(seconds / 60);
  if (minutes < 60) return `updated ${minutes} min ago`;
  return `updated ${Math.floor(minutes / 60)} h ago`;
}

/// What the badge says now: [class, visible text, what a screen reader is told].
function status() {
  if (failure) return ["error", failure, failure];
  if (!connected) {
    if (reconnectAt === null) return ["connecting", "connecting…", "connecting"];
    const seconds = Math.max(1, Math.ceil((reconnectAt - Date.now()) / 1000));
    return ["reconnecting", `reconnecting in ${seconds} s…`, "connection lost, reconnecting"];
  }
  if (error) {
    const text = "error: " + error.code.replace(/_/g, " ");
    return ["error", text, text + (error.message ? ". " + error.message : "")];
  }
  if (version === null) return ["connecting", "connecting…", "connecting"];
  if (stale) {
    const text =
      changedAt === null ? "paused — data may be out of date" : `paused — data from ${clock(changedAt)}`;
    return ["paused", text, text];
  }
  return ["live", "live", "live"];
}

function showStatus() {
  const [name, text, spoken] = status();
  const className = "state " + name;
  if (state.className !== className) state.className = className;
  if (state.textContent !== text) state.textContent = text;
  if (error && name === "error") state.title = error.message || "";
  else state.removeAttribute("title");
  // Announce changes of state, not every tick of a countdown.
  if (announce.dataset.said !== spoken) {
    announce.dataset.said = spoken;
    announce.textContent = spoken;
  }
  const footer = changedAt === null ? "" : ago(changedAt);
  if (updated.textContent !== footer) updated.textContent = footer;
  if (changedAt === null) updated.removeAttribute("datetime");
  else updated.dateTime = new Date(changedAt).toISOString();
}

// The badge's countdown and the footer's "updated N s ago" move with the clock.
setInterval(showStatus, 1000);

// ---- rows ----------------------------------------------------------------------------------

/// One player's row, kept for as long as the player is in the shown top.
class Row {
  constructor(player, rank, score, name) {
    this.player = player;
    this.name = null;
    this.rank = rank;
    this.score = score;
    this.tr = document.createElement("tr");
    this.tr.dataset.player = player;
    this.cells = {};
    for (const name of ["rank", "player", "score", "move"]) {
      const td = document.createElement("td");
      td.className = name;
      td.appendChild(document.createTextNode(""));
      this.cells[name] = td;
      this.tr.appendChild(td);
    }
    this.setName(name);
    this.tag = null; // the "★ following" element while the player is followed
    this.setFollowed(player === followed);
    this.mark = null; // the ▲/▼ element while a change is shown
    this.markTimer = null;
    this.slide = null;
    this.paint();
  }

  /// Shows the player's display name (the id when it has none; the id on hover otherwise).
  setName(name) {
    if (name === this.name) return;
    this.name = name;
    this.cells.player.firstChild.data = name;
    if (name === this.player) this.cells.player.removeAttribute("title");
    else this.cells.player.title = this.player;
  }

  /// Writes rank and score into the row's text nodes (kept, so a selection inside survives).
  paint() {
    const rank = String(this.rank);
    const score = this.score.toLocaleString();
    if (this.cells.rank.firstChild.data !== rank) this.cells.rank.firstChild.data = rank;
    if (this.cells.score.firstChild.data !== score) this.cells.score.firstChild.data = score;
    for (const top of [1, 2, 3]) this.tr.classList.toggle("r" + top, this.rank === top);
  }

  /// Marks the row as the followed player's: a highlight, an outline and the words "★ following".
  setFollowed(on) {
    if (on === (this.tag !== null)) return;
    this.tr.classList.toggle("following", on);
    if (on) {
      this.tag = document.createElement("span");
      this.tag.className = "tag";
      const star = document.createElement("span");
      star.setAttribute("aria-hidden", "true");
      star.textContent = "★ ";
      this.tag.append(star, "following");
      this.cells.player.append(" ", this.tag);
    } else {
      this.tag.previousSibling?.remove(); // the space before it
      this.tag.remove();
      this.tag = null;
    }
  }

  /// Shows a change beside the row for MOVE_MS; a newer change replaces it and starts over.
  show(change) {
    const { kind, places, points } = change;
    const parts = [];
    const words = [];
    if (kind === "new") {
      parts.push("new");
      words.push("new in the top");
    } else if (kind === "up") {
      parts.push("▲" + places);
      words.push(`up ${places} ${places === 1 ? "place" : "places"}`);
    } else if (kind === "down") {
      parts.push("▼" + places);
      words.push(`down ${places} ${places === 1 ? "place" : "places"}`);
    }
    if (points !== 0 && kind !== "new") {
      const sign = points > 0 ? "+" : "−";
      parts.push(sign + Math.abs(points).toLocaleString());
      words.push(`score ${points > 0 ? "up" : "down"} ${Math.abs(points).toLocaleString()}`);
    }
    if (parts.length === 0) return;
    const mark = document.createElement("span");
    mark.className = "mark " + (kind === "same" ? (points > 0 ? "up" : "down") : kind);
    mark.setAttribute("role", "img");
    mark.setAttribute("aria-label", words.join(", "));
    mark.textContent = parts.join(" ");
    this.clearMark();
    this.mark = mark;
    this.cells.move.appendChild(mark);
    this.tr.dataset.change = mark.classList[1];
    // Restart the flash of the row (a CSS animation, off for reduced motion) when its own
    // score changed or it is new; a row only pushed along by others just gets its mark.
    this.tr.classList.remove("flash");
    if (points !== 0 || kind === "new") {
      void this.tr.offsetWidth;
      this.tr.classList.add("flash");
    }
    this.markTimer = setTimeout(() => this.clearMark(), MOVE_MS);
  }

  clearMark() {
    clearTimeout(this.markTimer);
    this.markTimer = null;
    if (this.mark) this.mark.remove();
    this.mark = null;
    this.tr.classList.remove("flash");
    delete this.tr.dataset.change;
  }
}

// An entry as the page keeps it: rank and score as numbers (scores stay within 2^53), and the
// name to show (the display name, or the id when the player has none).
function entry(e) {
  return {
    player: e.playerId,
    name: e.displayName || e.playerId,
    rank: Number(e.rank ?? 0),
    score: Number(e.score ?? 0),
  };
}

/// The change between a row's old and new place and score, or null when nothing to show.
function change(old, rank, score) {
  if (!old) return { kind: "new", places: 0, points: 0 };
  const points = score - old.score;
  if (rank < old.rank) return { kind: "up", places: old.rank - rank, points };
  if (rank > old.rank) return { kind: "down", places: rank - old.rank, points };
  if (points !== 0) return { kind: "same", places: 0, points };
  return null;
}

/// The positions in `sequence` of a longest increasing run of it (not necessarily contiguous):
/// the rows that can stay where they are while the others move around them.
function steady(sequence) {
  const tails = []; // tails[k]: index in sequence ending an increasing run of length k + 1
  const previous = new Array(sequence.length);
  for (let i = 0; i < sequence.length; i++) {
    let lo = 0;
    let hi = tails.length;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      if (sequence[tails[mid]] < sequence[i]) lo = mid + 1;
      else hi = mid;
    }
    previous[i] = lo > 0 ? tails[lo - 1] : -1;
    tails[lo] = i;
  }
  const keep = new Set();
  for (let i = tails.length ? tails[tails.length - 1] : -1; i >= 0; i = previous[i]) keep.add(i);
  return keep;
}

/// Brings the table in line with `rows`: removes rows gone, adds new ones and moves the rows
/// whose place changed, each row node kept for its player. `changes` are marked beside rows.
function render(changes, gone) {
  const animate = !reducedMotion.matches && document.visibilityState === "visible";
  const ordered = [...rows.values()].sort((a, b) => a.rank - b.rank);
  // First: where the rows are on screen before anything moves.
  const before = new Map();
  if (animate && changes.size > 0) {
    for (const row of ordered) {
      if (row.tr.parentNode === tbody) before.set(row, row.tr.getBoundingClientRect().top);
    }
  }
  // Keep focus and selection across the moves.
  const focused = tbody.contains(document.activeElement) ? document.activeElement : null;
  const selection = document.getSelection();
  const range =
    selection && selection.rangeCount > 0 && tbody.contains(selection.anchorNode)
      ? [selection.anchorNode, selection.anchorOffset, selection.focusNode, selection.focusOffset]
      : null;

  for (const row of gone) {
    row.clearMark();
    row.tr.remove();
  }
  // Move only the rows outside a longest run already in order; add the new ones.
  const position = new Map([...tbody.children].map((tr, i) => [tr, i]));
  const current = ordered.map((row) => position.get(row.tr) ?? -1);
  const present = current.flatMap((p, i) => (p < 0 ? [] : [i]));
  const keep = new Set([...steady(present.map((i) => current[i]))].map((k) => present[k]));
  const place = typeof tbody.moveBefore === "function" ? "moveBefore" : "insertBefore";
  let next = null;
  for (let i = ordered.length - 1; i >= 0; i--) {
    const tr = ordered[i].tr;
    if (current[i] < 0) tbody.insertBefore(tr, next);
    else if (!keep.has(i)) tbody[place](tr, next);
    next = tr;
  }
  for (const row of ordered) row.paint();
  for (const [row, c] of changes) row.show(c);

  if (focused && focused.isConnected && document.activeElement !== focused) {
    focused.focus({ preventScroll: true });
  }
  if (range && range[0].isConnected && range[2].isConnected) {
    try {
      selection.setBaseAndExtent(...range);
    } catch {
      // The selected text changed under it: nothing to keep.
    }
  }
  // Last, invert, play: slide each moved row from where it was on screen (mid-slide, too).
  for (const [row, top] of before) {
    if (row.slide) row.slide.cancel();
    row.slide = null;
    const dy = top - row.tr.getBoundingClientRect().top;
    if (Math.abs(dy) < 1) continue;
    row.slide = row.tr.animate(
      [{ transform: `translateY(${dy}px)` }, { transform: "translateY(0)" }],
      { duration: SLIDE_MS, easing: "cubic-bezier(.2,.7,.3,1)" },
    );
    row.slide.onfinish = () => (row.slide = null);
  }
  empty.hidden = rows.size > 0 || version === null;
}

/// Applies a new top: `entries` are the upserts (all of them for a snapshot), `removals` the
/// players gone. The first snapshot of a tier marks nothing.
function apply(entries, removals, snapshot) {
  const quiet = rows.size === 0;
  const changes = new Map();
  const gone = [];
  const next = snapshot ? new Set(entries.map((e) => e.playerId)) : null;
  for (const [player, row] of rows) {
    if ((snapshot && !next.has(player)) || removals.includes(player)) {
      rows.delete(player);
      gone.push(row);
    }
  }
  for (const e of entries.map(entry)) {
    const row = rows.get(e.player);
    const c = change(row, e.rank, e.score);
    if (row) {
      row.rank = e.rank;
      row.score = e.score;
      row.setName(e.name);
      if (c) changes.set(row, c);
    } else {
      const added = new Row(e.player, e.rank, e.score, e.name);
      rows.set(e.player, added);
      if (!quiet) changes.set(added, c);
    }
  }
  render(changes, gone);
  // The followed player's rank may have moved, in the top or below it.
  if (snapshot || changes.size > 0 || gone.length > 0) refreshFollowed();
}

/// The freshness an update carries: `stale` and `changedAtMs`, both left out at their default.
function freshness(update, moved) {
  stale = update.stale === true;
  const at = Number(update.changedAtMs ?? 0);
  if (at > 0) changedAt = at;
  else if (moved || changedAt === null) changedAt = Date.now();
}

function applySnapshot(update) {
  const moved = update.version !== version || update.epoch !== epoch;
  version = update.version;
  epoch = update.epoch;
  apply(update.snapshot?.entries ?? [], [], true);
  freshness(update, moved);
}

function applyDelta(update) {
  const delta = update.delta;
  if ((delta.base ?? "0") !== version || update.epoch !== epoch) {
    // Out of step: follow the tier again from where this page is.
    send({ unsubscribe: { tier } });
    subscribe();
    return;
  }
  const moved = update.version !== version;
  version = update.version;
  apply(delta.upserts ?? [], delta.removals ?? [], false);
  freshness(update, moved);
}

// ---- the connection ------------------------------------------------------------------------

function send(request) {
  if (socket && socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(request));
}

function subscribe() {
  if (tier === null) return;
  const subscribe = { tier };
  if (version !== null && epoch !== null) {
    subscribe.version = version;
    subscribe.epoch = epoch;
  }
  send({ subscribe });
}

function connect() {
  reconnectTimer = null;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  const ws = new WebSocket(scheme + "://" + location.host + "/ws");
  socket = ws;
  ws.onopen = () => {
    backoff = 1000;
    connected = true;
    reconnectAt = null;
    subscribe();
    showStatus();
  };
  ws.onmessage = (event) => {
    let frame;
    try {
      frame = JSON.parse(event.data);
    } catch {
      return;
    }
    if (frame.update) {
      if ((frame.update.tier ?? 0) !== tier) return;
      if (frame.update.snapshot) applySnapshot(frame.update);
      else if (frame.update.delta) applyDelta(frame.update);
      else return;
      error = null;
      showStatus();
    } else if (frame.error) {
      error = { code: frame.error.code || "error", message: frame.error.message || "" };
      showStatus();
    }
  };
  ws.onclose = () => {
    if (socket !== ws) return;
    connected = false;
    error = null;
    // Capped exponential backoff with jitter: half to all of the current step.
    const wait = Math.min(backoff, MAX_BACKOFF_MS) * (0.5 + Math.random() / 2);
    backoff = Math.min(backoff * 2, MAX_BACKOFF_MS);
    reconnectAt = Date.now() + wait;
    reconnectTimer = setTimeout(connect, wait);
    showStatus();
  };
}

// ---- following a player --------------------------------------------------------------------

let lookup = null; // {controller, timer} of the look-up in flight
let lookupAt = -Infinity; // performance.now() when the last look-up started
let refreshTimer = null; // the refresh waiting for REFRESH_MS to pass
let refreshWanted = false; // the board changed while a look-up was in flight
let lastFound = null; // the last answer that found the followed player in this tier
let lastCode = null; // the error code of the last look-up, or null

function setText(node, text) {
  if (node.textContent !== text) node.textContent = text;
}

function points(score) {
  return `${score.toLocaleString()} ${score === 1 || score === -1 ? "point" : "points"}`;
}

/// Starts following `id`: asks for it at once, then again as the board changes.
function follow(id) {
  id = id.trim();
  if (id === "") return;
  if (id !== followed) {
    followed = id;
    lastFound = null;
    lastCode = null;
    for (const row of rows.values()) row.setFollowed(row.player === id);
    setText(followSummary, `Looking up ${id}…`);
    followNote.hidden = true;
    clearAround();
  }
  followPanel.hidden = false;
  writeHash();
  lookUp(true);
}

function unfollow() {
  const focused = followPanel.contains(document.activeElement);
  followed = null;
  lastFound = null;
  lastCode = null;
  cancelLookUp();
  for (const row of rows.values()) row.setFollowed(false);
  followPanel.hidden = true;
  followSummary.textContent = "";
  followNote.hidden = true;
  clearAround();
  writeHash();
  // The control pressed is gone: focus goes back to the search box.
  if (focused) followInput.focus();
}

function cancelLookUp() {
  clearTimeout(refreshTimer);
  refreshTimer = null;
  refreshWanted = false;
  if (lookup) {
    clearTimeout(lookup.timer);
    lookup.controller.abort();
    lookup = null;
  }
}

/// The board changed: asks for the followed player again, at most once every REFRESH_MS and
/// never twice at the same time.
function refreshFollowed() {
  if (followed === null || lastCode === "bad_request") return;
  if (lookup) {
    refreshWanted = true;
    return;
  }
  if (refreshTimer !== null) return;
  const wait = lookupAt + REFRESH_MS - performance.now();
  if (wait <= 0) lookUp(false);
  else refreshTimer = setTimeout(() => lookUp(false), wait);
}

/// Asks the router where the followed player stands; `now` (a new player or tier) drops any
/// look-up in flight, a refresh waits for its turn.
async function lookUp(now) {
  if (now) cancelLookUp();
  clearTimeout(refreshTimer);
  refreshTimer = null;
  refreshWanted = false;
  if (followed === null || tier === null || lookup) return;
  const id = followed;
  const asked = tier;
  const controller = new AbortController();
  const mine = { controller, timer: setTimeout(() => controller.abort(), LOOKUP_TIMEOUT_MS) };
  lookup = mine;
  lookupAt = performance.now();
  const query = new URLSearchParams({ tier: String(asked), id, around: String(AROUND) });
  let status = 0;
  let body = null;
  let failed = null;
  try {
    const response = await fetch("/player?" + query, { signal: controller.signal, cache: "no-store" });
    status = response.status;
    body = await response.json().catch(() => null);
  } catch (err) {
    failed = err?.name === "AbortError" ? "the router took too long to answer" : "cannot reach the router";
  }
  if (lookup !== mine) return; // dropped for a newer look-up, or no longer following
  clearTimeout(mine.timer);
  lookup = null;
  if (failed === null) showLookUp(id, status, body);
  else showFailure(id, failed);
  if (refreshWanted) refreshFollowed();
}

function showLookUp(id, status, body) {
  const player = body?.player ?? body?.entry; // GetPlayerResponse.player (`entry` in some drafts)
  if (status === 200 && player) {
    lastCode = null;
    lastFound = body;
    const me = entry(player);
    setText(followSummary, `${id} is #${me.rank} with ${points(me.score)}`);
    followNote.hidden = body.stale !== true;
    setText(followNote, "The router cannot reach its store: this may be out of date.");
    showAround(id, me, (body.neighbours ?? []).map(entry));
    return;
  }
  const code = body?.error?.code ?? (status === 404 ? "not_found" : "error");
  const message = body?.error?.message || `the router answered ${status}`;
  lastCode = code;
  if (code === "not_found") {
    lastFound = null;
    setText(followSummary, `${id} has no score in ${tierName}`);
    followNote.hidden = true;
    clearAround();
  } else if (code === "bad_request") {
    lastFound = null;
    setText(followSummary, `Cannot follow ${id}: ${message}`);
    followNote.hidden = true;
    clearAround();
  } else {
    showFailure(id, message);
  }
}

/// A look-up that failed for now (503, no answer): the last answer stays, with a note.
function showFailure(id, why) {
  if (lastFound) {
    setText(followNote, `Could not refresh ${id}: ${why}. Showing the last answer.`);
    followNote.hidden = false;
  } else {
    setText(followSummary, `Could not look up ${id}: ${why}`);
    followNote.hidden = true;
    clearAround();
  }
}

function clearAround() {
  followAround.replaceChildren();
  delete followAround.dataset.key;
  followAround.removeAttribute("aria-label");
}

/// The followed player between their neighbours, by rank.
function showAround(id, me, neighbours) {
  const items = [...neighbours.filter((e) => e.player !== me.player), me].sort((a, b) => a.rank - b.rank);
  const key = items.map((e) => `${e.rank}\u0000${e.player}\u0000${e.name}\u0000${e.score}`).join("\u0001");
  if (followAround.dataset.key === key) return;
  followAround.dataset.key = key;
  followAround.setAttribute("aria-label", `${id} and the hunters around them`);
  followAround.replaceChildren(
    ...items.map((e) => {
      const li = document.createElement("li");
      li.value = e.rank;
      const rank = document.createElement("span");
      rank.className = "n-rank";
      rank.textContent = "#" + e.rank;
      const name = document.createElement("span");
      name.className = "n-player";
      name.textContent = e.name;
      if (e.name !== e.player) name.title = e.player;
      const score = document.createElement("span");
      score.className = "n-score";
      score.textContent = points(e.score);
      li.append(rank, " ", name, " ", score);
      if (e.player === me.player) {
        li.className = "me";
        li.setAttribute("aria-current", "true");
        const star = document.createElement("span");
        star.className = "n-star";
        star.setAttribute("aria-hidden", "true");
        star.textContent = "★";
        name.prepend(star, " ");
      }
      return li;
    }),
  );
}

followForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const id = followInput.value.trim();
  if (id === "") {
    followInput.focus();
    return;
  }
  follow(id);
});
followStop.addEventListener("click", unfollow);

// ---- tiers -----------------------------------------------------------------------------------

const tierButtons = new Map(); // tier id -> button

function choose(next) {
  const button = tierButtons.get(next);
  if (!button) return;
  if (next !== tier) {
    if (tier !== null) send({ unsubscribe: { tier } });
    tier = next;
    tierName = button.textContent;
    version = null;
    epoch = null;
    stale = false;
    changedAt = null;
    error = null;
    const gone = [...rows.values()];
    rows = new Map();
    render(new Map(), gone);
    caption.textContent = tierName + ": top 100";
    document.title = `${tierName} · Live leaderboards · hunt-pipeline`;
    for (const [id, b] of tierButtons) b.setAttribute("aria-pressed", String(id === next));
    subscribe();
    showStatus();
    // The followed player, in this tier.
    if (followed !== null) {
      lastFound = null;
      lastCode = null;
      setText(followSummary, `Looking up ${followed} in ${tierName}…`);
      followNote.hidden = true;
      clearAround();
      lookUp(true);
    }
  }
  writeHash();
}

function wanted() {
  return Number((location.hash.match(/tier-(\d+)/) || [])[1]);
}

/// The player the hash asks to follow (`#tier-1&follow=ada`), or null.
function wantedFollow() {
  const match = location.hash.match(/[#&]follow=([^&]*)/);
  if (!match) return null;
  try {
    return decodeURIComponent(match[1]).trim() || null;
  } catch {
    return null;
  }
}

/// Keeps the tier and the followed player in the hash, so a reload shows the same.
function writeHash() {
  if (tier === null) return;
  const hash = "#tier-" + tier + (followed === null ? "" : "&follow=" + encodeURIComponent(followed));
  if (location.hash !== hash) history.replaceState(null, "", hash);
}

// Arrow keys, Home and End move between the tier buttons (Tab, Enter and Space work as usual).
tiersNav.addEventListener("keydown", (event) => {
  const buttons = [...tierButtons.values()];
  const at = buttons.indexOf(document.activeElement);
  if (at < 0) return;
  const to = {
    ArrowRight: at + 1,
    ArrowDown: at + 1,
    ArrowLeft: at - 1,
    ArrowUp: at - 1,
    Home: 0,
    End: buttons.length - 1,
  }[event.key];
  if (to === undefined) return;
  event.preventDefault();
  buttons[(to + buttons.length) % buttons.length].focus();
});

window.addEventListener("hashchange", () => {
  // Read before choose() writes the hash back.
  const player = wantedFollow();
  if (tierButtons.has(wanted())) choose(wanted());
  if (player !== null && player !== followed) {
    followInput.value = player;
    follow(player);
  }
  writeHash();
});

async function start() {
  const { tiers = [] } = await fetch("/tiers").then((r) => r.json());
  for (const t of tiers) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.tier = t.id;
    button.textContent = t.name;
    button.setAttribute("aria-pressed", "false");
    button.onclick = () => choose(t.id);
    tiersNav.appendChild(button);
    tierButtons.set(t.id, button);
  }
  const first = tierButtons.has(wanted()) ? wanted() : tiers[0]?.id;
  const player = wantedFollow();
  connect();
  if (first !== undefined) choose(first);
  if (player !== null) {
    followInput.value = player;
    follow(player);
  }
  showStatus();
}

showStatus();
start().catch(() => {
  failure = "cannot reach the router";
  showStatus();
});
