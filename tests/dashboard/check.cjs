// Drives the dashboard in headless Chromium (playwright-core, Debian's chromium) for
// crates/paystate/tests/dashboard.rs: logs in (a wrong token first), reads the funnel, searches one
// payment, saves a screenshot, and prints what it saw as one JSON line.
//
// Environment: PLAYWRIGHT_CORE (the package's directory), CHROMIUM (the browser), DASHBOARD_URL, TOKEN,
// PAYMENT (an id to search), SCREENSHOT (a PNG path).
"use strict";
const { chromium } = require(process.env.PLAYWRIGHT_CORE);

async function main() {
  const env = (name) => {
    const v = process.env[name];
    if (!v) throw new Error(`${name} is not set`);
    return v;
  };
  const browser = await chromium.launch({ executablePath: env("CHROMIUM"), args: ["--no-sandbox"] });
  try {
    const page = await browser.newPage({ viewport: { width: 1400, height: 1000 } });
    const errors = [];
    page.on("console", (m) => {
      // The wrong token's 401 is expected: the browser reports the failed fetch as a console error.
      if (m.type() === "error" && !m.text().includes("401")) errors.push(m.text());
    });
    page.on("pageerror", (e) => errors.push(String(e)));
    await page.goto(env("DASHBOARD_URL"));
    await page.waitForSelector("#token", { state: "visible", timeout: 15000 });
    await page.fill("#token", "not-the-token-at-all");
    await page.click("#connect");
    await page.waitForFunction(() => document.getElementById("login-error").textContent.includes("refused"), null, { timeout: 15000 });
    const refused = await page.textContent("#login-error");
    await page.fill("#token", env("TOKEN"));
    await page.click("#connect");
    await page.waitForSelector("#board:not([hidden])", { timeout: 15000 });
    await page.waitForFunction(() => document.querySelectorAll("#funnel tr[data-lifecycle]").length === 9, null, { timeout: 15000 });
    const funnel = await page.$$eval("#funnel tr[data-lifecycle]", (rows) =>
      Object.fromEntries(rows.map((r) => [r.dataset.lifecycle, Number(r.querySelector(".count").textContent)])));
    const payments = Number(await page.textContent("#payments"));
    await page.fill("#search-id", env("PAYMENT"));
    await page.click("#search-go");
    await page.waitForSelector("#timeline tr.event", { timeout: 15000 });
    const events = await page.$$eval("#timeline tr.event", (rows) => rows.map((r) => r.children[2].textContent));
    const lifecycles = await page.$$eval("#timeline tr.event", (rows) => rows.map((r) => r.children[4].textContent));
    const summary = await page.textContent("#search-summary");
    const actions = await page.textContent("#search-actions");
    const recent = await page.$$eval("#recent tbody tr", (rows) => rows.length);
    await page.screenshot({ path: env("SCREENSHOT"), fullPage: true });
    console.log(JSON.stringify({ refused, funnel, payments, events, lifecycles, summary, actions, recent, errors }));
  } finally {
    await browser.close();
  }
}

main().catch((e) => {
  console.error(e && e.stack ? e.stack : String(e));
  process.exit(1);
});
