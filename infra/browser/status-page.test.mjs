// The status page of a real `ackflow serve`, driven in Debian's chromium by playwright-core.
// Usage: node status-page.test.mjs OPEN_URL AUTHED_URL SCREENSHOT_DIR
// (infra/scripts/browser-test starts the servers: OPEN_URL without auth, AUTHED_URL with the
// bearer token `page-test-token-0123456789`.)
import assert from "node:assert/strict";
import { chromium } from "playwright-core";

const [openUrl, authedUrl, shots] = process.argv.slice(2);
if (!openUrl || !authedUrl || !shots) {
  console.error("usage: node status-page.test.mjs OPEN_URL AUTHED_URL SCREENSHOT_DIR");
  process.exit(2);
}
const TIMEOUT = 30_000;
const EVIL = `<img src=x onerror="window.__pwned=1">`;

const browser = await chromium.launch({
  executablePath: "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu"],
});

let checks = 0;
async function check(name, body) {
  const started = Date.now();
  await body();
  checks += 1;
  console.log(`ok ${checks} - ${name} (${Date.now() - started} ms)`);
}

/** A page that records script errors, CSP violations and every request it makes. */
async function openPage(url, options = {}) {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 }, ...options });
  const page = await context.newPage();
  page.setDefaultTimeout(TIMEOUT);
  const trouble = [];
  const requests = [];
  page.on("pageerror", (e) => trouble.push(`page error: ${e.message}`));
  page.on("console", (m) => {
    if (m.type() === "error" && !/status of (401|404|409|503)/.test(m.text())) trouble.push(`console: ${m.text()}`);
    if (/Content Security Policy/i.test(m.text())) trouble.push(`CSP: ${m.text()}`);
  });
  page.on("request", (r) => requests.push({ url: r.url(), method: r.method(), headers: r.headers() }));
  await page.goto(url);
  await page.locator("#order-items tbody tr").nth(7).waitFor();
  return { context, page, trouble, requests };
}

/** The newest job card after `count` cards were there: waits for it and returns its locator. */
async function newCard(page, before) {
  await page.waitForFunction((n) => document.querySelectorAll("#jobs > li").length > n, before);
  return page.locator("#jobs > li").first();
}

const cardCount = (page) => page.locator("#jobs > li").count();

async function waitState(card, state) {
  await card.locator(`xpath=self::li[@data-state="${state}"]`).waitFor();
}

/** The report as {term: value}. */
async function report(page) {
  return page.evaluate(() => {
    const out = {};
    const dts = document.querySelectorAll("#report dt");
    for (const dt of dts) out[dt.textContent] = dt.nextElementSibling.textContent;
    return out;
  });
}

const { page, trouble, requests, context } = await openPage(openUrl);

await check("the page loads its script, style and icon from its own origin only", async () => {
  const origin = new URL(openUrl).origin;
  for (const r of requests) assert.equal(new URL(r.url).origin, origin, r.url);
  assert.ok(requests.some((r) => r.url.endsWith("/assets/app.js")));
  assert.ok(requests.some((r) => r.url.endsWith("/assets/app.css")));
  await page.locator("#jobs-status", { hasText: "No jobs yet" }).waitFor();
});

await check("every form field has a label", async () => {
  const unlabelled = await page.evaluate(() =>
    [...document.querySelectorAll("input")].filter((i) => i.labels.length === 0).map((i) => i.id || i.name),
  );
  assert.deepEqual(unlabelled, []);
});

let demoId;
await check("a demo job submitted in the page reaches 100 % and succeeded, updated by long-poll", async () => {
  // Records every value the bar takes, to see it move rather than jump from nothing to done.
  await page.evaluate(() => {
    window.__seen = [];
    new MutationObserver((changes) => {
      for (const c of changes) {
        if (c.attributeName === "aria-valuenow") window.__seen.push(Number(c.target.getAttribute("aria-valuenow")));
      }
    }).observe(document.getElementById("jobs"), { attributes: true, subtree: true, attributeFilter: ["aria-valuenow"] });
  });
  await page.fill("#demo-steps", "6");
  await page.fill("#demo-step-ms", "400");
  const before = await cardCount(page);
  await page.click("#demo-form button[type=submit]");
  const card = await newCard(page, before);
  demoId = await card.getAttribute("data-id");
  await page.locator("#demo-status", { hasText: "Accepted" }).waitFor();
  await waitState(card, "succeeded");
  const bar = card.getByRole("progressbar");
  assert.equal(await bar.getAttribute("aria-valuenow"), "100");
  assert.equal(await card.locator(".state").textContent(), "succeeded");
  assert.match(await card.locator(".job-result pre").textContent(), /"steps": 6/);
  const seen = await page.evaluate(() => window.__seen);
  assert.ok(seen.some((v) => v > 0 && v < 100), `the bar moved through ${JSON.stringify(seen)}`);
  // Long-poll, not a timer: a handful of reads for a job that changed seven times in 2.4 s.
  const reads = requests.filter((r) => r.url.includes(`/v1/jobs/${demoId}`));
  assert.ok(reads.length <= 14, `${reads.length} reads of the job`);
  assert.ok(reads.every((r) => r.url.includes("wait=")), "every read is a long-poll");
  assert.ok(reads.slice(1).some((r) => r.headers["if-none-match"]), "later reads send If-None-Match");
  await page.locator("#announce", { hasText: "succeeded" }).waitFor();
});

await check("an out-of-stock order is rejected with a message naming the item", async () => {
  await page.fill("#qty-poster-limited", "1");
  await page.fill("#qty-mug-red", "2");
  const before = await cardCount(page);
  await page.click("#order-form button[type=submit]");
  const card = await newCard(page, before);
  await waitState(card, "failed");
  const problem = card.locator(".problem");
  await problem.waitFor();
  assert.match(await problem.textContent(), /Limited Edition Poster/);
  await page.fill("#qty-poster-limited", "0");
  await page.fill("#qty-mug-red", "0");
});

await check("a rejection reason with markup renders as text and runs nothing", async () => {
  await page.fill("#demo-steps", "0");
  await page.fill("#demo-reject", EVIL);
  const before = await cardCount(page);
  await page.click("#demo-form button[type=submit]");
  const card = await newCard(page, before);
  await waitState(card, "failed");
  const detail = await card.locator(".problem-detail").textContent();
  assert.ok(detail.includes(EVIL), `the reason is shown as written: ${detail}`);
  assert.equal(await page.locator("#jobs img, #announce img").count(), 0);
  assert.equal(await page.evaluate(() => window.__pwned), undefined);
  await page.fill("#demo-reject", "");
});

await check("the report shows the succeeded and the failed jobs", async () => {
  await page.click("#report-refresh");
  await page.waitForFunction(() => {
    const dd = [...document.querySelectorAll("#report dt")].find((dt) => dt.textContent.startsWith("Failed"));
    return dd && Number(dd.nextElementSibling.textContent) >= 2;
  });
  const r = await report(page);
  const value = (prefix) => Number(Object.entries(r).find(([k]) => k.startsWith(prefix))[1]);
  assert.equal(value("Succeeded"), 1, JSON.stringify(r));
  assert.equal(value("Failed"), 2, JSON.stringify(r));
  assert.equal(value("Accepted"), 3, JSON.stringify(r));
  assert.match(r["Time to finish"], /median/);
  assert.match(await page.locator("#report .failures").textContent(), /rejected|out-of-stock|:/);
});

await check("a job submitted with the keyboard alone is accepted and succeeds", async () => {
  await page.evaluate(() => document.activeElement && document.activeElement.blur());
  let tabs = 0;
  while ((await page.evaluate(() => document.activeElement.id)) !== "demo-steps") {
    await page.keyboard.press("Tab");
    tabs += 1;
    assert.ok(tabs < 40, "the steps field is reachable with Tab");
  }
  await page.keyboard.press("Control+A");
  await page.keyboard.type("2");
  await page.keyboard.press("Tab");
  await page.keyboard.press("Control+A");
  await page.keyboard.type("50");
  const before = await cardCount(page);
  await page.keyboard.press("Enter");
  const card = await newCard(page, before);
  await waitState(card, "succeeded");
  assert.equal(await card.getByRole("progressbar").getAttribute("aria-valuenow"), "100");
});

await check("a job waiting for its retry can be cancelled from the page", async () => {
  // The server runs with a 3 s backoff, so the job waits queued between its attempts.
  await page.fill("#demo-steps", "0");
  await page.fill("#demo-fail", "2");
  const before = await cardCount(page);
  await page.click("#demo-form button[type=submit]");
  const card = await newCard(page, before);
  await card.locator(`xpath=self::li[@data-state="queued" and @data-attempts="1"]`).waitFor();
  assert.match(await card.locator(".job-meta").textContent(), /attempt 1 of \d+/);
  const cancel = card.getByRole("button", { name: /^Cancel / });
  await cancel.click();
  await waitState(card, "cancelled");
  assert.equal(await cancel.isVisible(), false);
  await page.fill("#demo-fail", "0");
});

await check("one of every item in stock is ordered, priced and stored", async () => {
  // Also keeps the page's copy of the catalog honest: an unknown SKU would be a 422.
  const skus = await page.locator("input[data-sku]").evaluateAll((inputs) => inputs.map((i) => i.dataset.sku));
  for (const sku of skus) if (sku !== "poster-limited") await page.fill(`#qty-${sku}`, "1");
  const before = await cardCount(page);
  await page.click("#order-form button[type=submit]");
  const card = await newCard(page, before);
  await waitState(card, "succeeded");
  assert.equal(await card.getByRole("progressbar").getAttribute("aria-valuenow"), "100");
  for (const sku of skus) await page.fill(`#qty-${sku}`, "0");
});

await check("a job past its estimate says it is taking longer than expected", async () => {
  // The estimate comes from recent processing times; the page is given one in the past.
  await page.route("**/v1/jobs/*", async (route) => {
    const response = await route.fetch();
    if (response.status() !== 200) return route.fulfill({ response });
    const job = await response.json();
    if (!["succeeded", "failed", "cancelled"].includes(job.state)) {
      job.estimated_completion = new Date(Date.now() - 5000).toISOString();
    }
    return route.fulfill({ response, json: job });
  });
  await page.fill("#demo-steps", "8");
  await page.fill("#demo-step-ms", "250");
  const before = await cardCount(page);
  await page.click("#demo-form button[type=submit]");
  const card = await newCard(page, before);
  await card.locator(".late", { hasText: "Taking longer than expected" }).waitFor({ state: "visible" });
  await waitState(card, "succeeded");
  assert.equal(await card.locator(".late").isVisible(), false);
  await page.unroute("**/v1/jobs/*");
});

await check("an API Gateway {\"message\"} error is shown with what to do next", async () => {
  await page.route("**/v1/report", (route) =>
    route.fulfill({ status: 503, contentType: "application/json", body: JSON.stringify({ message: "Service Unavailable" }) }),
  );
  await page.click("#report-refresh");
  const status = page.locator("#report-status .problem");
  await status.waitFor();
  assert.match(await status.textContent(), /Service Unavailable.*try again/);
  await page.unroute("**/v1/report");
  await page.click("#report-refresh");
  await page.locator("#report-status .problem").waitFor({ state: "detached" });
});

await check("the page fits a phone's width", async () => {
  await page.screenshot({ path: `${shots}/status-page.png`, fullPage: true });
  await page.setViewportSize({ width: 390, height: 844 });
  const overflow = await page.evaluate(() => document.documentElement.scrollWidth - window.innerWidth);
  assert.ok(overflow <= 0, `${overflow}px wider than the phone`);
  await page.screenshot({ path: `${shots}/status-page-phone.png`, fullPage: true });
});

await check("the page ran without script errors or policy violations", async () => {
  assert.deepEqual(trouble, []);
});
await context.close();

await check("with authentication on, the page asks for a token, keeps it in the tab and uses it", async () => {
  const { page: authed, trouble: authTrouble, requests: authRequests, context: authContext } = await openPage(authedUrl);
  await authed.locator("#token-status", { hasText: "needs a token" }).waitFor();
  assert.equal(await authed.locator("#token-details").getAttribute("open"), "");
  assert.equal(await authed.evaluate(() => document.activeElement.id), "token");
  await authed.keyboard.type("page-test-token-0123456789");
  await authed.keyboard.press("Enter");
  await authed.locator("#jobs-status", { hasText: "No jobs yet" }).waitFor();
  assert.equal(await authed.evaluate(() => sessionStorage.getItem("ackflow.token")), "page-test-token-0123456789");
  await authed.fill("#demo-steps", "1");
  await authed.fill("#demo-step-ms", "0");
  const before = await cardCount(authed);
  await authed.click("#demo-form button[type=submit]");
  await waitState(await newCard(authed, before), "succeeded");
  const sent = authRequests.filter((r) => r.url.includes("/v1/jobs") && r.method === "POST");
  assert.equal(sent.at(-1).headers.authorization, "Bearer page-test-token-0123456789");
  assert.deepEqual(authTrouble.filter((t) => !t.includes("401")), []);
  await authContext.close();
});

await browser.close();
console.log(`${checks} checks passed; screenshots: ${shots}/status-page.png, ${shots}/status-page-phone.png`);
