// Opens the live leaderboard page in Debian's Chromium, waits until it shows the board, says so on
// stdout, then waits for the climber's score to change on screen and saves a screenshot.
// Usage: node page.mjs <page url> <screenshot path>
import { chromium } from "playwright-core";

const [url, screenshot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.HUNT_CHROMIUM ?? "/usr/bin/chromium",
  args: ["--no-sandbox"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  await page.goto(url);
  await page.waitForSelector(".state.live", { timeout: 30_000 });
  const score = '#board tbody tr[data-player="climber"] td.score';
  await page.waitForSelector(score, { timeout: 30_000 });
  const before = await page.textContent(score);
  console.log(`rendered ${before}`);
  await page.waitForFunction(
    ([selector, old]) => document.querySelector(selector)?.textContent !== old,
    [score, before],
    { timeout: 30_000 },
  );
  console.log(`changed ${await page.textContent(score)}`);
  await page.screenshot({ path: screenshot });
} finally {
  await browser.close();
}
