// Bowtie dashboard: plain JavaScript, no framework, no network beyond this
// gateway. Reads the REST API as the person signed in with the identity
// provider (the gateway's session cookie; writes echo the bowtie_csrf cookie
// in X-CSRF-Token) or, where the gateway has no sign-in, with the API key
// the user entered, and draws its charts as SVG.
"use strict";

const KEY_STORE = "bowtie.apiKey";
const STAGES = ["AWARENESS", "EDUCATION", "SELECTION", "COMMIT", "ONBOARDING", "IMPACT", "GROWTH"];
const STAGE_LABEL = {
  AWARENESS: "Awareness", EDUCATION: "Education", SELECTION: "Selection", COMMIT: "Commit",
  ONBOARDING: "Onboarding", IMPACT: "Impact", GROWTH: "Growth", LOST: "Lost", CHURNED: "Churned",
};
const COMPONENT_LABEL = {
  USAGE_TREND: "Usage trend", BREADTH: "Breadth", PAYMENT_PUNCTUALITY: "Payments", PLAN_CHANGES: "Plan changes",
  SUPPORT_ENGAGEMENT: "Support", SENTIMENT: "Sentiment", ONBOARDING: "Onboarding",
  STAKEHOLDER_STABILITY: "Stakeholders", RENEWAL_PROXIMITY: "Renewal",
};
const TIER_LABEL = { DIAMOND: "Diamond", GOLD: "Gold", STRATEGIC: "Strategic", POTENTIAL: "Potential", GENERAL: "General", PROBLEM: "Problem" };
const QUADRANT_LABEL = {
  A: "A · high value, high loyalty", B: "B · high value, low loyalty", C: "C · low value, high loyalty",
  D: "D · low value, low loyalty", E: "E · dormant",
};
const ALERT_LABEL = { ENTERED_RED: "Fell into red", SCORE_DROP: "Score dropped", HIGH_RISK: "High churn risk" };
const SEGMENT_LABEL = { SMB: "SMB", MID_MARKET: "Mid-market", ENTERPRISE: "Enterprise", UNSPECIFIED: "-" };
const SVG_NS = "http://www.w3.org/2000/svg";

// `person`: whether the caller may have a book of its own (a signed-in
// person, or a key until it proves to have scopes only; `null` until
// known); `scope`: "mine" shows only that
// book on the health and at-risk lists and the book of business, "all" everyone's.
const state = { key: "", signIn: false, session: null, person: null, scope: "all", currency: "USD", scoring: false, success: false, cohortMetric: "mrr_retention", cohorts: null };
const SCOPE_TOGGLES = ["risk-scope", "health-scope", "book-scope"];

// --- small helpers ---------------------------------------------------------

const $ = (id) => document.getElementById(id);

function h(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") node.className = v;
    else if (k === "text") node.textContent = v;
    else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function s(tag, attrs, ...children) {
  const node = document.createElementNS(SVG_NS, tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null) continue;
    if (k === "text") node.textContent = v;
    else node.setAttribute(k, v);
  }
  for (const c of children.flat(Infinity)) if (c) node.append(c);
  return node;
}

function svg(width, height, ...children) {
  return s("svg", { viewBox: `0 0 ${width} ${height}`, role: "img" }, ...children);
}

function money(minor, currency, compact) {
  const value = (minor || 0) / 100;
  try {
    return new Intl.NumberFormat("en-US", {
      style: "currency", currency: currency || state.currency,
      notation: compact ? "compact" : "standard",
      maximumFractionDigits: compact ? 1 : 0,
    }).format(value);
  } catch (_) {
    return `${value.toFixed(0)} ${currency || state.currency}`;
  }
}

const pct = (x, digits = 1) => (x === null || x === undefined || Number.isNaN(x) ? "-" : `${(x * 100).toFixed(digits)}%`);
const days = (seconds) => (seconds === null || seconds === undefined ? "-" : `${(seconds / 86400).toFixed(seconds < 864000 ? 1 : 0)} d`);
const date = (iso) => (iso ? iso.slice(0, 10) : "-");
const count = (n) => new Intl.NumberFormat("en-US").format(n || 0);

function monthLabel(d) {
  return `${d.getUTCFullYear()}-${String(d.getUTCMonth() + 1).padStart(2, "0")}`;
}

/// The selected period: whole months ending with the current one.
function period() {
  const months = Number($("period").value || 12);
  const now = new Date();
  const start = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() - (months - 1), 1));
  const nextMonth = new Date(Date.UTC(now.getUTCFullYear(), now.getUTCMonth() + 1, 1));
  return {
    months,
    start: start.toISOString().replace(".000Z", "Z"),
    end: nextMonth.toISOString().replace(".000Z", "Z"),
    now: new Date(Math.floor(now.getTime() / 1000) * 1000).toISOString().replace(".000Z", "Z"),
    startMonth: monthLabel(start),
    endMonth: monthLabel(now),
  };
}

/// Finds out once whether the caller may have a book: a signed-in person
/// has (a csm starts on "Your book"); a key may (a key given a role has, one
/// with scopes only has not, which the API says when asked for its book), and
/// starts on "Everyone".
function detectPerson() {
  if (state.person !== null) return;
  state.person = true;
  state.scope = state.session && (state.session.roles || []).includes("csm") ? "mine" : "all";
}

/// `&mine=true` when the caller chose its own book.
function mineParam() {
  return state.person && state.scope === "mine" ? "&mine=true" : "";
}

/// Shows the "Your book" / "Everyone" toggles to a caller with a book, the
/// current choice lit.
function showScope() {
  for (const id of SCOPE_TOGGLES) {
    $(id).hidden = !state.person;
    for (const b of $(id).querySelectorAll("button")) b.classList.toggle("on", b.dataset.scope === state.scope);
  }
}

function segmentParam() {
  const seg = $("segment").value;
  return seg ? `&segment=${seg}` : "";
}

class ApiError extends Error {
  constructor(status, body) {
    super((body && body.error && body.error.message) || `HTTP ${status}`);
    this.status = status;
    this.code = body && body.error && body.error.code;
  }
}

/// The headers of an API call: the key, or nothing when the session cookie
/// authenticates it (plus its CSRF token on a write).
function authHeaders(write) {
  if (state.session) return write ? { "X-CSRF-Token": state.session.csrf_token } : {};
  return { Authorization: `Bearer ${state.key}` };
}

async function api(path) {
  const response = await fetch(path, { headers: authHeaders(false) });
  const body = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, body);
  return body;
}

/// Like `api`, but a 404 is `null` rather than an error.
async function apiOrNull(path) {
  try {
    return await api(path);
  } catch (e) {
    if (e instanceof ApiError && e.status === 404) return null;
    throw e;
  }
}

async function post(path, body) {
  const response = await fetch(path, {
    method: "POST",
    headers: { ...authHeaders(true), "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const answer = await response.json().catch(() => null);
  if (!response.ok) throw new ApiError(response.status, answer);
  return answer;
}

function showBanner(message) {
  const banner = $("banner");
  banner.textContent = message;
  banner.hidden = !message;
}

function empty(text) {
  return h("div", { class: "empty", text });
}

// --- sign-in ---------------------------------------------------------------

/// Whether the gateway signs people in with the identity provider, and if
/// so who the session is (`null` before sign-in or once it ended).
async function initSession(config) {
  state.signIn = Boolean(config.sign_in);
  if (!state.signIn) return;
  const response = await fetch("/auth/me", { headers: { Accept: "application/json" } }).catch(() => null);
  state.session = response && response.ok ? await response.json() : null;
}

async function initKey(config) {
  const url = new URL(window.location.href);
  const fromUrl = url.searchParams.get("key");
  if (fromUrl) {
    localStorage.setItem(KEY_STORE, fromUrl);
    url.searchParams.delete("key");
    history.replaceState(null, "", url.pathname + url.search + url.hash);
  }
  state.key = localStorage.getItem(KEY_STORE) || "";
  if (!state.key) {
    if (config.prefill_key) {
      state.key = config.prefill_key;
      localStorage.setItem(KEY_STORE, state.key);
    }
  }
}

function showUser() {
  $("user-name").hidden = !state.session;
  $("user-name").textContent = state.session ? state.session.name : "";
  $("sign-out").hidden = !state.session && !state.key;
}

async function signOut() {
  if (state.session) {
    const response = await fetch("/auth/logout", { method: "POST", headers: authHeaders(true) }).catch(() => null);
    const answer = response && response.ok ? await response.json().catch(() => ({})) : {};
    state.session = null;
    state.person = null;
    if (answer.end_session_url) {
      // The provider ends its own session too, then sends the browser back here.
      window.location.assign(answer.end_session_url);
      return;
    }
  }
  localStorage.removeItem(KEY_STORE);
  state.key = "";
  showSignIn("");
}

function showSignIn(message) {
  for (const p of ["overview", "account", "work"]) $(p).hidden = true;
  $("filters").hidden = true;
  showUser();
  if (state.signIn) {
    $("signin-oidc").hidden = false;
    $("signin-oidc-error").textContent = message || "";
    return;
  }
  $("signin").hidden = false;
  $("signin-error").textContent = message || "";
  $("key").value = state.key;
  $("key").focus();
}

// --- overview --------------------------------------------------------------

function kpi(id, label, value, sub, raw, cls) {
  return h("div", { class: "kpi", "data-testid": `kpi-${id}`, "data-value": raw },
    h("div", { class: "label", text: label }),
    h("div", { class: `value ${cls || ""}`, text: value }),
    h("div", { class: "sub", text: sub || "" }));
}

function renderKpis(mrr, retention, funnel) {
  const periods = mrr.periods || [];
  const last = periods[periods.length - 1] || {};
  const first = periods[0] || {};
  const growth = first.start_mrr ? (last.end_mrr - first.start_mrr) / first.start_mrr : null;
  const cohort = retention.accounts_start > 0;
  const since = first.period || "";
  $("kpis").replaceChildren(
    kpi("mrr", "MRR", money(last.end_mrr, mrr.currency, true),
      growth === null ? `${last.period || ""}` : `${growth >= 0 ? "+" : ""}${pct(growth)} over the period`,
      last.end_mrr ?? 0, growth === null ? "" : growth >= 0 ? "good" : "bad"),
    kpi("arr", "ARR", money(last.end_arr, mrr.currency, true), `ARPA ${money(last.arpa, mrr.currency)}`, last.end_arr ?? 0),
    kpi("paying", "Paying accounts", count(last.paying_accounts_end), `${count(periods.reduce((a, p) => a + p.new_accounts, 0))} new in the period`, last.paying_accounts_end ?? 0),
    kpi("nrr", "NRR", cohort ? pct(retention.nrr) : "-", cohort ? `net revenue retention since ${since}` : "no account paid at the start", retention.nrr, cohort ? (retention.nrr >= 1 ? "good" : "bad") : ""),
    kpi("grr", "GRR", cohort ? pct(retention.grr) : "-", "gross revenue retention", retention.grr),
    kpi("logo", "Logo retention", cohort ? pct(retention.logo_retention) : "-", `${count(retention.accounts_retained)} of ${count(retention.accounts_start)} kept`, retention.logo_retention),
    kpi("win", "Win rate", pct(funnel.measured_win_rate), `${count(funnel.won_attempts)} of ${count(funnel.awareness_attempts)} · cycle ${days(funnel.median_cycle_time_seconds)}`, funnel.measured_win_rate),
  );
}

function renderBowtie(funnel) {
  const W = 1000, H = 300, top = 20, mid = 150;
  const byStage = Object.fromEntries((funnel.stages || []).map((x) => [x.stage, x]));
  const col = W / STAGES.length;
  // Half-heights at the stage boundaries: wide at both ends, narrow at the knot.
  const half = [128, 104, 80, 40, 40, 80, 104, 128];
  const parts = [];
  STAGES.forEach((stage, i) => {
    const m = byStage[stage] || { volume: 0, conversion_rate: 0 };
    const x0 = i * col + 2, x1 = (i + 1) * col - 2;
    const hl = half[i], hr = half[i + 1];
    const fill = i < 3 ? "var(--left)" : i === 3 ? "var(--knot)" : "var(--right)";
    parts.push(s("polygon", {
      points: `${x0},${mid - hl} ${x1},${mid - hr} ${x1},${mid + hr} ${x0},${mid + hl}`,
      fill, opacity: 0.92,
    }));
    const cx = (x0 + x1) / 2;
    parts.push(s("text", { x: cx, y: mid - 8, "text-anchor": "middle", fill: "#fff", "font-size": 12, "font-weight": 600, text: STAGE_LABEL[stage] }));
    parts.push(s("text", {
      x: cx, y: mid + 14, "text-anchor": "middle", fill: "#fff", "font-size": 18, "font-weight": 700,
      text: count(m.volume), "data-testid": `stage-${stage}`, "data-volume": m.volume,
    }));
    if (i < STAGES.length - 1) {
      parts.push(s("text", { x: x1, y: H - 34, "text-anchor": "middle", "font-size": 12, "font-weight": 600, text: `${pct(m.conversion_rate, 0)} →` }));
      parts.push(s("text", { x: x1, y: H - 18, "text-anchor": "middle", "font-size": 11, fill: "var(--muted)", text: `median ${days(m.median_time_to_next_seconds)}` }));
    }
  });
  parts.push(s("text", { x: 2, y: top - 4, "font-size": 11, fill: "var(--muted)", text: "entries in the period · conversion to the next stage · median time to it" }));
  $("bowtie").replaceChildren(svg(W, H, ...parts));
  $("bowtie-hint").textContent = `win rate ${pct(funnel.measured_win_rate)} measured, ${pct(funnel.left_side_win_rate_product)} from stage conversions`;
  const drops = [];
  for (const m of funnel.stages || []) {
    for (const d of m.drop_offs || []) {
      drops.push(h("span", { class: "chip", text: `${STAGE_LABEL[m.stage]} → ${STAGE_LABEL[d.outcome]}: ${d.reason || "no reason"} ${count(d.count)}` }));
    }
  }
  $("dropoffs").replaceChildren(...(drops.length ? [h("span", { text: "Drop-offs:" }), ...drops.slice(0, 12)] : []));
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = Math.pow(10, Math.floor(Math.log10(v)));
  for (const m of [1, 2, 2.5, 5, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

function renderWaterfall(mrr) {
  const periods = mrr.periods || [];
  if (!periods.length) { $("waterfall").replaceChildren(empty("No revenue in the period")); return; }
  const sum = (k) => periods.reduce((a, p) => a + (p[k] || 0), 0);
  const start = periods[0].start_mrr, end = periods[periods.length - 1].end_mrr;
  const steps = [
    ["Start", start, "total"], ["New", sum("new_mrr"), "up"], ["Reactivation", sum("reactivation_mrr"), "up"],
    ["Expansion", sum("expansion_mrr"), "up"], ["Contraction", -sum("contraction_mrr"), "down"],
    ["Churn", -sum("churn_mrr"), "down"], ["End", end, "total"],
  ];
  const W = 520, H = 260, L = 64, B = 36, T = 16;
  let running = 0, peak = 0;
  for (const [, v, kind] of steps) { running = kind === "total" ? v : running + v; peak = Math.max(peak, running, kind === "total" ? v : 0); }
  const max = niceMax(peak);
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const bw = (W - L - 10) / steps.length;
  const parts = [];
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    parts.push(s("line", { x1: L, x2: W, y1: y(v), y2: y(v), stroke: "var(--line)" }));
    parts.push(s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", fill: "var(--muted)", text: money(v, mrr.currency, true) }));
  }
  running = 0;
  steps.forEach(([label, v, kind], i) => {
    let from, to;
    if (kind === "total") { from = 0; to = v; running = v; } else { from = running; to = running + v; running = to; }
    const color = kind === "total" ? "var(--navy)" : kind === "up" ? "var(--green)" : "var(--red)";
    const x = L + i * bw + 6;
    parts.push(s("rect", { x, y: y(Math.max(from, to)), width: bw - 12, height: Math.max(1, Math.abs(y(from) - y(to))), fill: color, rx: 2 }));
    parts.push(s("text", { x: x + (bw - 12) / 2, y: y(Math.max(from, to)) - 4, "text-anchor": "middle", "font-size": 10, text: `${kind === "down" ? "−" : kind === "up" ? "+" : ""}${money(Math.abs(v), mrr.currency, true)}` }));
    parts.push(s("text", { x: x + (bw - 12) / 2, y: H - B + 16, "text-anchor": "middle", fill: "var(--muted)", "font-size": 10, text: label }));
  });
  $("waterfall").replaceChildren(svg(W, H, ...parts));
  $("waterfall-hint").textContent = `${periods[0].period} to ${periods[periods.length - 1].period}`;
}

function renderTrend(mrr) {
  const periods = mrr.periods || [];
  if (!periods.length) { $("trend").replaceChildren(empty("No revenue in the period")); return; }
  const W = 520, H = 260, L = 64, B = 36, T = 16, R = 12;
  const max = niceMax(Math.max(...periods.map((p) => p.end_mrr), 1));
  const x = (i) => L + (periods.length === 1 ? (W - L - R) / 2 : (i * (W - L - R)) / (periods.length - 1));
  const y = (v) => T + (H - T - B) * (1 - v / max);
  const parts = [];
  for (let i = 0; i <= 4; i++) {
    const v = (max * i) / 4;
    parts.push(s("line", { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: "var(--line)" }));
    parts.push(s("text", { x: L - 6, y: y(v) + 4, "text-anchor": "end", fill: "var(--muted)", text: money(v, mrr.currency, true) }));
  }
  const line = periods.map((p, i) => `${i ? "L" : "M"}${x(i).toFixed(1)},${y(p.end_mrr).toFixed(1)}`).join(" ");
  parts.push(s("path", { d: `${line} L${x(periods.length - 1)},${y(0)} L${x(0)},${y(0)} Z`, fill: "var(--blue)", opacity: 0.12 }));
  parts.push(s("path", { d: line, fill: "none", stroke: "var(--blue)", "stroke-width": 2.5 }));
  const every = Math.ceil(periods.length / 8);
  periods.forEach((p, i) => {
    parts.push(s("circle", { cx: x(i), cy: y(p.end_mrr), r: 3, fill: "var(--blue)" },
      s("title", { text: `${p.period}: MRR ${money(p.end_mrr, mrr.currency)} · ARR ${money(p.end_arr, mrr.currency)}` })));
    const last = i === periods.length - 1;
    if (last || (i % every === 0 && periods.length - 1 - i >= Math.ceil(every / 2) + 1)) {
      const anchor = i === periods.length - 1 && periods.length > 1 ? "end" : "middle";
      parts.push(s("text", { x: x(i), y: H - B + 16, "text-anchor": anchor, fill: "var(--muted)", "font-size": 10, text: p.period }));
    }
  });
  $("trend").replaceChildren(svg(W, H, ...parts));
  const last = periods[periods.length - 1];
  $("trend-hint").textContent = `ARR ${money(last.end_arr, mrr.currency)} at the end of ${last.period}`;
}

function renderCohorts() {
  const data = state.cohorts;
  const metric = state.cohortMetric;
  if (!data || !data.cohorts.length) { $("cohorts").replaceChildren(empty("No cohorts in the period")); return; }
  const width = Math.max(...data.cohorts.map((c) => c.cells.length));
  const head = h("tr", {}, h("th", { text: "First paid" }), h("th", { class: "num", text: "Accounts" }),
    ...Array.from({ length: width }, (_, i) => h("th", { class: "num", text: `M${i}` })));
  const rows = data.cohorts.map((c) => h("tr", {},
    h("td", { text: c.cohort }), h("td", { class: "num", text: count(c.accounts) }),
    ...Array.from({ length: width }, (_, i) => {
      const cell = c.cells[i];
      if (!cell) return h("td", { class: "cell" });
      const v = cell[metric];
      const alpha = Math.max(0.06, Math.min(1, v));
      const bg = v >= 1 ? `rgba(23,166,115,${Math.min(1, 0.35 + (v - 1) * 2)})` : `rgba(59,110,245,${alpha.toFixed(2)})`;
      return h("td", { class: "cell", style: `background:${bg};color:${alpha > 0.55 ? "#fff" : "var(--ink)"}`, title: `${cell.paying_accounts} paying · ${money(cell.mrr, data.currency)}`, text: pct(v, 0) });
    })));
  $("cohorts").replaceChildren(h("table", {}, h("thead", {}, head), h("tbody", {}, rows)));
}

async function accountNames(ids) {
  const names = {};
  await Promise.all([...new Set(ids)].map(async (id) => {
    const a = await apiOrNull(`/api/v1/accounts/${id}`);
    names[id] = a ? a : { name: id.slice(0, 8), segment: "UNSPECIFIED" };
  }));
  return names;
}

async function renderAtRisk(p) {
  if (state.scoring) {
    const data = await api(`/api/v1/scoring/at-risk?page_size=10${segmentParam()}${mineParam()}`);
    const rows = (data.accounts || []).map((a) => h("tr", {},
      h("td", {}, h("a", { href: `#account=${a.account_id}`, "data-testid": "at-risk-link", text: a.name || a.account_id })),
      h("td", {}, h("span", { class: `band ${a.band}`, text: a.band })),
      h("td", { class: "num", text: a.score }),
      h("td", { class: "num", text: pct(a.churn_risk, 0) }),
      h("td", { class: "num", text: money(a.mrr_minor_units, state.currency) }),
      h("td", { class: "reason", text: a.reason || "" })));
    $("at-risk").replaceChildren(rows.length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", { text: "Account" }), h("th", { text: "Band" }), h("th", { class: "num", text: "Health" }), h("th", { class: "num", text: "Risk" }), h("th", { class: "num", text: "MRR" }), h("th", { text: "Why" }))), h("tbody", {}, rows)) : empty("No account at risk"));
    const whose = mineParam() ? "your book: " : "";
    $("risk-hint").textContent = data.accounts.length ? `${whose}red band or high churn risk, lowest health first` : "";
    return;
  }
  // Until health scores exist: the accounts whose MRR fell most in the last 90 days.
  const since = new Date(Date.now() - 90 * 86400e3).toISOString().replace(/\.\d+Z$/, "Z");
  const lost = {};
  let token = "";
  for (let pages = 0; pages < 5; pages++) {
    const page = await api(`/api/v1/revenue/movements?start=${since}&end=${p.now}&page_size=1000${token ? `&page_token=${encodeURIComponent(token)}` : ""}`);
    for (const m of page.movements) {
      if (m.type !== "CHURN" && m.type !== "CONTRACTION") continue;
      if ($("segment").value && m.segment !== $("segment").value) continue;
      const e = lost[m.account_id] || (lost[m.account_id] = { amount: 0, type: m.type, at: m.occurred_at, currency: m.amount.currency });
      e.amount += -m.amount.minor_units;
      if (m.type === "CHURN") e.type = "CHURN";
      e.at = m.occurred_at;
    }
    token = page.next_page_token;
    if (!token) break;
  }
  const top = Object.entries(lost).sort((a, b) => b[1].amount - a[1].amount).slice(0, 10);
  const names = await accountNames(top.map(([id]) => id));
  const rows = top.map(([id, e]) => h("tr", {},
    h("td", {}, h("a", { href: `#account=${id}`, "data-testid": "at-risk-link", text: names[id].name })),
    h("td", { text: SEGMENT_LABEL[names[id].segment] || "" }),
    h("td", {}, h("span", { class: `band ${e.type}`, text: e.type === "CHURN" ? "churned" : "contracted" })),
    h("td", { class: "num", text: money(e.amount, e.currency) }),
    h("td", { class: "reason", text: `MRR down ${money(e.amount, e.currency)}, last on ${date(e.at)}` })));
  $("at-risk").replaceChildren(rows.length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", { text: "Account" }), h("th", { text: "Segment" }), h("th", { text: "Signal" }), h("th", { class: "num", text: "MRR lost" }), h("th", { text: "Why" }))), h("tbody", {}, rows)) : empty("No churn or contraction in the last 90 days"));
  $("risk-hint").textContent = "MRR lost in the last 90 days (health scores appear when scoring runs)";
}

/// The health list: the lowest scores first, of the caller's book or everyone's.
async function renderHealthList() {
  $("health-card").hidden = !state.scoring;
  if (!state.scoring) return;
  const data = await api(`/api/v1/scoring/health?page_size=10${segmentParam()}${mineParam()}`);
  const rows = (data.accounts || []).map((a) => h("tr", { "data-testid": "health-row", "data-id": a.account_id },
    h("td", {}, h("a", { href: `#account=${a.account_id}`, text: a.name || a.account_id })),
    h("td", { text: a.csm || "-" }),
    h("td", {}, h("span", { class: `band ${a.band}`, text: a.band })),
    h("td", { class: "num", text: a.score }),
    h("td", { class: "num", text: a.delta_30d === null || a.delta_30d === undefined ? "-" : a.delta_30d }),
    h("td", { class: "num", text: money(a.mrr_minor_units, state.currency) }),
    h("td", { class: "reason", text: a.reason || "" })));
  $("health-list").replaceChildren(rows.length ? h("table", {}, h("thead", {}, h("tr", {}, ...["Account", "CSM", "Band"].map((t) => h("th", { text: t })), ...["Health", "30 d", "MRR"].map((t) => h("th", { class: "num", text: t })), h("th", { text: "Weakest" }))), h("tbody", {}, rows)) : empty(mineParam() ? "No scored account in your book" : "No scored account yet"));
  $("health-hint").textContent = `${mineParam() ? "your book, " : ""}lowest health first`;
}

async function renderRenewals(p) {
  const end = new Date(Date.now() + 90 * 86400e3).toISOString().replace(/\.\d+Z$/, "Z");
  const data = await api(`/api/v1/revenue/renewals?start=${p.now}&end=${end}&page_size=200`);
  const list = data.renewals.filter((r) => r.outcome === "UNSPECIFIED").slice(0, 8);
  const names = await accountNames(list.map((r) => r.account_id));
  const rows = list.map((r) => h("tr", {},
    h("td", {}, h("a", { href: `#account=${r.account_id}`, text: names[r.account_id].name })),
    h("td", { text: date(r.renewal_at) }),
    h("td", { class: "num", text: `${r.days_to_renewal} d` }),
    h("td", { class: "num", text: money(r.amount_at_stake.minor_units, r.amount_at_stake.currency) }),
    h("td", { class: "num", text: money(r.forecast.minor_units, r.forecast.currency) })));
  $("renewals").replaceChildren(rows.length ? h("table", {}, h("thead", {}, h("tr", {}, h("th", { text: "Account" }), h("th", { text: "Renews" }), h("th", { class: "num", text: "In" }), h("th", { class: "num", text: "At stake (ARR)" }), h("th", { class: "num", text: "Forecast" }))), h("tbody", {}, rows)) : empty("Nothing up for renewal"));
  const total = data.renewals.reduce((a, r) => a + r.amount_at_stake.minor_units, 0);
  $("renewals-hint").textContent = `${data.renewals.length} renewals, ${money(total, state.currency, true)} at stake`;
}

function shareRows(rows, label, color) {
  return h("div", { class: "components value" }, rows.map((r) => h("div", { class: "row" },
    h("span", { text: `${label(r)} (${count(r.accounts)})` }),
    h("div", { class: "bar" }, h("i", { style: `width:${(r.revenue_share * 100).toFixed(1)}%;background:${color(r)}` })),
    h("span", { class: "num", text: pct(r.revenue_share, 0) }))));
}

async function renderValue() {
  if (!state.scoring) return;
  const seg = $("segment").value;
  const data = await api(`/api/v1/scoring/segments${seg ? `?segment=${seg}` : ""}`);
  $("value-row").hidden = false;
  const tierColor = { DIAMOND: "var(--navy)", GOLD: "var(--amber)", STRATEGIC: "var(--blue)", POTENTIAL: "var(--right)", GENERAL: "#9aa3b5", PROBLEM: "var(--red)" };
  $("tiers").replaceChildren(data.tiers.length ? shareRows(data.tiers, (t) => TIER_LABEL[t.tier] || t.tier, (t) => tierColor[t.tier] || "var(--blue)") : empty("No scored accounts"));
  $("tiers-hint").textContent = `${count(data.accounts)} scored accounts · top 20% carry ${pct(data.top_20_percent_share, 0)} of MRR`;
  const quadColor = { A: "var(--green)", B: "var(--amber)", C: "var(--blue)", D: "#9aa3b5", E: "var(--red)" };
  $("quadrants").replaceChildren(data.quadrants.length ? shareRows(data.quadrants, (q) => QUADRANT_LABEL[q.quadrant] || q.quadrant, (q) => quadColor[q.quadrant] || "var(--blue)") : empty("No scored accounts"));
}

/// The signed-in person's book: the accounts where their e-mail is the CSM
/// or the owner.
async function renderMyBook() {
  const email = state.session && state.session.email;
  $("my-book-card").hidden = !email;
  if (!email) return;
  const q = encodeURIComponent(email);
  const [asCsm, asOwner] = await Promise.all([
    api(`/api/v1/accounts?csm=${q}&page_size=1000`),
    api(`/api/v1/accounts?owner=${q}&page_size=1000`),
  ]);
  const byId = new Map();
  for (const a of [...asCsm.accounts, ...asOwner.accounts]) byId.set(a.id, a);
  const accounts = [...byId.values()].sort((a, b) => a.name.localeCompare(b.name));
  $("my-book-hint").textContent = `${count(accounts.length)} accounts where ${email} is the CSM or the owner`;
  $("my-book").replaceChildren(accounts.length ? h("table", {},
    h("thead", {}, h("tr", {}, ...["Account", "Segment", "Status", "Owner", "CSM"].map((t) => h("th", { text: t })))),
    h("tbody", {}, accounts.map((a) => h("tr", { "data-testid": "my-book-row", "data-id": a.id },
      h("td", {}, h("a", { href: `#account=${a.id}`, text: a.name })),
      h("td", { text: SEGMENT_LABEL[a.segment] || "" }),
      h("td", { text: a.status || "" }),
      h("td", { text: a.owner || "-" }),
      h("td", { text: a.csm || "-" }))))) : empty("No account has you as its CSM or owner"));
}

async function loadOverview() {
  const p = period();
  $("as-of").textContent = `${p.startMonth} to ${p.endMonth}`;
  const seg = segmentParam();
  const [mrr, retention, funnel, cohorts] = await Promise.all([
    api(`/api/v1/revenue/mrr?start_month=${p.startMonth}&end_month=${p.endMonth}${seg}`),
    api(`/api/v1/revenue/retention?start=${p.start}&end=${p.now}${seg}`),
    api(`/api/v1/funnel?start=${p.start}&end=${p.end}${seg}`),
    api(`/api/v1/revenue/cohorts?start_month=${p.startMonth}&end_month=${p.endMonth}&months=${Math.min(p.months, 24)}${seg}`),
  ]);
  state.currency = mrr.currency || state.currency;
  state.cohorts = cohorts;
  renderKpis(mrr, retention, funnel);
  renderBowtie(funnel);
  renderWaterfall(mrr);
  renderTrend(mrr);
  renderCohorts();
  await Promise.all([renderMyBook(), renderAtRisk(p), renderHealthList(), renderRenewals(p), renderValue(), renderPlaybooks(p)]);
  document.body.dataset.loaded = "overview";
}

// --- account page ----------------------------------------------------------

function stageClass(stage) {
  const i = STAGES.indexOf(stage);
  if (i < 0) return "out";
  return i < 3 ? "left" : i === 3 ? "knot" : "right";
}

async function loadAccount(id) {
  const far = "2000-01-01T00:00:00Z", future = "2100-01-01T00:00:00Z";
  const [account, journey, renewals, movements] = await Promise.all([
    api(`/api/v1/accounts/${id}`),
    apiOrNull(`/api/v1/accounts/${id}/journey`),
    api(`/api/v1/revenue/renewals?start=${far}&end=${future}&account_id=${id}&page_size=200`),
    api(`/api/v1/revenue/movements?start=${far}&end=${future}&account_id=${id}&page_size=200`),
  ]);
  const mrrNow = movements.movements.length ? movements.movements[movements.movements.length - 1].mrr_after : null;
  $("account-head").replaceChildren(
    h("div", { class: "account-title" },
      h("h1", { text: account.name, "data-testid": "account-name" }),
      journey ? h("span", { class: `band ${journey.current_stage === "CHURNED" || journey.current_stage === "LOST" ? "RED" : "GREEN"}`, text: STAGE_LABEL[journey.current_stage] || journey.current_stage }) : null),
    h("div", { class: "facts" },
      h("span", {}, "Segment ", h("b", { text: SEGMENT_LABEL[account.segment] || account.segment })),
      h("span", {}, "Owner ", h("b", { text: account.owner || "-" })),
      h("span", {}, "CSM ", h("b", { text: account.csm || "-" })),
      h("span", {}, "Industry ", h("b", { text: account.industry || "-" })),
      h("span", {}, "MRR ", h("b", { text: mrrNow ? money(mrrNow.minor_units, mrrNow.currency) : "-" })),
      account.strategic ? h("span", {}, h("b", { text: "Strategic" })) : null,
      h("span", {}, "Since ", h("b", { text: date(account.created_at) }))));

  if (journey && journey.visits.length) {
    $("account-journey").replaceChildren(h("div", { class: "timeline", "data-testid": "journey" },
      journey.visits.map((v) => h("div", { class: `visit ${stageClass(v.stage)}` },
        h("div", { class: "s", text: STAGE_LABEL[v.stage] || v.stage }),
        h("div", { text: date(v.entered_at) }),
        h("div", { text: days(v.duration_seconds) })))));
  } else {
    $("account-journey").replaceChildren(empty("No stage recorded yet"));
  }

  const subscriptionIds = [...new Set(renewals.renewals.map((r) => r.subscription_id))];
  const subs = (await Promise.all(subscriptionIds.map((s) => apiOrNull(`/api/v1/subscriptions/${s}`)))).filter(Boolean);
  $("account-subscriptions").replaceChildren(subs.length
    ? h("table", {}, h("thead", {}, h("tr", {}, h("th", { text: "Plan" }), h("th", { class: "num", text: "Qty" }), h("th", { text: "Billing" }), h("th", { text: "Renews" }), h("th", { class: "num", text: "MRR" }))),
      h("tbody", {}, subs.map((x) => h("tr", {},
        h("td", { text: x.terms ? x.terms.plan : "-" }), h("td", { class: "num", text: x.terms ? x.terms.quantity : "-" }),
        h("td", { text: x.billing_interval.toLowerCase() }),
        h("td", { text: x.cancelled_at ? `cancelled ${date(x.cancelled_at)}` : date(x.term_end_at) }),
        h("td", { class: "num", text: money(x.mrr.minor_units, x.mrr.currency) })))))
    : empty("No subscription with a renewal date"));

  $("account-movements").replaceChildren(movements.movements.length
    ? h("table", {}, h("thead", {}, h("tr", {}, h("th", { text: "Date" }), h("th", { text: "Movement" }), h("th", { class: "num", text: "Change" }), h("th", { class: "num", text: "MRR after" }))),
      h("tbody", {}, movements.movements.slice().reverse().map((m) => h("tr", {},
        h("td", { text: date(m.occurred_at) }), h("td", { text: m.type.toLowerCase() }),
        h("td", { class: "num", text: money(m.amount.minor_units, m.amount.currency) }),
        h("td", { class: "num", text: money(m.mrr_after.minor_units, m.mrr_after.currency) })))))
    : empty("No MRR movement"));

  if (state.scoring) {
    const [health, alerts] = await Promise.all([
      apiOrNull(`/api/v1/accounts/${id}/health`),
      api(`/api/v1/scoring/alerts?account_id=${id}&page_size=20`),
    ]);
    renderHealth(health);
    $("account-alerts").replaceChildren(alerts.alerts.length
      ? h("table", { "data-testid": "alerts" }, h("tbody", {}, alerts.alerts.map((a) => h("tr", {},
        h("td", { text: date(a.created_at) }),
        h("td", {}, h("span", { class: `band ${a.state === "OPEN" ? "RED" : "GREEN"}`, text: a.state.toLowerCase() })),
        h("td", { class: "reason", text: `${ALERT_LABEL[a.kind] || a.kind}: ${a.message}` })))))
      : empty("No alert"));
  } else {
    $("account-health").replaceChildren(empty("Health scores appear once the scoring service runs"));
    $("account-alerts").replaceChildren(empty("Alerts appear once the scoring service runs"));
  }
  await renderAccountSuccess(id);
  $("account-changes").replaceChildren();
  $("show-changes").onclick = () => renderChanges(id);
  document.body.dataset.loaded = "account";
}

function renderHealth(health) {
  if (!health) { $("account-health").replaceChildren(empty("No health score yet")); return; }
  const color = (v) => (v < 50 ? "var(--red)" : v <= 75 ? "var(--amber)" : "var(--green)");
  $("account-health").replaceChildren(
    h("div", { class: "account-title" },
      h("h1", { text: `${Math.round(health.score)}`, "data-testid": "health-score" }),
      h("span", { class: `band ${health.band}`, text: health.band }),
      h("span", { class: "hint", text: [
        health.churn_risk !== null && health.churn_risk !== undefined ? `churn risk ${pct(health.churn_risk, 0)}` : null,
        health.delta_30d !== null && health.delta_30d !== undefined ? `${health.delta_30d >= 0 ? "+" : ""}${health.delta_30d} in 30 days` : null,
        health.tier && health.tier !== "UNSPECIFIED" ? `tier ${health.tier.toLowerCase()}` : null,
      ].filter(Boolean).join(" · ") })),
    h("div", { class: "components" }, (health.components || []).map((c) => [
      h("div", { class: "row" }, h("span", { text: COMPONENT_LABEL[c.component] || c.component }), h("div", { class: "bar" }, h("i", { style: `width:${c.score}%;background:${color(c.score)}` })), h("span", { class: "num", text: Math.round(c.score) })),
      h("div", { class: "why", text: c.reason || "" }),
    ])),
    (health.missing || []).length
      ? h("div", { class: "hint", text: `No data yet (weight left out): ${health.missing.map((m) => COMPONENT_LABEL[m] || m).join(", ")}` })
      : null);
}


// --- success: playbooks, CTAs, timeline, work ---------------------------------

const OUTCOMES = ["", "saved", "lost", "won", "not needed", "closed by itself"];
const label = (x) => (x || "").toLowerCase().replace(/_/g, " ");

async function renderPlaybooks(p) {
  $("playbooks-card").hidden = !state.success;
  if (!state.success) return;
  const list = await api("/api/v1/success/playbooks");
  if (!list.playbooks.length) { $("playbooks").replaceChildren(empty("No playbook yet")); return; }
  const start = new Date(Date.now() - 365 * 86400e3).toISOString().slice(0, 19) + "Z";
  const rows = await Promise.all(list.playbooks.map(async (pb) => [pb,
    await api(`/api/v1/success/playbooks/${pb.id}/effectiveness?start=${start}&end=${p.end}`)]));
  $("playbooks").replaceChildren(h("table", { "data-testid": "playbooks" },
    h("thead", {}, h("tr", {}, h("th", { text: "Playbook" }), h("th", { text: "Mode" }), h("th", { class: "num", text: "CTAs" }),
      h("th", { class: "num", text: "In SLA" }), h("th", { text: "Outcomes" }), h("th", { class: "num", text: "Churn, treated" }),
      h("th", { class: "num", text: "Churn, comparison" }), h("th", { text: "Effect" }))),
    h("tbody", {}, rows.map(([pb, e]) => h("tr", {},
      h("td", { text: pb.name }),
      h("td", { text: pb.mode === "HOLDOUT" ? `holdout ${pb.holdout_percent}%` : label(pb.mode) }),
      h("td", { class: "num", text: count(e.ctas_opened) }),
      h("td", { class: "num", text: pct(e.closed_within_sla, 0) }),
      h("td", { text: e.outcomes.map((n, i) => (i && n ? `${n} ${OUTCOMES[i]}` : null)).filter(Boolean).join(", ") || "-" }),
      h("td", { class: "num", text: `${pct(e.treated.churn_rate, 0)} of ${e.treated.matured}` }),
      h("td", { class: "num", text: `${pct(e.comparison.churn_rate, 0)} of ${e.comparison.matured}` }),
      h("td", { class: "reason", text: e.effect === null || e.effect === undefined
        ? (e.note || "-")
        : `${e.effect >= 0 ? "+" : ""}${(e.effect * 100).toFixed(1)} pts (${(e.effect_low * 100).toFixed(1)} to ${(e.effect_high * 100).toFixed(1)})${e.observational ? ", observational" : ""}` }))))));
}

function ctaRows(ctas, withAccount, names) {
  const now = Date.now();
  return h("table", { "data-testid": "ctas" },
    h("thead", {}, h("tr", {}, withAccount ? h("th", { text: "Account" }) : null, h("th", { text: "Due" }), h("th", { text: "Type" }),
      h("th", { text: "Why" }), h("th", { text: "Owner" }), h("th", { text: "Status" }))),
    h("tbody", {}, ctas.map((c) => h("tr", {},
      withAccount ? h("td", {}, h("a", { href: `#account=${c.account_id}`, text: (names[c.account_id] || {}).name || c.account_id })) : null,
      h("td", { class: c.status !== "CLOSED" && c.due_at && Date.parse(c.due_at) < now ? "overdue" : "", text: date(c.due_at) }),
      h("td", { text: `${label(c.priority)} ${label(c.type)}` }),
      h("td", { class: "reason", text: c.reason }),
      h("td", { text: c.owner || "-" }),
      h("td", { text: c.status === "CLOSED" ? OUTCOMES[["", "SAVED", "LOST", "WON", "NOT_NEEDED", "AUTO_CLOSED"].indexOf(c.outcome)] || "closed" : label(c.status) })))));
}

/// Who changed the account: every service's audit log (an admin key's
/// view), read when asked for.
async function renderChanges(id) {
  let answer;
  try {
    answer = await api(`/api/v1/accounts/${id}/changes?limit=20`);
  } catch (e) {
    $("account-changes").replaceChildren(empty(e instanceof ApiError && e.status === 403
      ? "An admin key shows who changed what" : `Changes cannot be read: ${e.message}`));
    return;
  }
  const others = (targets) => targets.filter((t) => t !== `account:${id}`).join(", ");
  $("account-changes").replaceChildren(answer.changes.length
    ? h("table", { "data-testid": "changes" }, h("tbody", {}, answer.changes.map((c) => h("tr", {},
      h("td", { text: date(c.occurred_at) }), h("td", { text: c.principal }),
      h("td", { text: `${c.service} ${c.method}` }), h("td", { class: "reason", text: others(c.targets) })))))
    : empty("No change recorded"));
}

async function renderAccountSuccess(id) {
  $("account-success").hidden = !state.success;
  if (!state.success) return;
  const [open, closed, timeline] = await Promise.all([
    api(`/api/v1/success/ctas?account_id=${id}&page_size=50`),
    api(`/api/v1/success/ctas?account_id=${id}&status=CLOSED&page_size=20`),
    api(`/api/v1/accounts/${id}/timeline?page_size=20`),
  ]);
  const ctas = open.ctas.concat(closed.ctas);
  $("account-ctas").replaceChildren(ctas.length ? ctaRows(ctas, false, {}) : empty("No call to action"));
  $("account-timeline").replaceChildren(timeline.activities.length
    ? h("table", { "data-testid": "timeline" }, h("tbody", {}, timeline.activities.map((a) => h("tr", {},
      h("td", { text: date(a.occurred_at) }), h("td", { text: label(a.kind) }),
      h("td", { class: "reason", text: a.text }), h("td", { text: a.author })))))
    : empty("Nothing on the timeline yet"));
  if (state.session && !$("log-author").value) $("log-author").value = state.session.email || state.session.name;
  $("log-form").onsubmit = async (ev) => {
    ev.preventDefault();
    $("log-error").textContent = "";
    try {
      await post(`/api/v1/accounts/${id}/timeline`, { kind: $("log-kind").value, author: $("log-author").value.trim(), text: $("log-text").value.trim() });
      $("log-text").value = "";
      await renderAccountSuccess(id);
    } catch (e) {
      const denied = state.session ? `You may not log on this account: ${e.message}` : "This key may read but not write: sign in with a write key to log.";
      $("log-error").textContent = e.status === 403 ? denied : e.message;
    }
  };
}

async function renderBook() {
  const p = period();
  const book = await api(`/api/v1/success/book?by=CSM&start=${p.start}&end=${p.end}${mineParam()}`);
  if (!book.books.length) { $("work-book").replaceChildren(empty(mineParam() ? "No account in your book yet" : "No account yet")); return; }
  const num = (text) => h("td", { class: "num", text });
  $("work-book").replaceChildren(h("table", { "data-testid": "book" },
    h("thead", {}, h("tr", {}, h("th", { text: "CSM" }), ...["Accounts", "ARR", "Health", "Red", "High risk", "Open CTAs",
      "Overdue", "Renewals 90 d", "Forecast", "GRR", "NRR"].map((t) => h("th", { class: "num", text: t })))),
    h("tbody", {}, book.books.map((b) => h("tr", {},
      h("td", { text: b.person || "(none)" }),
      num(count(b.accounts)),
      num(money(b.arr.minor_units, book.currency, true)),
      num(b.average_health === null || b.average_health === undefined ? "-" : b.average_health.toFixed(0)),
      num(count(b.red)),
      num(count(b.high_risk)),
      num(count(b.open_ctas)),
      num(count(b.overdue_ctas)),
      num(`${count(b.renewals_90d)} (${money(b.renewal_amount_at_stake.minor_units, book.currency, true)})`),
      num(money(b.renewal_forecast.minor_units, book.currency, true)),
      num(pct(b.grr)),
      num(pct(b.nrr)))))));
}

async function loadWork(owner) {
  const open = await api("/api/v1/success/ctas?page_size=1000");
  const owners = [...new Set(open.ctas.map((c) => c.owner).filter(Boolean))].sort();
  const chosen = owner || owners[0] || "";
  $("work-owner").replaceChildren(...owners.map((o) => h("option", { value: o, text: o })));
  $("work-owner").value = chosen;
  $("work-owner").onchange = () => { window.location.hash = `#work=${encodeURIComponent($("work-owner").value)}`; };
  const mine = chosen ? await api(`/api/v1/success/ctas?owner=${encodeURIComponent(chosen)}&page_size=200`) : { ctas: [] };
  const names = await accountNames([...new Set(mine.ctas.map((c) => c.account_id))]);
  $("work-ctas").replaceChildren(mine.ctas.length ? ctaRows(mine.ctas, true, names) : empty("No open call to action"));
  await renderBook();
  document.body.dataset.loaded = "work";
}

// --- routing ---------------------------------------------------------------

async function route() {
  document.body.dataset.loaded = "";
  $("signin").hidden = true;
  $("signin-oidc").hidden = true;
  $("filters").hidden = false;
  showUser();
  showBanner("");
  const match = /^#account=([0-9a-fA-F-]{36})$/.exec(window.location.hash);
  const work = /^#work(?:=(.*))?$/.exec(window.location.hash);
  const show = (page) => { for (const p of ["overview", "account", "work"]) $(p).hidden = p !== page; };
  try {
    detectPerson();
    showScope();
    if (match) {
      show("account");
      await loadAccount(match[1]);
    } else if (work && state.success) {
      show("work");
      $("filters").hidden = true;
      await loadWork(work[1] ? decodeURIComponent(work[1]) : "");
    } else {
      show("overview");
      await loadOverview();
    }
  } catch (e) {
    if (e instanceof ApiError && (e.status === 401 || e.status === 403) && state.signIn) {
      if (e.status === 401) { state.session = null; state.person = null; }
      showSignIn(e.status === 401 ? "Your session ended: sign in again." : "Your roles may not read these figures.");
    } else if (e instanceof ApiError && e.status === 400 && state.scope === "mine" && !state.session) {
      // A key with scopes only has no book: everyone's figures, and no toggle.
      state.person = false;
      state.scope = "all";
      await route();
      showBanner("This key has no book of its own (it has scopes only): showing every account.");
    } else if (e instanceof ApiError && (e.status === 401 || e.status === 403)) {
      showSignIn(e.status === 401 ? "That key was not accepted." : "That key may not read these figures.");
    } else {
      showBanner(`Could not load the figures: ${e.message}`);
    }
  }
}

async function main() {
  const config = await fetch("/dashboard/config.json").then((r) => r.json()).catch(() => ({}));
  await initSession(config);
  if (!state.signIn) await initKey(config);
  const doc = await fetch("/openapi.json").then((r) => r.json()).catch(() => ({ paths: {} }));
  state.scoring = Boolean(doc.paths && doc.paths["/api/v1/scoring/at-risk"]);
  state.success = Boolean(doc.paths && doc.paths["/api/v1/success/ctas"]);
  $("work-link").hidden = !state.success;
  $("signin-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    state.key = $("key").value.trim();
    state.person = null;
    localStorage.setItem(KEY_STORE, state.key);
    route();
  });
  $("sign-out").addEventListener("click", signOut);
  for (const id of SCOPE_TOGGLES) {
    $(id).addEventListener("click", (ev) => {
      const scope = ev.target && ev.target.dataset && ev.target.dataset.scope;
      if (!scope || scope === state.scope) return;
      state.scope = scope;
      route();
    });
  }
  $("period").addEventListener("change", route);
  $("segment").addEventListener("change", route);
  $("cohort-toggle").addEventListener("click", (ev) => {
    const metric = ev.target && ev.target.dataset && ev.target.dataset.metric;
    if (!metric) return;
    state.cohortMetric = metric;
    for (const b of $("cohort-toggle").querySelectorAll("button")) b.classList.toggle("on", b.dataset.metric === metric);
    renderCohorts();
  });
  window.addEventListener("hashchange", route);
  if (state.signIn ? !state.session : !state.key) showSignIn("");
  else route();
}

main();
