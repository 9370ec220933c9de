// Signs in to the dashboard through the identity provider's login page in
// headless Chromium (playwright-core, the system's Chromium), checks the
// header names the person and the page shows their book, that the at-risk
// and health lists start on "Your book" (a csm) and show everyone's
// accounts on "Everyone", logs a note on an
// account of the book (a write with the session cookie), then signs out
// at the provider and checks the session is gone.
//
// Run by crates/bowtie/tests/browser.rs, which starts the provider
// (tests/oidc/provider.mjs) and the services and gateway with sign-in on,
// and passes, in the environment:
//   BOWTIE_URL        the gateway, e.g. http://127.0.0.1:41234
//   BOWTIE_ISSUER     the provider, e.g. http://127.0.0.1:40123
//   BOWTIE_LOGIN      the login to type at the provider (any password)
//   BOWTIE_EXPECT     JSON: {"name": "<shown in the header>", "email": "<the person's>",
//                     "book": ["<account name>", ...], "at_risk_mine": [...],
//                     "at_risk_all": [...]} (names sorted)
//   BOWTIE_ARTIFACTS  where to write signed-in.png
//   BOWTIE_CHROMIUM   the Chromium binary
"use strict";

const path = require("path");
const { chromium } = require("playwright-core");

const url = process.env.BOWTIE_URL;
const issuer = process.env.BOWTIE_ISSUER;
const login = process.env.BOWTIE_LOGIN;
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
    const context = await browser.newContext({ viewport: { width: 1360, height: 1500 } });
    // The provider's pages import a web font: no network beyond the two servers.
    await context.route("**/*", (route) => {
      const target = route.request().url();
      if (target.startsWith(url) || target.startsWith(issuer)) return route.continue();
      return route.fulfill({ status: 200, contentType: "text/css", body: "" });
    });
    const page = await context.newPage();
    // Before sign-in and after sign-out the page asks /auth/me, which is 401
    // then; a new account has no journey or health yet (404, shown as none).
    const expectedMiss = (text) => text.includes("/auth/me") || text.includes("401 (Unauthorized)")
      || text.includes("404 (Not Found)");
    page.on("console", (msg) => {
      if (msg.type() === "error" && !expectedMiss(`${msg.text()} ${msg.location().url}`)) {
        problems.push(`console error: ${msg.text()}`);
      }
    });
    page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
    page.on("response", (res) => {
      const miss = res.url().startsWith(`${url}/auth/me`) || (res.status() === 404 && /\/(journey|health)$/.test(res.url()));
      if (res.url().startsWith(url) && res.status() >= 400 && !miss) {
        problems.push(`HTTP ${res.status()} for ${res.url()}`);
      }
    });

    // Sign-in is configured: a "Sign in" button, no key prompt.
    await page.goto(`${url}/`, { waitUntil: "load" });
    await page.waitForSelector('[data-testid="sign-in"]', { state: "visible", timeout: 30000 });
    check(await page.isHidden('[data-testid="key"]'), "the API key prompt is hidden");

    // The provider's login page, then its consent page.
    await page.click('[data-testid="sign-in"]');
    await page.waitForURL((u) => u.href.startsWith(issuer), { timeout: 30000 });
    await page.waitForSelector('input[name="login"]', { timeout: 30000 });
    await page.fill('input[name="login"]', login);
    await page.fill('input[name="password"]', "any password");
    await Promise.all([page.waitForNavigation({ timeout: 30000 }), page.click('button[type="submit"]')]);
    if (page.url().startsWith(issuer)) {
      // Consent: "Continue".
      await page.waitForSelector('button[type="submit"]', { timeout: 30000 });
      await Promise.all([page.waitForURL((u) => u.href.startsWith(url), { timeout: 30000 }), page.click('button[type="submit"]')]);
    }
    await page.waitForSelector('body[data-loaded="overview"]', { timeout: 60000 });
    check(new URL(page.url()).pathname === "/", `back on the dashboard: ${page.url()}`);

    const name = (await page.textContent('[data-testid="user-name"]')).trim();
    check(name === expected.name, `the header shows ${JSON.stringify(name)}, not ${JSON.stringify(expected.name)}`);
    check(await page.isVisible('[data-testid="sign-out"]'), "a sign-out button is shown");
    const book = await page.$$eval('[data-testid="my-book-row"] td:first-child', (cells) => cells.map((c) => c.textContent.trim()));
    check(JSON.stringify(book) === JSON.stringify(expected.book),
      `the book shows ${JSON.stringify(book)}, not ${JSON.stringify(expected.book)}`);

    // A csm starts on its own book: the at-risk and health lists hold only
    // its accounts; "Everyone" shows every account at risk.
    const names = (selector) => page.$$eval(selector, (cells) => cells.map((c) => c.textContent.trim()).sort());
    const lit = async (id) => (await page.textContent(`#${id} button.on`)).trim();
    check(await lit("risk-scope") === "Your book", `the at-risk list starts on ${await lit("risk-scope")}`);
    const atRiskMine = await names('[data-testid="at-risk-link"]');
    check(JSON.stringify(atRiskMine) === JSON.stringify(expected.at_risk_mine),
      `at risk in her book: ${JSON.stringify(atRiskMine)}, not ${JSON.stringify(expected.at_risk_mine)}`);
    const healthMine = await names('[data-testid="health-row"] td:first-child');
    check(JSON.stringify(healthMine) === JSON.stringify(expected.at_risk_mine),
      `health of her book: ${JSON.stringify(healthMine)}, not ${JSON.stringify(expected.at_risk_mine)}`);
    await page.evaluate(() => { document.body.dataset.loaded = ""; });
    await page.click('#risk-scope button[data-scope="all"]');
    await page.waitForSelector('body[data-loaded="overview"]', { timeout: 30000 });
    check(await lit("health-scope") === "Everyone", "both lists follow the choice");
    const atRiskAll = await names('[data-testid="at-risk-link"]');
    check(JSON.stringify(atRiskAll) === JSON.stringify(expected.at_risk_all),
      `at risk, everyone: ${JSON.stringify(atRiskAll)}, not ${JSON.stringify(expected.at_risk_all)}`);
    await page.evaluate(() => { document.body.dataset.loaded = ""; });
    await page.click('#health-scope button[data-scope="mine"]');
    await page.waitForSelector('body[data-loaded="overview"]', { timeout: 30000 });
    check(JSON.stringify(await names('[data-testid="at-risk-link"]')) === JSON.stringify(expected.at_risk_mine),
      "back on her book");

    // The session cookie is HttpOnly and SameSite=Lax; the page cannot read it.
    const cookies = await context.cookies(url);
    const session = cookies.find((c) => c.name === "bowtie_session");
    check(session && session.httpOnly && session.sameSite === "Lax", `session cookie ${JSON.stringify(session)}`);
    const csrf = cookies.find((c) => c.name === "bowtie_csrf");
    check(csrf && !csrf.httpOnly, "the CSRF cookie is readable by the page");
    const visible = await page.evaluate(() => document.cookie);
    check(!visible.includes("bowtie_session"), "the page's script cannot read the session");
    check(!(await page.evaluate(() => Object.keys(localStorage).length)), "nothing is kept in localStorage");
    if (artifacts) await page.screenshot({ path: path.join(artifacts, "signed-in.png"), fullPage: true });

    // A write from the page: a note on the first account of the book, sent
    // with the session cookie and the CSRF token.
    await page.click('[data-testid="my-book-row"] a');
    await page.waitForSelector('body[data-loaded="account"]', { timeout: 30000 });
    await page.waitForSelector('[data-testid="log-form"]', { state: "visible", timeout: 30000 });
    const author = await page.inputValue("#log-author");
    check(author === expected.email, `the note's author is pre-filled with ${JSON.stringify(author)}`);
    const note = `Signed-in note ${Date.now()}`;
    await page.fill("#log-text", note);
    await page.click('[data-testid="log-form"] button[type="submit"]');
    await page.waitForFunction((text) => {
      const rows = document.querySelectorAll('[data-testid="timeline"] tr');
      return [...rows].some((r) => r.textContent.includes(text));
    }, note, { timeout: 30000 });
    const logError = (await page.textContent("#log-error")).trim();
    check(logError === "", `logging said ${JSON.stringify(logError)}`);
    await page.click('[data-testid="home-link"]');
    await page.waitForSelector('body[data-loaded="overview"]', { timeout: 30000 });

    // Sign out: the cookies go, then the provider ends its session and sends
    // the browser back to the dashboard, which asks for a sign-in again.
    await Promise.all([page.waitForURL((u) => u.href.startsWith(issuer), { timeout: 30000 }), page.click('[data-testid="sign-out"]')]);
    await page.waitForSelector('button[name="logout"]', { timeout: 30000 });
    await Promise.all([page.waitForURL((u) => u.href.startsWith(url), { timeout: 30000 }), page.click('button[name="logout"]')]);
    await page.waitForSelector('[data-testid="sign-in"]', { state: "visible", timeout: 30000 });
    const after = await context.cookies(url);
    check(!after.some((c) => c.name === "bowtie_session"), "the session cookie is gone");
    const me = await page.evaluate(async () => (await fetch("/auth/me")).status);
    check(me === 401, `/auth/me after sign-out is ${me}`);

    check(problems.length === 0, `problems on the page:\n${problems.join("\n")}`);
    console.log(`signed in as ${name}, book of ${book.length} accounts, signed out`);
  } finally {
    await browser.close();
  }
})().catch((e) => {
  console.error(e.stack || String(e));
  process.exit(1);
});
