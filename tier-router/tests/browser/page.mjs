// Drives the live leaderboard page in Debian's Chromium, in step with ../router/browser.rs: each
// line on stdout tells the Rust side what the page showed (and so what to change next), and
// every check that fails throws, so the script exits non-zero. Steps:
//   rendered 30   the board shows; the Rust side then lifts the climber from 30 to 100
//   changed 100   the climber's row moved up in place, marked ▲2 +70 for about 3 s (axe clean);
//                 then "follow a hunter": an unknown id says "no score", a bad id the router's
//                 reason, and bo shows in the panel as on the board, bo's row highlighted (axe
//                 clean with the panel open)
//   errored       with reduced motion, an error frame shows; the Rust side then lifts di to 80
//   changed 80    the error cleared, di's row marked without animation (axe clean); the panel
//                 followed bo from #3 to #4 (refreshes at most once a second); stop following
//   pause redis   (the test pauses Redis) … paused   the badge said paused; (Redis resumed)
//   switch router (the page's address now leads to a second router) … switched   the resume
//                 named the first router's epoch and got a snapshot: the same board; the Rust
//                 side then lifts bo to 140, and the page shows it on top
//   done          a reconnect resumed, the badge went live again, nothing asked for bo once
//                 unfollowed; the phone layout fits, with bo followed again from the URL hash
// Usage: node page.mjs <page url> <directory for screenshots>
import { readFileSync } from "node:fs";
import { createRequire } from "node:module";
import { join } from "node:path";
import { chromium } from "playwright-core";

const [url, shots] = process.argv.slice(2);
const axeSource = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const say = (line) => console.log(line);
function check(ok, what, detail) {
  if (!ok) throw new Error(`${what}${detail === undefined ? "" : `: ${JSON.stringify(detail)}`}`);
}

const row = (player) => `#board tbody tr[data-player="${player}"]`;
const WAIT = { timeout: 30_000 };

// Keeps each socket the page opens and each frame it sends and gets, to break, inspect and feed
// the connection.
function spy() {
  const Native = window.WebSocket;
  window.__sockets = [];
  window.__sent = [];
  window.__received = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      window.__sockets.push(this);
      this.addEventListener("message", (event) => event.isTrusted && window.__received.push(event.data));
    }
    send(data) {
      window.__sent.push(String(data));
      super.send(data);
    }
  };
}

async function axe(page, when) {
  if (!(await page.evaluate(() => typeof window.axe === "object"))) {
    await page.addScriptTag({ content: axeSource });
  }
  const violations = await page.evaluate(async () => {
    const result = await window.axe.run(document, { resultTypes: ["violations"] });
    return result.violations.map((v) => ({
      id: v.id,
      help: v.help,
      nodes: v.nodes.map((n) => [n.target.join(" "), n.failureSummary]),
    }));
  });
  check(violations.length === 0, `axe found violations (${when})`, violations);
}

/// Fails on errors the page itself reports, and on any request for /favicon.ico. Chromium logs a
/// 4xx answer to /player (a player with no score, a bad id) as a console error: that one is the
/// router's answer, which the page shows, not a fault of the page.
function watch(page, problems) {
  page.on("pageerror", (e) => problems.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() !== "error") return;
    const at = m.location()?.url ?? "";
    const answered = /^Failed to load resource: the server responded with a status of 40[04]\b/.test(m.text());
    if (answered && at && new URL(at).pathname === "/player") return;
    problems.push(`console error: ${m.text()}`);
  });
  page.on("request", (r) => new URL(r.url()).pathname === "/favicon.ico" && problems.push("asked for /favicon.ico"));
}

const browser = await chromium.launch({
  executablePath: process.env.HUNT_CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
const problems = [];
try {
  // ---- desktop -------------------------------------------------------------------------------
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  await context.addInitScript(spy);
  const page = await context.newPage();
  watch(page, problems);
  // Every look-up of a followed player: [when, id].
  const lookups = [];
  page.on("request", (r) => {
    const u = new URL(r.url());
    if (u.pathname === "/player") lookups.push([Date.now(), u.searchParams.get("id"), u.searchParams.get("around")]);
  });
  await page.goto(url);
  await page.waitForSelector(".state.live", WAIT);
  const icon = await page.getAttribute('link[rel="icon"]', "href");
  check(icon?.startsWith("data:image/svg+xml,"), "an inline SVG favicon", icon);
  const score = `${row("climber")} td.score`;
  await page.waitForSelector(score, WAIT);
  // Tag the rows: the same nodes must still be there after frames arrive.
  await page.evaluate(() => {
    for (const tr of document.querySelectorAll("#board tbody tr")) tr.__kept = tr.dataset.player;
  });
  const before = await page.textContent(score);
  check((await page.textContent(`${row("climber")} td.rank`)) === "3", "the climber starts third");
  // A player named by its events is shown by that name, the id on hover; others by their id.
  const named = await page.evaluate((s) => {
    const td = document.querySelector(s);
    return { text: td?.firstChild?.data, title: td?.title };
  }, `${row("ada")} td.player`);
  check(named.text === "Ada Lovelace" && named.title === "ada", "ada is shown by her display name", named);
  check((await page.textContent(`${row("bo")} td.player`)) === "bo", "bo, unnamed, is shown by id");
  say(`rendered ${before}`);

  // The climber passes two players: its row moves up, in place, marked ▲2 +70.
  const seen = await page.waitForFunction(
    ([selector, old]) => document.querySelector(selector)?.textContent !== old && performance.now(),
    [score, before],
    WAIT,
  );
  const changedAt = await seen.jsonValue();
  say(`changed ${await page.textContent(score)}`);
  const climber = await page.evaluate((selector) => {
    const tr = document.querySelector(selector);
    const mark = tr.querySelector("td.move .mark");
    return {
      kept: tr.__kept,
      index: [...tr.parentNode.children].indexOf(tr),
      rank: tr.querySelector("td.rank").textContent,
      mark: mark?.textContent,
      label: mark?.getAttribute("aria-label"),
      same: [...document.querySelectorAll("#board tbody tr")].every((r) => r.__kept === r.dataset.player),
    };
  }, row("climber"));
  check(climber.kept === "climber" && climber.same, "every row is the node it was before the frame", climber);
  check(climber.index === 0 && climber.rank === "1", "the climber's row moved to the top", climber);
  check(/^▲2 \+70$/.test(climber.mark ?? ""), "the climber is marked ▲2 +70", climber);
  check(/up 2 places/.test(climber.label ?? "") && /70/.test(climber.label), "the mark has a label", climber);
  const ada = await page.evaluate((s) => {
    const mark = document.querySelector(s);
    return { mark: mark?.textContent, label: mark?.getAttribute("aria-label") };
  }, `${row("ada")} td.move .mark`);
  check(ada.mark === "▼1" && ada.label === "down 1 place", "ada, passed, is marked ▼1", ada);
  // The screenshot once the rows have slid into place (the flash and the marks still on).
  await page.waitForFunction(
    () => document.getAnimations().every((a) => a instanceof CSSAnimation || a.playState !== "running"),
    null,
    { timeout: 5_000 },
  );
  await page.screenshot({ path: join(shots, "live-page.png") });
  await axe(page, "motion, a row flashing");

  // The footer tells the board's age, not a version, and counts on by itself.
  const footer = (await page.textContent("footer")).trim();
  check(/^updated (just now|\d+ s ago)$/.test(footer), "the footer tells when the board changed", footer);
  await page.waitForFunction((old) => document.querySelector("footer").textContent.trim() !== old, footer, {
    timeout: 3_000,
  });

  // The mark lasts about 3 s, whatever else happens meanwhile: still there 2.6 s on, gone later.
  const mark = `${row("climber")} td.move .mark`;
  const lasted = await page.waitForFunction(
    ([selector, since]) => {
      const elapsed = performance.now() - since;
      const shown = document.querySelector(selector)?.checkVisibility() === true;
      return (!shown || elapsed >= 2600) && { shown, elapsed };
    },
    [mark, changedAt],
    { timeout: 10_000, polling: 50 },
  );
  const kept = await lasted.jsonValue();
  check(kept.shown && kept.elapsed >= 2500, "the ▲ mark is still shown 2.5 s after the change", kept);
  await page.waitForSelector(mark, { state: "detached", timeout: 5_000 });

  // Follow a hunter. Someone with no score in the tier: the panel says so (Enter in the box).
  const summary = (text) =>
    page.waitForFunction((t) => document.querySelector("#follow-summary")?.textContent === t, text, WAIT);
  const tierName = await page.textContent('#tiers button[aria-pressed="true"]');
  const box = await page.evaluate(() => {
    const input = document.querySelector("#follow-id");
    return { label: input.labels[0]?.textContent, panel: document.querySelector("#follow-panel").hidden };
  });
  check(box.label === "Follow a hunter" && box.panel, "a labelled search box, no panel yet", box);
  await page.focus("#follow-id");
  await page.keyboard.type("nobody");
  await page.keyboard.press("Enter");
  await summary(`nobody has no score in ${tierName}`);
  check((await page.evaluate(() => location.hash)) === "#tier-1&follow=nobody", "the hash keeps who is followed");
  check((await page.$$("#board tbody tr.following")).length === 0, "no row is highlighted for nobody");
  // An id the router refuses: its reason shows.
  await page.fill("#follow-id", "a{b");
  await page.keyboard.press("Enter");
  await page.waitForFunction(() => /^Cannot follow a\{b: \S/.test(document.querySelector("#follow-summary")?.textContent), null, WAIT);
  // bo, with the Follow button: the panel shows bo's rank and score as the board does.
  await page.fill("#follow-id", "bo");
  await page.click('#follow-form button[type="submit"]');
  await page.waitForFunction(() => /^bo is #/.test(document.querySelector("#follow-summary")?.textContent), null, WAIT);
  const following = await page.evaluate((selector) => {
    const tr = document.querySelector(selector);
    const style = getComputedStyle(tr);
    return {
      summary: document.querySelector("#follow-summary").textContent,
      rank: tr.querySelector("td.rank").textContent,
      score: tr.querySelector("td.score").textContent,
      kept: tr.__kept,
      highlighted: tr.classList.contains("following"),
      tag: tr.querySelector("td.player .tag")?.textContent,
      outline: style.outlineStyle,
      background: [style.backgroundColor, getComputedStyle(document.querySelector(`#board tbody tr:not(.following)`)).backgroundColor],
      rows: document.querySelectorAll("#board tbody tr.following").length,
      around: [...document.querySelectorAll("#follow-around li")].map((li) => [
        li.textContent.replace(/\s+/g, " ").trim(),
        li.getAttribute("aria-current"),
      ]),
      hash: location.hash,
      stop: document.querySelector("#follow-stop").checkVisibility(),
    };
  }, row("bo"));
  check(following.rank === "3" && following.score === "40", "bo is third with 40 on the board", following);
  check(following.summary === `bo is #${following.rank} with ${following.score} points`, "the panel agrees with the board", following);
  check(following.kept === "bo" && following.highlighted && following.rows === 1, "bo's row, and only it, is highlighted", following);
  check(following.tag === "★ following" && following.outline === "solid", "the highlight is not colour alone", following);
  check(following.background[0] !== following.background[1], "the highlighted row has its own background", following);
  check(
    JSON.stringify(following.around) ===
      JSON.stringify([
        ["#1 climber 100 points", null],
        ["#2 Ada Lovelace 50 points", null],
        ["#3 ★ bo 40 points", "true"],
        ["#4 di 20 points", null],
      ]),
    "the panel lists bo between the neighbours",
    following,
  );
  check(following.hash === "#tier-1&follow=bo" && following.stop, "the hash follows bo; a stop control shows", following);
  check(lookups.at(-1)?.[1] === "bo" && lookups.at(-1)?.[2] === "3", "the page asked for bo with 3 around", lookups);
  await page.screenshot({ path: join(shots, "live-page-follow.png") });
  await axe(page, "following bo, the panel open");

  // Reduced motion from here on. An error frame (a subscription to a tier that does not
  // exist) shows on the badge until the next good update.
  await page.emulateMedia({ reducedMotion: "reduce" });
  await page.evaluate(() => window.__sockets.at(-1).send(JSON.stringify({ subscribe: { tier: 999 } })));
  await page.waitForFunction(() => /unknown tier/.test(document.querySelector(".state.error")?.textContent), null, WAIT);
  say("errored");

  const diScore = `${row("di")} td.score`;
  await page.waitForFunction((s) => document.querySelector(s)?.textContent === "80", diScore, WAIT);
  say(`changed ${await page.textContent(diScore)}`);
  await page.waitForSelector(".state.live", { timeout: 5_000 });
  const di = await page.evaluate((selector) => {
    const tr = document.querySelector(selector);
    return {
      kept: tr.__kept,
      rank: tr.querySelector("td.rank").textContent,
      mark: tr.querySelector("td.move .mark")?.textContent,
      animations: tr.getAnimations({ subtree: true }).length,
      animation: getComputedStyle(tr).animationName,
    };
  }, row("di"));
  check(di.kept === "di" && di.rank === "2", "di's row moved up in place", di);
  check(di.mark === "▲2 +60", "di is marked ▲2 +60", di);
  check(di.animations === 0 && di.animation === "none", "nothing moves with reduced motion", di);
  await axe(page, "reduced motion, a row marked");

  // di passed bo: the panel follows the board (once it asked again), bo's row stays marked.
  await summary("bo is #4 with 40 points");
  const passed = await page.evaluate((selector) => {
    const tr = document.querySelector(selector);
    return {
      rank: tr.querySelector("td.rank").textContent,
      kept: tr.__kept,
      highlighted: tr.classList.contains("following"),
      me: document.querySelector("#follow-around li.me")?.textContent.replace(/\s+/g, " ").trim(),
    };
  }, row("bo"));
  check(passed.rank === "4" && passed.kept === "bo" && passed.highlighted, "bo's row moved to fourth, still highlighted", passed);
  check(passed.me === "#4 ★ bo 40 points", "the panel's list moved with it", passed);
  const bo = lookups.filter(([, id]) => id === "bo").map(([at]) => at);
  check(bo.length >= 2, "the page asked for bo again after the board changed", lookups);
  for (let i = 1; i < bo.length; i++) {
    check(bo[i] - bo[i - 1] >= 800, "the panel refreshes at most about once a second", bo);
  }
  // Stop following: the panel and the highlight go, the hash is #tier-1 again, focus is kept.
  await page.click("#follow-stop");
  const stopped = await page.evaluate(() => ({
    panel: document.querySelector("#follow-panel").hidden,
    rows: document.querySelectorAll("#board tbody tr.following, #board .tag").length,
    hash: location.hash,
    focus: document.activeElement?.id,
  }));
  check(stopped.panel && stopped.rows === 0 && stopped.hash === "#tier-1", "stop following clears it", stopped);
  check(stopped.focus === "follow-id", "focus goes back to the search box", stopped);
  const asked = lookups.length;

  // A dropped connection counts down, reconnects and resumes from its version: same rows.
  const sockets = await page.evaluate(() => {
    window.__sockets.at(-1).close();
    return window.__sockets.length;
  });
  await page.waitForFunction(
    () => /^reconnecting in \d+ s…$/.test(document.querySelector(".state.reconnecting")?.textContent),
    null,
    WAIT,
  );
  await page.waitForFunction((n) => window.__sockets.length > n && document.querySelector(".state.live"), sockets, WAIT);
  const resumed = await page.evaluate(() => ({
    subscribe: JSON.parse(window.__sent.at(-1)).subscribe,
    same: [...document.querySelectorAll("#board tbody tr")].every((r) => r.__kept === r.dataset.player),
  }));
  check(resumed.subscribe?.version && resumed.subscribe?.epoch, "the page resumed from its version", resumed);
  check(resumed.same, "the rows survived the reconnect", resumed);

  // Freshness follows the router: asked to, the test pauses Redis (SIGSTOP); the router cannot
  // read the tier, flags its updates stale, and the badge stops saying live. Redis resumed, it
  // says live again.
  say("pause redis");
  await page.waitForSelector(".state.paused", WAIT);
  const freshness = await page.evaluate(() => ({
    badge: document.querySelector("#state").textContent,
    footer: document.querySelector("footer").textContent.trim(),
    same: [...document.querySelectorAll("#board tbody tr")].every((r) => r.__kept === r.dataset.player),
    rows: document.querySelectorAll("#board tbody tr").length,
  }));
  check(/^paused — data from \d{1,2}:\d{2}:\d{2}/.test(freshness.badge), "the badge says paused, with the data's time", freshness);
  check(freshness.footer.startsWith("updated "), "the footer tells the board's age", freshness);
  check(freshness.same && freshness.rows === 4, "a freshness change leaves the rows be", freshness);
  await page.screenshot({ path: join(shots, "live-page-paused.png") });
  say("paused");
  await page.waitForSelector(".state.live", WAIT);
  check(lookups.length === asked, "nothing is asked for once no one is followed", lookups.slice(asked));

  // The page's address now leads to another router (as a Service behind a load balancer does):
  // its resume names the first router's epoch, so the new router answers with a snapshot, and
  // the board it rebuilds is the same board; later deltas apply to it.
  const moving = await page.evaluate(() => ({
    sockets: window.__sockets.length,
    received: window.__received.length,
    epoch: JSON.parse(window.__received.findLast((f) => f.includes('"update"')) ?? "{}").update?.epoch,
  }));
  say("switch router");
  await page.waitForFunction(
    (n) => window.__sockets.length > n && window.__sockets.at(-1).readyState === 1 && document.querySelector(".state.live"),
    moving.sockets,
    WAIT,
  );
  await page.waitForFunction(
    (n) => window.__received.slice(n).some((f) => f.includes('"update"')),
    moving.received,
    WAIT,
  );
  const board = () =>
    page.evaluate(() =>
      [...document.querySelectorAll("#board tbody tr")].map((tr) =>
        [tr.querySelector("td.rank").textContent, tr.dataset.player, tr.querySelector("td.score").textContent].join(" "),
      ),
    );
  const moved = await page.evaluate((n) => {
    const first = window.__received.slice(n).find((f) => f.includes('"update"'));
    return {
      subscribe: JSON.parse(window.__sent.at(-1)).subscribe,
      first: JSON.parse(first).update,
    };
  }, moving.received);
  check(moved.subscribe?.epoch === moving.epoch && moved.subscribe?.version, "the page resumed with its router's epoch", moved.subscribe);
  check(moved.first?.snapshot && moved.first.epoch !== moving.epoch, "another router's lineage answers with a snapshot", moved.first);
  const rebuilt = await board();
  const expected = ["1 climber 100", "2 di 80", "3 ada 50", "4 bo 40"];
  check(JSON.stringify(rebuilt) === JSON.stringify(expected), "the rebuilt board is the same board", rebuilt);
  say("switched");
  await page.waitForFunction((s) => document.querySelector(s)?.textContent === "140", `${row("bo")} td.score`, WAIT);
  const after = await board();
  check(
    JSON.stringify(after) === JSON.stringify(["1 bo 140", "2 climber 100", "3 di 80", "4 ada 50"]),
    "the new router's deltas apply to its snapshot",
    after,
  );
  await context.close();

  // ---- phone ---------------------------------------------------------------------------------
  const phone = await browser.newContext({
    viewport: { width: 390, height: 844 },
    deviceScaleFactor: 2,
    isMobile: true,
    hasTouch: true,
  });
  const small = await phone.newPage();
  watch(small, problems);
  // A reload keeps the followed player: the hash says whom.
  await small.goto(url + "&follow=bo");
  await small.waitForSelector(".state.live", WAIT);
  await small.waitForSelector(row("climber"), WAIT);
  await small.waitForFunction(() => document.querySelector("#follow-summary")?.textContent === "bo is #1 with 140 points", null, WAIT);
  const restored = await small.evaluate(() => ({
    input: document.querySelector("#follow-id").value,
    highlighted: document.querySelector('#board tbody tr[data-player="bo"]')?.classList.contains("following"),
    targets: [...document.querySelectorAll("#follow-id, #follow button")].map((b) => {
      const r = b.getBoundingClientRect();
      return [b.id || b.textContent, Math.round(r.width), Math.round(r.height), Math.round(r.right)];
    }),
  }));
  check(restored.input === "bo" && restored.highlighted, "bo is followed again after a reload", restored);
  for (const [name, width, height, right] of restored.targets) {
    check(width >= 44 && height >= 44, `${name} is a 44 px touch target`, restored);
    check(right <= 390, `${name} is on screen`, restored);
  }
  const layout = await small.evaluate(() => ({
    buttons: [...document.querySelectorAll("#tiers button")].map((b) => {
      const r = b.getBoundingClientRect();
      return [b.textContent, Math.round(r.width), Math.round(r.height), Math.round(r.right)];
    }),
    width: window.innerWidth,
    document: document.documentElement.scrollWidth,
    body: document.body.scrollWidth,
  }));
  check(layout.buttons.length > 0, "the tier bar has buttons", layout);
  for (const [name, width, height, right] of layout.buttons) {
    check(width >= 44 && height >= 44, `tier button ${name} is a 44 px touch target`, layout);
    check(right <= layout.width, `tier button ${name} is on screen`, layout);
  }
  check(layout.document <= layout.width && layout.body <= layout.width, "nothing overflows sideways", layout);
  await axe(small, "phone");
  await small.screenshot({ path: join(shots, "live-page-phone.png"), fullPage: true });
  await phone.close();

  check(problems.length === 0, "the page reported no errors", problems);
  say("done");
} finally {
  await browser.close();
}
