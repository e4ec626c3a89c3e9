// The live leaderboard page: follows one tier over /ws (snapshot, then deltas) and reconnects
// with backoff, resuming from the last version it saw. Frames are hunt.v1.SpectatorRequest and
// SpectatorResponse in the proto3 JSON mapping (64-bit integers arrive as strings).
"use strict";

const state = document.getElementById("state");
const tiersNav = document.getElementById("tiers");
const tbody = document.querySelector("#board tbody");
const caption = document.getElementById("caption");
const empty = document.getElementById("empty");
const versionLabel = document.getElementById("version");

let tier = null;
let version = null; // the last version applied, as the string the router sent
let epoch = null; // the lineage that version counts in (one router's run)
let rows = new Map(); // player -> {rank, score}
let socket = null;
let backoff = 1000;

function setState(name, text) {
  state.className = "state " + name;
  state.textContent = text;
}

function render(changed) {
  const entries = [...rows.entries()]
    .map(([player, e]) => ({ player, rank: e.rank, score: e.score }))
    .sort((a, b) => a.rank - b.rank);
  const fragment = document.createDocumentFragment();
  for (const e of entries) {
    const tr = document.createElement("tr");
    tr.dataset.player = e.player;
    if (e.rank <= 3) tr.classList.add("r" + e.rank);
    const move = changed.get(e.player);
    if (move) tr.classList.add(move);
    for (const [cls, value] of [["rank", e.rank], ["player", e.player], ["score", e.score.toLocaleString()]]) {
      const td = document.createElement("td");
      td.className = cls;
      td.textContent = value;
      tr.appendChild(td);
    }
    fragment.appendChild(tr);
  }
  tbody.replaceChildren(fragment);
  empty.hidden = entries.length > 0;
  versionLabel.textContent = version === null ? "" : "version " + version;
}

// An entry as the page keeps it: rank and score as numbers (scores stay within 2^53).
function row(e) {
  return { rank: Number(e.rank), score: Number(e.score) };
}

function applySnapshot(update) {
  const before = rows;
  rows = new Map(update.snapshot.entries.map((e) => [e.playerId, row(e)]));
  const changed = new Map();
  if (before.size > 0) {
    for (const [player, e] of rows) {
      const old = before.get(player);
      if (!old) changed.set(player, "new");
      else if (e.rank < old.rank) changed.set(player, "up");
      else if (e.rank > old.rank + 1) changed.set(player, "down");
    }
  }
  version = update.version;
  epoch = update.epoch;
  render(changed);
}

function applyDelta(update) {
  const delta = update.delta;
  if (delta.base !== version || update.epoch !== epoch) {
    // Out of step: follow the tier again from where this page is.
    socket.send(JSON.stringify({ unsubscribe: { tier } }));
    subscribe();
    return;
  }
  const changed = new Map();
  for (const player of delta.removals) rows.delete(player);
  for (const e of delta.upserts) {
    const next = row(e);
    const old = rows.get(e.playerId);
    if (!old) changed.set(e.playerId, "new");
    else if (next.rank < old.rank) changed.set(e.playerId, "up");
    // Pushed down one place by a climber: not worth a flash of its own.
    else if (next.rank > old.rank + 1) changed.set(e.playerId, "down");
    rows.set(e.playerId, next);
  }
  version = update.version;
  render(changed);
}

function subscribe() {
  if (!socket || socket.readyState !== WebSocket.OPEN || tier === null) return;
  const subscribe = { tier };
  if (version !== null && epoch !== null) {
    subscribe.version = version;
    subscribe.epoch = epoch;
  }
  socket.send(JSON.stringify({ subscribe }));
}

function connect() {
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  socket = new WebSocket(scheme + "://" + location.host + "/ws");
  socket.onopen = () => {
    backoff = 1000;
    setState("live", "live");
    subscribe();
  };
  socket.onmessage = (event) => {
    const frame = JSON.parse(event.data);
    if (frame.update) {
      if (frame.update.tier !== tier) return;
      if (frame.update.snapshot) applySnapshot(frame.update);
      else if (frame.update.delta) applyDelta(frame.update);
    } else if (frame.error) {
      setState("offline", frame.error.code.replace(/_/g, " "));
    }
  };
  socket.onclose = () => {
    const wait = Math.min(backoff, 30000) * (0.5 + Math.random() / 2);
    backoff = Math.min(backoff * 2, 30000);
    setState("reconnecting", "reconnecting in " + Math.ceil(wait / 1000) + " s");
    setTimeout(connect, wait);
  };
}

function choose(next, name) {
  if (socket && socket.readyState === WebSocket.OPEN && tier !== null) {
    socket.send(JSON.stringify({ unsubscribe: { tier } }));
  }
  tier = next;
  version = null;
  epoch = null;
  rows = new Map();
  render(new Map());
  caption.textContent = name + ": top 100";
  for (const button of tiersNav.querySelectorAll("button")) {
    button.setAttribute("aria-pressed", String(Number(button.dataset.tier) === next));
  }
  history.replaceState(null, "", "#tier-" + next);
  subscribe();
}

async function start() {
  const { tiers } = await fetch("/tiers").then((r) => r.json());
  for (const t of tiers) {
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.tier = t.id;
    button.textContent = t.name;
    button.onclick = () => choose(t.id, t.name);
    tiersNav.appendChild(button);
  }
  const wanted = Number((location.hash.match(/tier-(\d+)/) || [])[1]);
  const first = tiers.find((t) => t.id === wanted) || tiers[0];
  connect();
  if (first) choose(first.id, first.name);
}

start().catch(() => setState("offline", "cannot reach the router"));
