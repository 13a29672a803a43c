/* The agent console: queues of handoffs on the left, the open conversation in the centre,
 * its handoff record on the right. State comes from the agent API (REST) and stays current
 * through the /api/events WebSocket, whose events each carry the whole record: the console
 * only ever replaces a record by id, so no event can leave it half-updated. Data from the
 * server is only ever put on the page with textContent. */
(function () {
  "use strict";

  const SOON_FRACTION = 0.2;          // amber once less than this share of the SLA is left
  const BACKOFF_MIN_MS = 1000;
  const BACKOFF_MAX_MS = 30000;
  const STATUS_RANK = { waiting: 0, active: 1, resolved: 2 };
  // the live events' types, as bot/handoff/events.py EventType names them
  const EVENT = Object.freeze({
    READY: "ready",
    HANDOFF_OPENED: "handoff.opened",
    HANDOFF_CLAIMED: "handoff.claimed",
    HANDOFF_MESSAGE: "handoff.message",
    HANDOFF_NOTE: "handoff.note",
    HANDOFF_TRANSFERRED: "handoff.transferred",
    HANDOFF_RESOLVED: "handoff.resolved",
    HANDOFF_CSAT: "handoff.csat",
    PEAK_CHANGED: "peak.changed",
    MONITOR_ALERT: "monitor.alert",
  });
  // Order snapshots have no fixed shape; these keys, when present, come first.
  const ORDER_FIRST = ["id", "order_id", "status", "total", "currency", "placed_at", "items",
    "carrier", "tracking_number", "carrier_events", "events", "shipment", "return", "refund",
    "writes"];

  const $ = (id) => document.getElementById(id);
  const ui = {};
  ["login", "login-form", "token", "sign-in", "login-error", "console", "session-bar",
    "agent-name", "sign-out", "live-status", "console-status", "peak", "queues",
    "show-resolved", "take-next", "conversation-title", "conversation-meta", "claim", "transfer-queue",
    "transfer", "disposition", "resolve-note", "resolve", "transcript", "transcript-empty",
    "reply-form", "reply-text", "reply-send", "record-details", "notes-section", "notes",
    "note-form", "note-text", "note-add", "audit-section", "audit"].forEach((id) => {
    ui[id.replace(/-(\w)/g, (_, c) => c.toUpperCase())] = $(id);
  });

  const state = {
    token: null, me: null, config: { queues: [], dispositions: [] }, queues: [],
    records: new Map(),   // id -> RECORD, everything known (lists + the open one)
    openId: null, drafts: new Map(), busy: new Set(), attachments: new Map(),
    refreshSeq: 0, sinceRefresh: null,   // records that arrived while a refresh ran
    socket: null, retries: 0, retryTimer: null, clockOffset: 0, stickToEnd: true,
  };

  // ---- API -------------------------------------------------------------------------

  async function api(method, path, body) {
    const init = { method, headers: { Authorization: "Bearer " + state.token, Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let response;
    try {
      response = await fetch(path, init);
    } catch (e) {
      throw Object.assign(new Error("Cannot reach the server."), { status: 0 });
    }
    noteServerClock(response);
    const text = await response.text();
    let data = null;
    try { data = text ? JSON.parse(text) : null; } catch (e) { data = null; }
    if (!response.ok) {
      const message = data && data.error ? data.error : "Request failed (HTTP " + response.status + ")";
      throw Object.assign(new Error(message), { status: response.status });
    }
    return data;
  }

  // SLA timers count against the server's clock: a skewed desktop clock would otherwise
  // show breaches that are not (Date has whole seconds, so small skews are ignored).
  function noteServerClock(response) {
    const server = Date.parse(response.headers.get("Date") || "");
    if (isNaN(server)) return;
    const offset = server - Date.now();
    state.clockOffset = Math.abs(offset) > 5000 ? offset : 0;
  }

  const now = () => Date.now() + state.clockOffset;
  const handoffPath = (id, action) => "/api/handoffs/" + encodeURIComponent(id) + (action ? "/" + action : "");

  // A 401 mid-session means the token was revoked: back to sign-in, not an error banner.
  function report(error) {
    if (error.status === 401) signOut("Your token is no longer accepted. Sign in again.");
    else setStatus(error.message, "error");
  }

  function setStatus(text, kind) {
    ui.consoleStatus.textContent = text;
    ui.consoleStatus.dataset.kind = kind || "info";
  }

  // ---- signing in and out ------------------------------------------------------------

  async function start(token, fromStorage) {
    state.token = token;
    ui.signIn.disabled = true;
    let me, config;
    try {
      me = await api("GET", "/api/me");   // first alone: a wrong token costs one 401, not two
      config = await api("GET", "/api/config");
    } catch (error) {
      state.token = null;
      if (error.status === 401) {
        agentToken.clear();
        showLogin(fromStorage ? "Your saved token is no longer accepted." : "That token was not accepted.");
      } else {
        showLogin(error.message);
      }
      return;
    } finally {
      ui.signIn.disabled = false;
    }
    agentToken.save(token);
    state.me = me;
    state.config = Object.assign({ queues: [], dispositions: [] }, config);
    showConsole();
    const match = /^#handoff-(\d+)$/.exec(location.hash);
    if (match) openHandoff(Number(match[1]));
    refreshAll();
    connect();
  }

  function signOut(message) {
    agentToken.clear();
    disconnect();
    state.refreshSeq += 1;   // answers still on their way are for nobody now
    Object.assign(state, { token: null, me: null, openId: null, records: new Map(), drafts: new Map() });
    ui.replyText.value = "";
    ui.noteText.value = "";
    ui.queues.replaceChildren();
    history.replaceState(null, "", location.pathname);
    renderOpen(null);
    setStatus("");
    showLogin(message || "");
  }

  function showLogin(error) {
    ui.console.hidden = true;
    ui.sessionBar.hidden = true;
    ui.peak.hidden = true;
    ui.login.hidden = false;
    ui.loginError.textContent = error || "";
    ui.token.value = "";
    ui.token.focus();
  }

  function showPeak() {
    ui.peak.textContent = state.config.peak_banner || "Peak mode";
    ui.peak.hidden = !state.config.peak;
  }

  function showConsole() {
    ui.login.hidden = true;
    ui.loginError.textContent = "";
    ui.console.hidden = false;
    ui.sessionBar.hidden = false;
    ui.agentName.textContent = state.me.agent + (state.me.admin ? " (admin)" : "");
    showPeak();
    fillSelect(ui.transferQueue, state.config.queues.map((q) => [q.name, q.label || q.name]));
    fillSelect(ui.disposition, state.config.dispositions.map((d) => [d, humanize(d)]));
    renderOpen(null);
  }


  // ---- loading and merging records -----------------------------------------------

  async function refreshAll() {
    const seq = ++state.refreshSeq;
    const since = new Map();
    state.sinceRefresh = since;
    const statuses = ["waiting", "active"].concat(ui.showResolved.checked ? ["resolved"] : []);
    const openId = state.openId;
    try {
      const results = await Promise.all([api("GET", "/api/queues")]
        .concat(statuses.map((s) => api("GET", "/api/handoffs?status=" + s)))
        .concat(openId !== null ? [api("GET", handoffPath(openId)).catch(() => null)] : []));
      if (seq !== state.refreshSeq) return;   // a newer refresh is under way
      state.queues = Array.isArray(results[0]) ? results[0] : [];
      const fresh = new Map();
      results.slice(1).forEach((list) => {
        (Array.isArray(list) ? list : [list]).forEach((r) => { if (r && r.id != null) fresh.set(r.id, r); });
      });
      // What an event brought while the lists were fetched may be newer than the lists.
      since.forEach((record, id) => { if (!fresh.has(id) || !isOlder(record, fresh.get(id))) fresh.set(id, record); });
      const openBefore = state.openId !== null ? state.records.get(state.openId) : null;
      state.records = fresh;
      renderQueues();
      renderOpen(openBefore || null, true);
    } catch (error) {
      report(error);
    } finally {
      if (state.sinceRefresh === since) state.sinceRefresh = null;
    }
  }

  // Transcript, notes and audit only ever grow: a record with fewer of any is an older
  // copy (a slow POST answer overtaken by an event) and must not replace a newer one.
  function isOlder(incoming, existing) {
    return ["transcript", "notes", "audit"].some((key) =>
      Array.isArray(incoming[key]) && Array.isArray(existing[key]) && incoming[key].length < existing[key].length);
  }

  function upsert(record, eventType) {
    if (!state.token || !record || record.id == null) return;   // a late answer after sign-out
    const previous = state.records.get(record.id);
    if (previous && isOlder(record, previous)) return;
    state.records.set(record.id, record);
    if (state.sinceRefresh) state.sinceRefresh.set(record.id, record);
    renderQueues(eventType === EVENT.HANDOFF_OPENED ? record.id : null);
    if (record.id === state.openId) renderOpen(previous || null, true);
  }

  // ---- live events -----------------------------------------------------------------

  function connect() {
    clearTimeout(state.retryTimer);
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/api/events";
    const socket = new WebSocket(url);
    state.socket = socket;
    setLive("connecting", "connecting…");
    socket.addEventListener("open", () => socket.send(JSON.stringify({ token: state.token })));
    socket.addEventListener("message", (event) => { if (socket === state.socket) onFrame(event.data); });
    socket.addEventListener("close", (event) => {
      if (socket !== state.socket) return;   // closed on purpose
      state.socket = null;
      // the server says why: removed, given a new token, or the token expired
      if (event.code === 4401) signOut("Your session has ended" + (event.reason ? ": " + event.reason : "") + ". Sign in again.");
      else scheduleReconnect();
    });
  }

  function onFrame(data) {
    let message;
    try { message = JSON.parse(data); } catch (e) { return; }
    if (!message || typeof message !== "object") return;
    if (message.type === EVENT.READY) {
      state.retries = 0;
      setLive("live", "live");
      refreshAll();   // whatever happened while we were not listening
    } else if (message.type === EVENT.MONITOR_ALERT && message.alert) {
      const a = message.alert;
      setStatus("Product alert: " + a.contacts + " conversations about " + a.product + " (" + a.sku +
                ") in " + a.window_hours + " h", "warn");
    } else if (message.type === EVENT.PEAK_CHANGED && message.peak) {
      state.config.peak = message.peak.on;
      state.config.peak_banner = message.peak.banner;
      showPeak();
    } else if (message.handoff) {
      upsert(message.handoff, message.type);
    }
  }

  function scheduleReconnect() {
    if (!state.token) return;
    const delay = Math.min(BACKOFF_MAX_MS, BACKOFF_MIN_MS * 2 ** state.retries) * (0.75 + Math.random() * 0.5);
    state.retries += 1;
    setLive("offline", "reconnecting in " + Math.round(delay / 1000) + " s");
    state.retryTimer = setTimeout(connect, delay);
  }

  function disconnect() {
    clearTimeout(state.retryTimer);
    const socket = state.socket;
    state.socket = null;
    if (socket) socket.close(1000);
    setLive("offline", "offline");
  }

  function setLive(kind, text) {
    ui.liveStatus.dataset.state = kind;
    ui.liveStatus.textContent = text;
  }

  // ---- the queue column --------------------------------------------------------------

  function queueGroups() {
    const groups = new Map();
    const add = (name, label) => { if (!groups.has(name)) groups.set(name, { name, label: label || name, items: [] }); };
    const labels = new Map(state.config.queues.map((q) => [q.name, q.label]));
    (state.queues.length ? state.queues.map((q) => [q.queue, q.label]) : [...labels]).forEach(([n, l]) => add(n, l || labels.get(n)));
    state.records.forEach((record) => {
      if (record.status === "resolved" && !ui.showResolved.checked) return;
      add(record.queue, record.queue_label || labels.get(record.queue));
      groups.get(record.queue).items.push(record);
    });
    groups.forEach((group) => group.items.sort(compareRecords));
    return [...groups.values()];
  }

  // Waiting first (most urgent, then oldest), then active and resolved, newest first.
  function compareRecords(a, b) {
    const rank = (STATUS_RANK[a.status] ?? 3) - (STATUS_RANK[b.status] ?? 3);
    if (rank) return rank;
    if (a.status === "waiting") return (b.priority || 0) - (a.priority || 0) || time(a.created_at) - time(b.created_at);
    const key = a.status === "resolved" ? "resolved_at" : "claimed_at";
    return time(b[key] || b.created_at) - time(a[key] || a.created_at);
  }

  function renderQueues(newId) {
    const focused = document.activeElement && document.activeElement.closest(".handoff-item");
    const focusedId = focused && ui.queues.contains(focused) ? focused.dataset.id : null;
    ui.queues.replaceChildren(...queueGroups().map(renderQueue));
    if (focusedId !== null) {
      const again = ui.queues.querySelector('.handoff-item[data-id="' + CSS.escape(focusedId) + '"]');
      if (again) again.focus();
    }
    if (newId != null) {
      const item = ui.queues.querySelector('.handoff-item[data-id="' + CSS.escape(String(newId)) + '"]');
      if (item) item.classList.add("is-new");
    }
    const waiting = [...state.records.values()].filter((r) => r.status === "waiting").length;
    document.title = (waiting ? "(" + waiting + ") " : "") + "Agent console";
    tick();
  }

  function renderQueue(group) {
    const section = node("section", "queue");
    const heading = node("h3", "queue-title");
    heading.id = "queue-" + String(group.name).replace(/[^\w-]/g, "-");
    section.setAttribute("aria-labelledby", heading.id);
    const count = (s) => group.items.filter((r) => r.status === s).length;
    heading.append(node("span", "queue-label", group.label),
      node("span", "queue-counts", count("waiting") + " waiting · " + count("active") + " active"),
      node("span", "badge badge-danger queue-breached"));
    section.append(heading);
    if (!group.items.length) {
      section.append(node("p", "empty", "Nothing here."));
      return section;
    }
    const list = node("ul", "handoff-list");
    group.items.forEach((record) => list.append(node("li", "", [renderItem(record)])));
    section.append(list);
    return section;
  }

  function renderItem(record) {
    const item = node("button", "handoff-item status-" + record.status);
    item.type = "button";
    item.dataset.id = String(record.id);
    if (record.id === state.openId) item.setAttribute("aria-current", "true");
    if (state.me && record.agent === state.me.agent) item.classList.add("mine");
    const reason = record.reason || {};
    const who = [record.channel, record.agent ? "@" + record.agent : "unassigned"].filter(Boolean).join(" · ");
    const status = record.status + (record.status === "waiting" && record.position ? " #" + record.position : "");
    item.append(
      node("span", "item-row", [node("span", "", [node("strong", "item-ref", record.reference || "#" + record.id), " ",
        node("span", "status-pill status-" + record.status, status)]), slaTimer(record)]),
      node("span", "item-row", [node("span", "item-customer", customerName(record)), node("span", "item-agent", who)]),
      node("span", "item-row item-meta", [node("span", "item-reason", reason.code || ""),
        node("span", "item-tier", "tier " + (reason.tier ?? "?") + " · P" + (record.priority ?? 0))]));
    return item;
  }

  // ---- SLA timers --------------------------------------------------------------------

  function slaTimer(record) {
    const timer = node("span", "sla-timer");
    timer.dataset.id = String(record.id);
    return timer;
  }

  // Once a person answered, the clock no longer matters; until then it counts down to
  // due_at, and past it counts the overrun up.
  function slaView(record) {
    const sla = record.sla || {};
    if (record.first_response_at) return { text: "responded", kind: sla.breached ? "responded late" : "responded" };
    if (record.status === "resolved") return { text: "closed", kind: "closed" };
    const due = Date.parse(sla.due_at);
    if (isNaN(due)) return { text: "no SLA", kind: "none" };
    const left = due - now();
    if (left <= 0) return { text: "+" + clock(Math.floor(-left / 1000)) + " over", kind: "breached" };
    if (sla.breached) return { text: "breached", kind: "breached" };
    const soon = sla.target_seconds > 0 && left < sla.target_seconds * 1000 * SOON_FRACTION;
    return { text: clock(Math.ceil(left / 1000)), kind: soon ? "soon" : "ok" };
  }

  function clock(seconds) {
    const h = Math.floor(seconds / 3600);
    const m = Math.floor((seconds % 3600) / 60);
    const s = String(seconds % 60).padStart(2, "0");
    return h ? h + ":" + String(m).padStart(2, "0") + ":" + s : m + ":" + s;
  }

  function tick() {
    document.querySelectorAll(".sla-timer").forEach((timer) => {
      const record = state.records.get(Number(timer.dataset.id));
      if (!record) return;
      const view = slaView(record);
      if (timer.textContent !== view.text) timer.textContent = view.text;
      timer.className = "sla-timer " + view.kind;
      timer.title = record.sla && record.sla.due_at ? "First reply due " + formatTime(record.sla.due_at, true) : "";
    });
    ui.queues.querySelectorAll(".queue").forEach((section) => {
      const badge = section.querySelector(".queue-breached");
      const n = section.querySelectorAll(".handoff-item:not(.status-resolved) .sla-timer.breached").length;
      badge.textContent = n ? n + " breached" : "";
      badge.hidden = !n;
    });
  }

  // ---- the open conversation ---------------------------------------------------------

  async function openHandoff(id) {
    saveDraft();
    const switching = id !== state.openId;
    state.openId = id;
    history.replaceState(null, "", "#handoff-" + id);
    if (switching) {
      ui.replyText.value = state.drafts.get(id) || "";
      ui.noteText.value = "";
      ui.resolveNote.value = "";
      setStatus("");
    }
    renderQueues();
    renderOpen(null);
    try {
      const record = await api("GET", handoffPath(id));
      if (state.openId === id) upsert(record);
    } catch (error) {
      report(error);
      // Gone or not ours (an old link): close it rather than show "Loading…" for ever.
      if ((error.status === 403 || error.status === 404) && state.openId === id) forget(id);
    }
  }

  // A handoff this console may no longer show (gone, or in another team's queue now).
  function forget(id) {
    state.records.delete(id);
    if (state.openId === id) {
      state.openId = null;
      history.replaceState(null, "", location.pathname);
    }
    renderQueues();
    renderOpen(null);
  }

  function saveDraft() {
    if (state.openId === null) return;
    if (ui.replyText.value) state.drafts.set(state.openId, ui.replyText.value);
    else state.drafts.delete(state.openId);
  }

  // previous: the same record before this update (decides what is new in the transcript);
  // keep: whether the agent's scroll position is worth keeping.
  function renderOpen(previous, keep) {
    const record = state.openId !== null ? state.records.get(state.openId) : null;
    ui.transcriptEmpty.hidden = Boolean(record);
    ui.notesSection.hidden = ui.auditSection.hidden = !record;
    if (!record) {
      ui.conversationTitle.textContent = state.openId !== null ? "Loading…" : "No conversation open";
      ui.conversationMeta.textContent = "";
      ui.transcript.replaceChildren();
      ui.recordDetails.replaceChildren(node("p", "empty", "No handoff open."));
      updateControls(null);
      return;
    }
    ui.conversationTitle.textContent = (record.reference || "#" + record.id) + " · " + customerName(record);
    ui.conversationMeta.textContent = [record.channel, record.queue_label || record.queue, record.status,
      record.agent ? "with " + record.agent : "unassigned"].filter(Boolean).join(" · ");
    renderTranscript(record, previous, keep);
    renderRecord(record);
    updateControls(record);
    tick();
  }

  function renderTranscript(record, previous, keep) {
    const list = ui.transcript;
    const turns = Array.isArray(record.transcript) ? record.transcript : [];
    const before = previous && Array.isArray(previous.transcript) ? previous.transcript.length : null;
    let added = turns;
    if (keep && before !== null && before <= turns.length && list.children.length === before) {
      added = turns.slice(before);   // the usual case: only append what is new
    } else if (keep && before === null && list.children.length === turns.length && list.dataset.id === String(record.id)) {
      added = [];   // a refresh with nothing new in this conversation
    } else {
      list.replaceChildren();
      keep = false;
    }
    list.dataset.id = String(record.id);
    added.forEach((turn) => list.append(renderTurn(turn, record.id)));
    // New customer words must be seen; otherwise leave an agent reading back in peace.
    if (!keep || (added.length && (state.stickToEnd || added.some((t) => t.role !== "bot")))) scrollToEnd();
  }

  function renderTurn(turn, handoffId) {
    const role = /^(customer|bot|agent)$/.test(turn.role) ? turn.role : "other";
    const item = node("li", "turn turn-" + role);
    const who = { customer: "Customer", bot: "Bot", agent: "Agent" }[role] || "System";
    item.append(node("div", "turn-head", [node("span", "turn-who", who), timeNode(turn.at)]));
    if (turn.text) item.append(linkified(node("div", "turn-text"), String(turn.text)));
    const attachments = Array.isArray(turn.attachments) ? turn.attachments : [];
    if (attachments.length) {
      item.append(node("div", "turn-attachments",
        attachments.map((attachment) => renderAttachment(attachment, handoffId))));
    }
    return item;
  }

  // Customers' media sit behind the channel's credentials (Telegram file ids, WhatsApp
  // media ids, Twilio's API): the gateway fetches them for a signed-in agent, so they are
  // loaded with the token and shown from a blob, once per attachment. Only raster images
  // come typed as images; the rest comes as bytes and is downloaded, never opened here.
  function renderAttachment(attachment, handoffId) {
    const type = (attachment && attachment.type) || "file";
    const url = attachment && typeof attachment.url === "string" ? attachment.url : "";
    if (!url) return node("span", "muted", type + " (no link)");
    if (type === "location") return node("span", "attachment", "location: " + (attachment.caption || url));
    const link = node("a", "attachment", type + " (loading…)");
    link.target = "_blank";
    link.rel = "noopener noreferrer";
    attachmentBlob(handoffId, url).then(({ blobUrl, image: shown }) => {
      link.href = blobUrl;
      if (type !== "image" || !shown) {
        const name = url.split("/").pop() || "attachment";
        link.download = name;
        link.textContent = type + ": " + (attachment.caption || name) + " (download)";
        return;
      }
      const image = node("img");
      image.src = blobUrl;
      image.alt = attachment.caption || "Image sent in the conversation";
      // An image takes its height late: keep a bottom-stuck view there.
      image.addEventListener("load", () => { if (state.stickToEnd) scrollToEnd(); });
      link.replaceChildren(image);
    }).catch(() => { link.textContent = type + " (could not be fetched; try again later)"; });
    return link;
  }

  function attachmentBlob(handoffId, url) {
    const key = handoffId + " " + url;
    if (!state.attachments.has(key)) {
      const path = handoffPath(handoffId, "attachment") + "?url=" + encodeURIComponent(url);
      const loading = fetch(path, { headers: { Authorization: "Bearer " + state.token } })
        .then((response) => {
          if (!response.ok) throw new Error("HTTP " + response.status);
          return response.blob();
        })
        .then((blob) => ({ blobUrl: URL.createObjectURL(blob),
                           image: blob.type.startsWith("image/") }));
      loading.catch(() => state.attachments.delete(key));   // a later render retries
      state.attachments.set(key, loading);
    }
    return state.attachments.get(key);
  }

  function scrollToEnd() {
    ui.transcript.scrollTop = ui.transcript.scrollHeight;
    state.stickToEnd = true;
  }

  // ---- the record panel --------------------------------------------------------------

  function renderRecord(record) {
    const customer = record.customer || {};
    const reason = record.reason || {};
    const sla = record.sla || {};
    const summary = record.summary || {};
    const badge = node("span", "badge " + (customer.verified ? "badge-ok" : "badge-muted"),
      customer.verified ? "verified" : "not verified");
    const sections = [
      section("Customer", dl([["Name", node("span", "", [customerName(record) + " ", badge])],
        ["Contact", customer.contact], ["Channel", record.channel], ["Conversation", record.conversation_id]])),
      section("Handoff", dl([["Status", record.status], ["Agent", record.agent || "unassigned"],
        ["Queue", (record.queue_label || record.queue) + (record.queue_label ? " (" + record.queue + ")" : "")],
        ["Priority", record.priority], ["Position", record.status === "waiting" ? record.position : null],
        ["Opened", timeNode(record.created_at)], ["Claimed", record.claimed_at && timeNode(record.claimed_at)],
        ["Resolved", record.resolved_at && timeNode(record.resolved_at)],
        ["Disposition", record.disposition && humanize(record.disposition)], ["Resolution note", record.resolution_note]])),
      section("Reason", dl([["Code", reason.code], ["Rule", reason.rule], ["Tier", reason.tier]])),
      section("SLA", dl([["First reply", slaTimer(record)], ["Due", sla.due_at && timeNode(sla.due_at)],
        ["Target", sla.target_seconds != null ? clock(sla.target_seconds) : null],
        ["First response", record.first_response_at && timeNode(record.first_response_at)],
        ["Breached", sla.breached ? node("span", "badge badge-danger", "breached") : null]])),
      section("Summary", dl([["What happened", summary.what_happened], ["Next", summary.next], ["ETA", summary.eta]])),
    ];
    if (record.csat) {
      sections.push(section("Customer satisfaction", dl([["Score", record.csat.score + " / 5"],
        ["Answered", timeNode(record.csat.at)]])));
    }
    sections.push(section("Order", record.order ? renderValue(sortedOrder(record.order), 0) : node("p", "muted", "No order linked.")));
    const slots = record.slots && typeof record.slots === "object" ? Object.entries(record.slots) : [];
    sections.push(section("Slots", slots.length ? keyValueTable(slots) : node("p", "muted", "None.")));
    const actions = Array.isArray(record.actions_attempted) ? record.actions_attempted : [];
    sections.push(section("Actions attempted", actions.length
      ? node("ol", "plain-list", actions.map((a) => node("li", "", String(a)))) : node("p", "muted", "None.")));
    ui.recordDetails.replaceChildren(...sections);
    renderNotes(record);
    renderAudit(record);
  }

  function renderNotes(record) {
    const notes = Array.isArray(record.notes) ? record.notes : [];
    ui.notes.replaceChildren(...(notes.length ? notes.map((n) => node("li", "note", [
      node("p", "note-text", String(n.text || "")),
      node("p", "note-meta", [String(n.author || "") + " · ", timeNode(n.at)])])) : [node("li", "muted", "No notes yet.")]));
  }

  function renderAudit(record) {
    const audit = Array.isArray(record.audit) ? record.audit : [];
    ui.audit.replaceChildren(...audit.map((entry) => {
      const detail = entry.detail && typeof entry.detail === "object" ? Object.entries(entry.detail)
        .map(([k, v]) => k + ": " + (typeof v === "object" ? JSON.stringify(v) : v)).join(", ") : "";
      return node("li", "", [timeNode(entry.at), " ", node("strong", "", String(entry.actor || "")), " " +
        humanize(String(entry.action || "")).toLowerCase(), detail ? node("span", "muted", " — " + detail) : ""]);
    }));
  }

  function section(title, content) {
    return node("section", "record-section", [node("h3", "", title), content]);
  }

  // Rows with nothing to say are left out, so the panel stays short.
  function dl(rows) {
    const list = node("dl", "facts");
    rows.forEach(([label, value]) => {
      if (value === null || value === undefined || value === "" || value === false) return;
      list.append(node("dt", "", label), node("dd", "", [value instanceof Node ? value : String(value)]));
    });
    return list;
  }

  function keyValueTable(entries) {
    return node("table", "kv", [node("tbody", "", entries.map(([k, v]) =>
      node("tr", "", [node("th", "", k), node("td", "", [renderValue(v, 3)])])))]);
  }

  function sortedOrder(order) {
    if (!order || typeof order !== "object" || Array.isArray(order)) return order;
    const rank = (k) => (ORDER_FIRST.indexOf(k) + 1) || ORDER_FIRST.length + 1;
    const keys = Object.keys(order).sort((a, b) => rank(a) - rank(b));
    return Object.fromEntries(keys.map((k) => [k, order[k]]));
  }

  // Any JSON value, key by key: objects become definition lists, lists of records
  // tables, other lists bullet lists; deep nesting falls back to JSON text.
  function renderValue(value, depth) {
    if (value === null || value === undefined || value === "") return node("span", "muted", "—");
    if (typeof value === "boolean") return document.createTextNode(value ? "yes" : "no");
    if (typeof value !== "object") {
      return typeof value === "string" && /^\d{4}-\d\d-\d\dT\d\d:\d\d/.test(value) ? timeNode(value) : document.createTextNode(String(value));
    }
    if (depth >= 4) return node("code", "json", JSON.stringify(value));
    if (Array.isArray(value)) {
      if (!value.length) return node("span", "muted", "none");
      if (value.every((v) => v && typeof v === "object" && !Array.isArray(v))) return recordTable(value, depth);
      return node("ul", "plain-list", value.map((v) => node("li", "", [renderValue(v, depth + 1)])));
    }
    const list = node("dl", "facts");
    Object.keys(value).forEach((key) => list.append(node("dt", "", humanize(key)), node("dd", "", [renderValue(value[key], depth + 1)])));
    return list;
  }

  function recordTable(rows, depth) {
    const keys = [...new Set(rows.flatMap((row) => Object.keys(row)))];
    return node("div", "table-scroll", [node("table", "grid", [
      node("thead", "", [node("tr", "", keys.map((k) => node("th", "", humanize(k))))]),
      node("tbody", "", rows.map((row) => node("tr", "", keys.map((k) => node("td", "", [renderValue(row[k], depth + 2)])))))])]);
  }

  // ---- actions -------------------------------------------------------------------------

  function updateControls(record) {
    const me = state.me || {};
    const works = Boolean(record && record.status === "active" && (record.agent === me.agent || me.admin));
    const can = { claim: Boolean(record && record.status === "waiting"), reply: works, transfer: works, resolve: works, note: Boolean(record) };
    const set = (element, action) => { element.disabled = !can[action] || state.busy.has(action); };
    set(ui.claim, "claim");
    set(ui.replyText, "reply"); set(ui.replySend, "reply");
    set(ui.transferQueue, "transfer"); set(ui.transfer, "transfer");
    set(ui.disposition, "resolve"); set(ui.resolveNote, "resolve"); set(ui.resolve, "resolve");
    set(ui.noteText, "note"); set(ui.noteAdd, "note");
    ui.replyText.placeholder = works ? "Reply to the customer (Ctrl+Enter sends)"
      : record && record.status === "waiting" ? "Claim this handoff to reply" : "Replies are open while the handoff is active";
    if (record && ui.transferQueue.value === record.queue) {
      const other = [...ui.transferQueue.options].find((o) => o.value !== record.queue);
      if (other) ui.transferQueue.value = other.value;
    }
  }

  // One POST on the open handoff; its button stays disabled until the answer is in.
  async function act(action, path, body) {
    const id = state.openId;
    if (id === null || state.busy.has(action)) return null;
    state.busy.add(action);
    updateControls(state.records.get(id));
    try {
      return await api("POST", handoffPath(id, path), body);
    } catch (error) {
      report(error);
      return null;
    } finally {
      state.busy.delete(action);
      updateControls(state.records.get(state.openId));
    }
  }

  async function claim() {
    const record = await act("claim", "claim", { agent: state.me.agent });
    if (!record) return;
    upsert(record);
    setStatus("You claimed " + record.reference + ".");
    if (!ui.replyText.disabled) ui.replyText.focus();
  }

  // The server picks: the first waiting handoff of my queues by priority, then age.
  async function takeNext() {
    ui.takeNext.disabled = true;
    try {
      const record = await api("POST", "/api/queues/next");
      upsert(record);
      await openHandoff(record.id);
      setStatus("You took " + record.reference + ".");
    } catch (error) {
      report(error);
    } finally {
      ui.takeNext.disabled = false;
    }
  }

  async function sendReply(event) {
    event.preventDefault();
    const text = ui.replyText.value.trim();
    if (!text || ui.replySend.disabled) return;
    const id = state.openId;
    const result = await act("reply", "messages", { text });
    if (!result) return;
    if (state.openId === id && ui.replyText.value.trim() === text) ui.replyText.value = "";
    state.drafts.delete(id);
    upsert(result.handoff);
    const failed = (result.deliveries || []).filter((d) => d.status !== "sent");
    if (failed.length) setStatus("Not delivered: " + failed.map((d) => d.error || d.status).join("; "), "error");
    else setStatus("Reply sent.");
  }

  async function transfer() {
    const queue = ui.transferQueue.value;
    const record = await act("transfer", "transfer", { queue });
    if (!record) return;
    // Moved to a team I am not in: from now on it is theirs to see, not mine.
    if (state.me.admin || state.me.teams.includes(record.queue)) upsert(record);
    else forget(record.id);
    setStatus(record.reference + " moved to " + (record.queue_label || record.queue) + ".");
  }

  async function resolve() {
    const record = await act("resolve", "resolve", { disposition: ui.disposition.value, note: ui.resolveNote.value.trim() });
    if (!record) return;
    ui.resolveNote.value = "";
    upsert(record);
    setStatus(record.reference + " resolved.");
  }

  async function addNote(event) {
    event.preventDefault();
    const text = ui.noteText.value.trim();
    if (!text) return;
    const record = await act("note", "notes", { text });
    if (!record) return;
    ui.noteText.value = "";
    upsert(record);
    setStatus("Note added.");
  }

  // ---- small helpers -------------------------------------------------------------------

  // node("p", "cls", "text") or node("p", "cls", [childNodeOrString, ...]).
  function node(tag, className, content) {
    const element = document.createElement(tag);
    if (className) element.className = className;
    if (typeof content === "string") element.textContent = content;
    else if (Array.isArray(content)) element.append(...content.filter((c) => c !== null && c !== undefined && c !== ""));
    return element;
  }

  function fillSelect(select, options) {
    select.replaceChildren(...options.map(([value, label]) => {
      const option = node("option", "", label);
      option.value = value;
      return option;
    }));
  }

  const time = (iso) => { const t = Date.parse(iso || ""); return isNaN(t) ? 0 : t; };
  const customerName = (record) => (record.customer && record.customer.name) || "Customer";
  const humanize = (key) => { const s = String(key).replace(/_/g, " "); return s.charAt(0).toUpperCase() + s.slice(1); };

  // Local time; the date only when it is not today.
  function formatTime(iso, full) {
    const date = new Date(iso);
    if (isNaN(date)) return String(iso || "");
    const today = date.toDateString() === new Date().toDateString();
    const options = today && !full ? { hour: "2-digit", minute: "2-digit" }
      : { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" };
    return date.toLocaleString(undefined, options);
  }

  function timeNode(iso) {
    if (!iso) return null;
    const element = node("time", "", formatTime(iso));
    element.dateTime = iso;
    const date = new Date(iso);
    if (!isNaN(date)) element.title = date.toLocaleString();
    return element;
  }

  function linkified(element, text) {
    const pattern = /https?:\/\/[^\s<>"]+[^\s<>".,;:!?)\]]/g;
    let last = 0;
    let match;
    while ((match = pattern.exec(text)) !== null) {
      element.append(text.slice(last, match.index));
      const link = node("a", "", match[0]);
      link.href = match[0];
      link.target = "_blank";
      link.rel = "noopener noreferrer";
      element.append(link);
      last = match.index + match[0].length;
    }
    element.append(text.slice(last));
    return element;
  }

  // ---- wiring --------------------------------------------------------------------------

  ui.loginForm.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = ui.token.value.trim();
    if (!token) return;
    ui.loginError.textContent = "";
    start(token, false);
  });
  ui.signOut.addEventListener("click", () => signOut(""));
  ui.queues.addEventListener("click", (event) => {
    const item = event.target.closest(".handoff-item");
    if (item) openHandoff(Number(item.dataset.id));
  });
  ui.showResolved.addEventListener("change", () => { if (ui.showResolved.checked) refreshAll(); else renderQueues(); });
  ui.claim.addEventListener("click", claim);
  ui.takeNext.addEventListener("click", takeNext);
  ui.transfer.addEventListener("click", transfer);
  ui.resolve.addEventListener("click", resolve);
  ui.replyForm.addEventListener("submit", sendReply);
  ui.noteForm.addEventListener("submit", addNote);
  ui.replyText.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) ui.replyForm.requestSubmit();
  });
  ui.replyText.addEventListener("input", saveDraft);
  ui.transcript.addEventListener("scroll", () => {
    const list = ui.transcript;
    state.stickToEnd = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
  });
  // Back online: do not sit out the rest of a long backoff.
  window.addEventListener("online", () => { if (state.token && !state.socket) connect(); });
  setInterval(tick, 1000);

  const saved = agentToken.read();
  if (saved) start(saved, true);
  else showLogin("");
})();
