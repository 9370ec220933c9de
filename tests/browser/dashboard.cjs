// Drives the dashboard in headless Chromium (playwright-core, no bundled
// browser: the system's /usr/bin/chromium) and checks what a person would:
// the page loads with no console error, shows the figures the API returns,
// and a link from the at-risk list opens that account's page. Saves
// screenshots into the artifacts directory.
//
// Run by crates/bowtie/tests/browser.rs, which starts `bowtie dev --demo`
// and passes, in the environment:
//   BOWTIE_URL        the gateway, e.g. http://127.0.0.1:41234
//   BOWTIE_KEY        a read key, or empty to use the one the page pre-fills
//   BOWTIE_EXPECT     JSON: {"mrr": <minor units>, "awareness": <count>, "nrr": <ratio>,
//                     "at_risk_name": "...", "scoring": <true when health scores exist>,
//                     "enterprise_mrr": <minor units, the MRR with the ENTERPRISE filter>}
//   BOWTIE_ARTIFACTS  where to write dashboard.png and account.png
//   BOWTIE_CHROMIUM   the Chromium binary
"use strict";

const path = require("path");
const { chromium } = require("playwright-core");

const url = process.env.BOWTIE_URL;
const key = process.env.BOWTIE_KEY;
const expected = JSON.parse(process.env.BOWTIE_EXPECT || "{}");
const artifacts = process.env.BOWTIE_ARTIFACTS;
const executablePath = process.env.BOWTIE_CHROMIUM || "/usr/bin/chromium";

function check(condition, message) {
  if (!condition) throw new Error(message);
}

(async () => {
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: [
      "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
      "--disable-dev-shm-usage",
    ],
  });
  const problems = [];
  try {
    const page = await browser.newPage({ viewport: { width: 1360, height: 1500 } });
    page.on("console", (msg) => {
      if (msg.type() === "error") problems.push(`console error: ${msg.text()}`);
    });
    page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
    page.on("requestfailed", (req) => problems.push(`request failed: ${req.url()} ${req.failure() && req.failure().errorText}`));
    page.on("response", (res) => {
      if (res.status() >= 400) problems.push(`HTTP ${res.status()} for ${res.url()}`);
    });

    // With a key, sign in through ?key=; without, rely on the pre-filled one.
    await page.goto(key ? `${url}/?key=${encodeURIComponent(key)}` : `${url}/`, { waitUntil: "load" });
    await page.waitForSelector('body[data-loaded="overview"]', { timeout: 30000 });
    check(!page.url().includes("key="), "the key stays in the address bar");

    const mrr = Number(await page.getAttribute('[data-testid="kpi-mrr"]', "data-value"));
    check(mrr === expected.mrr, `MRR on the page ${mrr} != API ${expected.mrr}`);
    const shownMrr = await page.textContent('[data-testid="kpi-mrr"] .value');
    check(shownMrr && shownMrr.startsWith("$"), `MRR is shown as money: ${shownMrr}`);
    const awareness = Number(await page.getAttribute('[data-testid="stage-AWARENESS"]', "data-volume"));
    check(awareness === expected.awareness, `AWARENESS volume on the page ${awareness} != API ${expected.awareness}`);
    const nrr = Number(await page.getAttribute('[data-testid="kpi-nrr"]', "data-value"));
    check(Math.abs(nrr - expected.nrr) < 1e-9, `NRR on the page ${nrr} != API ${expected.nrr}`);

    if (expected.playbooks) {
      const shown = await page.$$eval('[data-testid="playbooks"] tbody tr td:first-child', (cells) => cells.map((c) => c.textContent));
      check(JSON.stringify(shown) === JSON.stringify(expected.playbooks), `playbooks on the page ${JSON.stringify(shown)} != API ${JSON.stringify(expected.playbooks)}`);
    }
    await page.screenshot({ path: path.join(artifacts, "dashboard.png"), fullPage: true });

    // The segment filter: enterprise only, then back to every segment.
    if (expected.enterprise_mrr !== undefined) {
      await page.selectOption("#segment", "ENTERPRISE");
      await page.waitForSelector('body[data-loaded="overview"]', { timeout: 30000 });
      const enterprise = Number(await page.getAttribute('[data-testid="kpi-mrr"]', "data-value"));
      check(enterprise === expected.enterprise_mrr, `enterprise MRR on the page ${enterprise} != API ${expected.enterprise_mrr}`);
      await page.selectOption("#segment", "");
      await page.waitForSelector('body[data-loaded="overview"]', { timeout: 30000 });
    }

    const link = page.locator('[data-testid="at-risk-link"]').first();
    const name = (await link.textContent()).trim();
    check(name === expected.at_risk_name, `first at-risk account ${name} != ${expected.at_risk_name}`);
    await link.click();
    await page.waitForSelector('body[data-loaded="account"]', { timeout: 30000 });
    const title = (await page.textContent('[data-testid="account-name"]')).trim();
    check(title === name, `account page shows ${title}, expected ${name}`);
    await page.waitForSelector('[data-testid="journey"]', { timeout: 10000 });
    if (expected.scoring) {
      await page.waitForSelector('[data-testid="health-score"]', { timeout: 10000 });
      const health = await page.textContent("#account-health");
      check(health.includes("Usage trend") && !health.includes("[object"), `health components are shown: ${health}`);
      const alerts = await page.textContent("#account-alerts");
      check(/Fell into red|Score dropped|High churn risk/.test(alerts), `the account's alert is shown: ${alerts}`);
    }
    if (expected.playbooks) {
      const timeline = await page.$$('[data-testid="timeline"] tr');
      check(timeline.length > 0, "the account's timeline is shown");
      check(await page.$('[data-testid="log-form"]') !== null, "the timeline offers to log an activity");
    }
    await page.screenshot({ path: path.join(artifacts, "account.png"), fullPage: true });

    if (expected.playbooks) {
      await page.goto(`${url}/#work`, { waitUntil: "load" });
      await page.waitForSelector('body[data-loaded="work"]', { timeout: 30000 });
      const owner = await page.inputValue('[data-testid="work-owner"]');
      check(owner !== "", "the work page picks a person");
      const rows = await page.$$('[data-testid="ctas"] tbody tr');
      check(rows.length > 0, `the work page lists ${owner}'s CTAs`);
      const books = await page.$$('[data-testid="book"] tbody tr');
      check(books.length > 0, "the work page shows each CSM's book of business");
      const bookText = await page.textContent('[data-testid="book"]');
      check(bookText.includes("NRR") && bookText.includes("Renewals 90 d"), "the book shows NRR and renewals");
      await page.screenshot({ path: path.join(artifacts, "work.png"), fullPage: true });
    }

    check(problems.length === 0, `the page reported problems:\n  ${problems.join("\n  ")}`);
    console.log(`dashboard ok: MRR ${mrr}, AWARENESS ${awareness}, NRR ${nrr}, at-risk ${name}; screenshots in ${artifacts}`);
  } finally {
    await browser.close();
  }
})().catch((err) => {
  console.error(`browser test failed: ${err && err.stack ? err.stack : err}`);
  process.exit(1);
});
