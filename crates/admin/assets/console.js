// Warden console: plain JavaScript, no dependencies, no build step. Every value from the
// server reaches the page through textContent / DOM nodes, never as HTML.
"use strict";

const S = { me: null, csrf: null, events: null, approvals: [], drafts: {}, timer: null };

// ---------------------------------------------------------------- helpers

function el(tag, attrs, ...kids) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") e.className = v;
    else if (k === "text") e.textContent = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v === true ? "" : v);
  }
  for (const k of kids.flat()) {
    if (k === null || k === undefined || k === false) continue;
    e.append(k instanceof Node ? k : document.createTextNode(String(k)));
  }
  return e;
}
const $ = (id) => document.getElementById(id);

async function api(method, path, body, background) {
  const headers = { Accept: "application/json" };
  // Polling is not the person's activity: it must not keep an unattended session alive.
  if (background) headers["X-Warden-Background"] = "1";
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && S.csrf) headers["X-CSRF-Token"] = S.csrf;
  const r = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (r.status === 401 && path !== "/api/v1/login") { signedOut(); throw new Error("signed out"); }
  if (!r.ok) {
    let msg = r.status + " " + r.statusText;
    try { const j = await r.json(); if (j.error) msg = j.error; } catch (_) { /* not JSON */ }
    const e = new Error(msg); e.status = r.status; throw e;
  }
  return r;
}
const getJSON = async (path, background) => (await api("GET", path, undefined, background)).json();

function toast(msg) {
  const t = $("toast");
  t.textContent = msg;
  clearTimeout(toast.t);
  toast.t = setTimeout(() => { t.textContent = ""; }, 6000);
}

function ago(ts) {
  const s = Math.max(0, (Date.now() - Date.parse(ts)) / 1000);
  return dur(s) + " ago";
}
function dur(s) {
  s = Math.max(0, s);
  if (s < 1) return Math.round(s * 1000) + " ms";
  if (s < 90) return Math.floor(s) + " s";
  if (s < 5400) return Math.floor(s / 60) + " min " + Math.floor(s % 60) + " s";
  return (s / 3600).toFixed(1) + " h";
}
const short = (ts) => (ts || "").replace("T", " ").slice(0, 19);
const kindClass = (k) => "k-" + String(k).replace(/\./g, "-");

// SQL highlighting: a small tokenizer (comments, strings, numbers, keywords).
const KEYWORDS = new Set(("select from where and or not insert into values update set delete " +
  "create alter drop table index view truncate grant revoke begin commit rollback join left right " +
  "inner outer full on as group by order having limit offset returning with union all distinct " +
  "case when then else end null is in like ilike between exists primary key references default " +
  "copy to cascade if replace function procedure call execute prepare deallocate show explain analyze").split(" "));
function sql(text) {
  const code = el("code", { class: "sql" });
  const re = /(--[^\n]*|\/\*[\s\S]*?\*\/)|('(?:[^']|'')*'?)|("(?:[^"]|"")*"?)|(\b\d+(?:\.\d+)?\b)|([A-Za-z_][A-Za-z0-9_$]*)|(\s+|.)/g;
  let m;
  while ((m = re.exec(text)) !== null) {
    if (m[1]) code.append(el("span", { class: "c", text: m[1] }));
    else if (m[2]) code.append(el("span", { class: "s", text: m[2] }));
    else if (m[3]) code.append(document.createTextNode(m[3]));
    else if (m[4]) code.append(el("span", { class: "n", text: m[4] }));
    else if (m[5]) code.append(KEYWORDS.has(m[5].toLowerCase()) ? el("span", { class: "k", text: m[5] }) : document.createTextNode(m[5]));
    else code.append(document.createTextNode(m[6]));
  }
  return code;
}
function statement(kind, text) {
  return kind === "sql" || kind === undefined ? sql(text || "") : el("code", { class: "sql", text: text || "" });
}

// ---------------------------------------------------------------- sign-in and routing

function show(view) {
  for (const s of document.querySelectorAll(".view")) s.hidden = s.id !== "view-" + view;
  for (const a of document.querySelectorAll("#nav a")) {
    if (a.dataset.view === view || (view === "replay" && a.dataset.view === "sessions")) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
}

function signedOut() {
  S.me = null; S.csrf = null;
  if (S.events) { S.events.close(); S.events = null; }
  $("nav").hidden = true; $("who").hidden = true; $("chain").hidden = true;
  show("signin");
  $("credential").focus();
}

async function signedIn(me) {
  S.me = me; S.csrf = me.csrf_token;
  $("nav").hidden = false; $("who").hidden = false;
  $("who-name").textContent = me.principal + (me.groups && me.groups.length ? " (" + me.groups.join(", ") + ")" : "");
  for (const a of document.querySelectorAll('#nav a[data-view="sessions"], #nav a[data-view="audit"], #nav a[data-view="overview"]')) a.hidden = !me.auditor;
  startEvents();
  if (me.auditor) { $("chain").hidden = false; chainStatus(); }
  route();
}

async function boot() {
  $("signin-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    $("signin-error").textContent = "";
    try {
      const r = await api("POST", "/api/v1/login", { credential: $("credential").value });
      $("credential").value = "";
      await signedIn(await r.json());
    } catch (e) { $("signin-error").textContent = e.message; }
  });
  $("signout").addEventListener("click", async () => {
    try { await api("POST", "/api/v1/logout"); } catch (_) { /* already gone */ }
    signedOut();
  });
  window.addEventListener("hashchange", route);
  wireSessions(); wireReplay(); wireAudit();
  setInterval(tick, 1000);
  setInterval(() => { if (S.me && S.me.auditor) chainStatus(); }, 15000);
  try {
    const r = await fetch("/api/v1/me", { credentials: "same-origin" });
    if (r.ok) await signedIn(await r.json()); else signedOut();
  } catch (_) { signedOut(); }
}

function route() {
  if (!S.me) return signedOut();
  const h = location.hash.replace(/^#\/?/, "");
  const [view, ...rest] = h.split("/");
  const auditorOnly = ["sessions", "session", "audit", "overview"];
  if (auditorOnly.includes(view) && !S.me.auditor) { location.hash = "#/inbox"; return; }
  if (S.me.auditor) chainSoon();
  if (view === "sessions") { show("sessions"); loadSessions(); }
  else if (view === "session") { show("replay"); loadReplay(decodeURIComponent(rest.join("/"))); }
  else if (view === "audit") { show("audit"); search(false); }
  else if (view === "overview") { show("overview"); loadOverview(); }
  else { show("inbox"); renderInbox(); }
}

// ---------------------------------------------------------------- chain status (every page)

async function chainStatus() {
  try {
    const c = await getJSON("/api/v1/chain", true);
    const box = $("chain");
    box.replaceChildren();
    box.append("Evidence chain: head #" + c.head_seq + " · ");
    if (c.checkpoint) box.append("last signed checkpoint #" + c.checkpoint.tree_size + ", " + ago(c.checkpoint.ts) + " · ");
    else box.append("no signed checkpoint yet · ");
    const v = c.verify;
    if (!v) box.append(el("span", { text: c.verifying ? "verifying…" : "not verified yet" }));
    else if (v.ok) box.append(el("span", { class: "good", text: "verified intact" }), " " + ago(v.at) + " (" + v.records + " records, " + v.checkpoints_verified + " checkpoints" + (v.signatures_checked ? ", signatures checked" : "") + ")");
    else box.append(el("span", { class: "bad", text: "VERIFICATION FAILED" }), " " + ago(v.at) + ": " + (v.problem ? "record " + v.problem.seq + " " + v.problem.kind + " — " + v.problem.what : v.error));
    box.append(" ", el("button", { type: "button", class: "link-dark", onclick: async () => { await api("POST", "/api/v1/chain/verify"); toast("verification started"); setTimeout(chainStatus, 1500); } }, "Verify now"));
  } catch (_) { /* shown again on the next tick */ }
}

// Refresh the chain bar shortly after activity (at most once a second).
function chainSoon() {
  if (chainSoon.t) return;
  chainSoon.t = setTimeout(() => { chainSoon.t = null; chainStatus(); }, 1000);
}

// ---------------------------------------------------------------- approvals inbox (live)

function startEvents() {
  if (S.events) S.events.close();
  const es = new EventSource("/api/v1/approvals/events");
  S.events = es;
  es.addEventListener("approvals", (ev) => {
    S.approvals = JSON.parse(ev.data).approvals;
    $("live-state").textContent = "live";
    renderInbox();
    if (S.me && S.me.auditor) chainSoon();
  });
  es.onerror = () => {
    $("live-state").textContent = "reconnecting…";
    fetch("/api/v1/me", { credentials: "same-origin", headers: { "X-Warden-Background": "1" } }).then((r) => { if (r.status === 401) signedOut(); });
  };
}

function renderInbox() {
  const pending = S.approvals.filter((a) => a.state === "pending");
  const decided = S.approvals.filter((a) => a.state !== "pending").reverse();
  $("pending-count").textContent = pending.length ? String(pending.length) : "";
  if ($("view-inbox").hidden) return;
  // Keep what the user is typing and where the focus is across live updates.
  const focused = document.activeElement && document.activeElement.id;
  const box = $("pending");
  box.replaceChildren();
  if (!pending.length) box.append(el("p", { class: "hint", text: "Nothing is waiting for a decision." }));
  for (const a of pending) box.append(holdCard(a));
  const tb = $("history").tBodies[0];
  tb.replaceChildren();
  for (const a of decided.slice(0, 200)) {
    tb.append(el("tr", {},
      el("td", { class: "mono" }, a.id),
      el("td", { class: "state-" + a.state, text: a.state }),
      el("td", {}, a.requester, a.on_behalf_of ? " for " + a.on_behalf_of : ""),
      el("td", { text: a.connection }),
      el("td", {}, statement(a.action_kind, a.statement)),
      el("td", { text: (a.decided_by || []).join(", ") || "—" }),
      el("td", { text: short(a.decided_at || a.created_at) }),
      el("td", { text: a.reason || (a.votes && a.votes.length ? a.votes.map((v) => v.comment).filter(Boolean).join("; ") : "") }),
    ));
  }
  if (focused && $(focused)) { $(focused).focus(); }
  tick();
}

function holdCard(a) {
  const cid = "comment-" + a.id;
  const waiting = el("span", { class: "waiting", "data-since": a.created_at });
  const left = el("span", { class: "left", "data-until": a.expires_at });
  const dl = el("dl", {},
    el("dt", { text: "Requester" }), el("dd", { class: "requester", text: a.requester }),
    el("dt", { text: "On behalf of" }), el("dd", { text: a.on_behalf_of || "—" }),
    el("dt", { text: "Connection" }), el("dd", { text: a.connection + " (" + a.protocol + ")" }),
    el("dt", { text: "Purpose" }), el("dd", { text: a.purpose || "— (none declared)" }),
    el("dt", { text: "Rule" }), el("dd", { text: a.rules.join(", ") }),
    el("dt", { text: "Approvers" }), el("dd", { text: a.approvers.join(", ") + (a.min_approvals > 1 ? " — " + a.min_approvals + " needed, " + a.votes.filter((v) => v.decision === "approve").length + " so far" : "") }),
    el("dt", { text: "Session" }), el("dd", { class: "mono" }, S.me && S.me.auditor ? el("a", { href: "#/session/" + encodeURIComponent(a.session_id), text: a.session_id }) : a.session_id),
    el("dt", { text: "Waiting" }), el("dd", {}, waiting),
    el("dt", { text: "Time left" }), el("dd", {}, left),
  );
  const params = a.params && a.params.length ? el("p", { class: "hint", text: "Parameters: " + a.params.map((p) => (p === null ? "NULL" : "'" + p + "'")).join(", ") }) : null;
  let decide;
  if (a.may_decide) {
    const ta = el("textarea", { id: cid, name: "comment", rows: "2", oninput: (e) => { S.drafts[a.id] = e.target.value; } });
    ta.value = S.drafts[a.id] || "";
    const go = (approve) => async (e) => {
      const buttons = e.target.parentElement.querySelectorAll("button");
      buttons.forEach((b) => { b.disabled = true; });
      try {
        const r = await api("POST", "/api/v1/approvals/" + encodeURIComponent(a.id) + "/" + (approve ? "approve" : "deny"), { comment: ta.value });
        const v = await r.json();
        delete S.drafts[a.id];
        toast(a.id + ": " + v.state + (v.state === "pending" ? " (vote recorded; more approvals needed)" : ""));
      } catch (err) { toast(a.id + ": " + err.message); buttons.forEach((b) => { b.disabled = false; }); }
    };
    decide = el("div", { class: "decide" },
      el("label", { for: cid, text: "Comment (recorded as evidence)" }), ta,
      el("div", { class: "buttons" },
        el("button", { type: "button", class: "approve", "data-action": "approve", onclick: go(true) }, "Approve"),
        el("button", { type: "button", class: "deny", "data-action": "deny", onclick: go(false) }, "Deny")));
  } else {
    decide = el("div", { class: "decide" }, el("p", { class: "hint why-not", text: "You cannot decide this request: " + (a.why_not || "not an approver") }));
  }
  return el("article", { class: "card hold", id: "hold-" + a.id, "aria-labelledby": "h-" + a.id },
    el("div", {},
      el("h3", { id: "h-" + a.id }, el("span", { class: "state-pending", text: "Pending" }), el("code", { text: a.id })),
      statement(a.action_kind, a.statement), params, dl),
    decide);
}

function tick() {
  for (const w of document.querySelectorAll("[data-since]")) w.textContent = dur((Date.now() - Date.parse(w.dataset.since)) / 1000);
  for (const l of document.querySelectorAll("[data-until]")) {
    const s = (Date.parse(l.dataset.until) - Date.now()) / 1000;
    l.textContent = s > 0 ? dur(s) : "expiring";
    l.classList.toggle("soon", s < 60);
  }
}

// ---------------------------------------------------------------- sessions and replay

function formQuery(form) {
  const p = new URLSearchParams();
  for (const [k, v] of new FormData(form)) if (String(v).trim() !== "") p.set(k, String(v).trim());
  return p;
}

function wireSessions() {
  $("sessions-form").addEventListener("submit", (e) => { e.preventDefault(); loadSessions(); });
}

async function loadSessions() {
  const q = formQuery($("sessions-form"));
  const t0 = performance.now();
  try {
    const { sessions } = await getJSON("/api/v1/sessions?" + q);
    const tb = $("sessions").tBodies[0];
    tb.replaceChildren();
    for (const s of sessions) {
      const end = s.ended_at || s.last_activity;
      tb.append(el("tr", {},
        el("td", { class: "mono" }, el("a", { href: "#/session/" + encodeURIComponent(s.session_id), text: s.session_id.slice(0, 12) + "…", title: s.session_id, "aria-label": "Replay session " + s.session_id })),
        el("td", { text: s.principal || "—" }), el("td", { text: s.connection || "—" }),
        el("td", { text: short(s.started_at) }),
        el("td", { class: "num", text: dur((Date.parse(end) - Date.parse(s.started_at)) / 1000) }),
        el("td", { class: "num", text: s.requests }), el("td", { class: "num" + (s.denied ? " err" : ""), text: s.denied }),
        el("td", { class: "num", text: s.approvals }), el("td", { class: "num" + (s.errors ? " err" : ""), text: s.errors }),
        el("td", { text: s.ended_at ? "ended" : "open" })));
    }
    $("sessions-note").textContent = sessions.length + " session(s), newest first (" + Math.round(performance.now() - t0) + " ms)";
  } catch (e) { $("sessions-note").textContent = e.message; }
}

const R = { records: [], pos: 0, playing: null };

function wireReplay() {
  $("r-first").addEventListener("click", () => step(1 - R.pos));
  $("r-prev").addEventListener("click", () => step(-1));
  $("r-next").addEventListener("click", () => step(1));
  $("r-all").addEventListener("click", () => { stopPlay(); R.pos = R.records.length; paint(); });
  $("r-play").addEventListener("click", () => {
    if (R.playing) return stopPlay();
    if (R.pos >= R.records.length) R.pos = 0;
    $("r-play").textContent = "Pause";
    R.playing = setInterval(() => { if (R.pos >= R.records.length) stopPlay(); else step(1); }, 700);
  });
}
function stopPlay() { clearInterval(R.playing); R.playing = null; $("r-play").textContent = "Play"; }
function step(d) { R.pos = Math.min(R.records.length, Math.max(1, R.pos + d)); paint(); }
function paint() {
  const items = $("timeline").children;
  for (let i = 0; i < items.length; i++) {
    items[i].hidden = i >= R.pos;
    items[i].classList.toggle("current", i === R.pos - 1);
  }
  $("r-pos").textContent = "step " + R.pos + " of " + R.records.length;
  const cur = items[R.pos - 1];
  if (cur && R.pos < R.records.length) cur.scrollIntoView({ block: "nearest" });
}

async function loadReplay(id) {
  stopPlay();
  $("replay-id").textContent = id;
  const box = $("replay-summary");
  box.replaceChildren("Loading…");
  $("timeline").replaceChildren();
  try {
    const r = await getJSON("/api/v1/sessions/" + encodeURIComponent(id));
    const s = r.session;
    $("replay-id").textContent = s.session_id;
    box.replaceChildren(
      el("p", {}, el("b", { text: s.principal || "(unknown principal)" }), " on ", el("b", { text: s.connection || "—" }),
        s.protocol ? " (" + s.protocol + ")" : "", s.client ? " from " + s.client : "", s.purpose ? ", purpose: " + s.purpose : ""),
      el("p", { class: "hint", text: "started " + s.started_at + ", " + (s.ended_at ? "ended " + s.ended_at : "no session.end (open, or the gateway stopped)") +
        " · " + s.requests + " statement(s), " + s.denied + " denied, " + s.approvals + " held for approval, " + s.errors + " error(s) · records #" + s.first_seq + "–#" + s.last_seq +
        (r.truncated ? " · showing the first " + r.records.length : "") }));
    R.records = r.records;
    const t0 = Date.parse(s.started_at);
    const tl = $("timeline");
    r.records.forEach((rec) => tl.append(timelineItem(rec, t0)));
    R.pos = r.records.length;
    paint();
  } catch (e) { box.replaceChildren(el("p", { class: "error", text: e.message })); }
}

function timelineItem(r, t0) {
  const off = "+" + ((Date.parse(r.ts) - t0) / 1000).toFixed(3) + " s";
  const meta = el("div", { class: "meta" }, el("b", { text: off }), el("span", { text: "#" + r.seq }), el("span", { class: "kind", text: r.kind }));
  const li = el("li", { class: kindClass(r.kind) }, meta);
  if (r.decision) meta.append(el("span", { class: "eff-" + r.decision.effect, text: r.decision.effect + (r.decision.rules && r.decision.rules.length ? " · " + r.decision.rules.join(", ") : "") }));
  if (r.action) li.append(statement(r.action.kind, r.action.text));
  if (r.action && r.action.params && r.action.params.length) li.append(el("p", { class: "hint", text: "parameters: " + JSON.stringify(r.action.params) }));
  if (r.approval) {
    const a = r.approval;
    li.append(el("p", {}, "approval ", el("code", { text: a.id }), a.decision ? " — " + a.decision : "", a.approver ? " by " + a.approver : "", a.comment ? ": “" + a.comment + "”" : ""));
  }
  if (r.response) {
    const x = r.response;
    const parts = [x.status.toUpperCase()];
    if (x.tag) parts.push(x.tag);
    if (x.error_code) parts.push(x.error_code + " " + (x.error_message || ""));
    parts.push(x.rows + " row(s)", x.bytes + " B");
    if (x.duration_us !== undefined && x.duration_us !== null) parts.push((x.duration_us / 1000).toFixed(3) + " ms");
    const mv = x.masked_values ? Object.entries(x.masked_values) : [];
    if (mv.length) parts.push("masked " + mv.map(([k, v]) => k + "=" + v).join(", "));
    li.append(el("p", { class: x.status === "ok" ? "" : "err", text: parts.join(" · ") }));
    if (x.masked) li.append(masked(x.masked));
  }
  if (r.principal && r.kind === "session.start") li.append(el("p", { class: "hint", text: "authenticated by " + r.principal.auth.method + (r.principal.groups.length ? ", groups " + r.principal.groups.join(", ") : "") + (r.principal.on_behalf_of ? ", on behalf of " + r.principal.on_behalf_of : "") }));
  if (r.detail) li.append(el("p", { class: "hint", text: r.detail }));
  return li;
}

// Masked results: a table for rows, pretty JSON for bodies.
function masked(m) {
  if (m && Array.isArray(m.columns) && Array.isArray(m.rows)) {
    const t = el("table", { class: "grid" }, el("caption", { class: "sr-only", text: "masked result rows" }),
      el("thead", {}, el("tr", {}, m.columns.map((c) => el("th", { scope: "col", text: c })))),
      el("tbody", {}, m.rows.map((row) => el("tr", {}, row.map((v) => el("td", { class: "mono", text: v === null ? "NULL" : String(v) }))))));
    const note = m.truncated ? el("p", { class: "hint", text: "evidence keeps " + m.rows_kept + " of " + m.rows_total + " rows" }) : null;
    return el("div", { class: "scroll" }, t, note);
  }
  let body = m;
  if (m && typeof m.body === "string") { try { body = Object.assign({}, m, { body: JSON.parse(m.body) }); } catch (_) { /* text body */ } }
  return el("pre", { class: "json", text: JSON.stringify(body, null, 2) });
}

// ---------------------------------------------------------------- audit search

const A = { next: null };

function wireAudit() {
  $("audit-form").addEventListener("submit", (e) => { e.preventDefault(); search(false); });
  $("audit-form").addEventListener("input", linkDownloads);
  $("more").addEventListener("click", () => search(true));
  $("export").addEventListener("click", exportBundle);
}

function linkDownloads() {
  const q = formQuery($("audit-form"));
  q.set("format", "csv"); $("dl-csv").href = "/api/v1/records?" + q;
  q.set("format", "ndjson"); $("dl-json").href = "/api/v1/records?" + q;
}

async function search(more) {
  linkDownloads();
  const q = formQuery($("audit-form"));
  if (more && A.next) q.set("before", A.next);
  const tb = $("records").tBodies[0];
  try {
    const r = await getJSON("/api/v1/records?" + q);
    if (!more) tb.replaceChildren();
    for (const x of r.records) {
      const what = x.action ? statement(x.action.kind, x.action.text)
        : x.response ? x.response.status + " " + (x.response.tag || x.response.error_message || "") + " · " + x.response.rows + " row(s)"
        : x.approval ? (x.approval.id + " " + (x.approval.decision || "requested") + (x.approval.approver ? " by " + x.approval.approver : ""))
        : (x.detail || "");
      tb.append(el("tr", {},
        el("td", { class: "num", text: x.seq }), el("td", { text: short(x.ts) }), el("td", { text: x.kind }),
        el("td", { text: x.principal ? x.principal.id : "—" }), el("td", { text: x.connection || "—" }),
        el("td", {}, what),
        el("td", { class: x.decision ? "eff-" + x.decision.effect : "", text: x.decision ? x.decision.effect : "" }),
        el("td", { class: "mono" }, x.session_id ? el("a", { href: "#/session/" + encodeURIComponent(x.session_id), text: x.session_id.slice(0, 8) + "…", "aria-label": "Replay session " + x.session_id }) : "—")));
    }
    A.next = r.next_before;
    $("more").hidden = !A.next;
    $("more").textContent = A.next && r.records.length < 100 && q.get("q")
      ? "Search older records (text search looks at 25 000 records per step; searched back to #" + A.next + ")"
      : "Older records";
  } catch (e) { toast(e.message); }
}

async function exportBundle() {
  const f = formQuery($("audit-form"));
  const body = {};
  for (const k of ["since", "until", "principal", "connection", "kind"]) if (f.get(k)) body[k] = f.get(k);
  const note = $("export-note");
  note.textContent = "exporting…";
  try {
    const r = await api("POST", "/api/v1/evidence/export", body);
    const blob = await r.blob();
    const cd = r.headers.get("Content-Disposition") || "";
    const name = (cd.match(/filename="([^"]+)"/) || [])[1] || "warden-evidence.json";
    const url = URL.createObjectURL(blob);
    const a = el("a", { href: url, download: name });
    document.body.append(a); a.click(); a.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
    note.textContent = "Exported " + (r.headers.get("X-Warden-Records") || "?") + " record(s) to " + name + ". Verify offline: warden evidence verify " + name + " --public-key signing.pub";
  } catch (e) { note.textContent = "Export failed: " + e.message; }
}

// ---------------------------------------------------------------- overview

async function loadOverview() {
  try {
    const o = await getJSON("/api/v1/overview");
    const act = $("active");
    act.replaceChildren();
    if (!o.active.length) act.append(el("li", { class: "hint", text: "nobody" }));
    for (const s of o.active) act.append(el("li", {}, el("b", { text: s.principal || "?" }), " on " + (s.connection || "?") + ", last " + ago(s.last_activity) + " — ", el("a", { href: "#/session/" + encodeURIComponent(s.session_id), text: "session " + s.session_id.slice(0, 8) })));
    const max = Math.max(1, ...o.days.map((d) => d.records));
    const days = $("days").tBodies[0];
    days.replaceChildren();
    for (const d of o.days.slice().reverse()) {
      days.append(el("tr", {}, el("td", { text: d.day }),
        el("td", { class: "num" }, el("span", { class: "bar", style: null, "data-w": d.records / max }), String(d.records)),
        el("td", { class: "num", text: d.requests }), el("td", { class: "num", text: d.denied }),
        el("td", { class: "num", text: d.approvals }), el("td", { class: "num", text: d.auth_failed })));
    }
    for (const b of document.querySelectorAll(".bar[data-w]")) b.style.width = Math.round(Number(b.dataset.w) * 80) + "px";
    const ct = $("connections").tBodies[0];
    ct.replaceChildren();
    for (const c of o.connections) ct.append(el("tr", {}, el("td", { text: c.name }), el("td", { text: c.protocol }), el("td", { class: "mono", text: c.upstream + (c.database ? " / " + c.database : "") }), el("td", { text: c.description || "" })));
    const rt = $("rules").tBodies[0];
    rt.replaceChildren();
    for (const r of o.rules) rt.append(el("tr", {}, el("td", { class: "mono", text: r.id }), el("td", { class: "eff-" + r.effect, text: r.effect }),
      el("td", { text: r.principals.join(", ") }), el("td", { text: r.connections.join(", ") }),
      el("td", { text: [r.sql ? "sql: " + r.sql.join(", ") : "", r.http ? "http: " + r.http.join(", ") : ""].filter(Boolean).join("; ") }),
      el("td", { text: (r.approvers || []).join(", ") })));
  } catch (e) { toast(e.message); }
}

document.addEventListener("DOMContentLoaded", boot);
