// The explorer page: a form -> one call to the public V1 endpoint -> the ranking, why, and history.
//
// It sends exactly what a client would (the request is shown under the answer) and shows what the
// answer holds; a field the server does not send yet is left out, never invented. Input is checked
// here with the server's own rules first, so a typo gets a message naming the field and no failed
// request; a 400 the server still gives is shown the same way. Timings: `scenerec:ask` is marked on
// each ask and `scenerec:answer` measured once the answer is on screen (the next frame after it is
// drawn), for benchmarks/ui.py and the tests.
"use strict";

(function () {
  const $ = (id) => document.getElementById(id);
  const bars = window.scenerecBars;
  const MAX_ID = 256;
  const COMPARE_K = 10;
  const HISTORY_SHOWN = 20;  // the most recent (what the server sends today); the rest is counted
  const REASONS = {
    unknown_user: "this user has no history in the feature store, so the ranking comes from the scene and context alone (cold start)",
    feature_store_unavailable: "the feature store did not answer in time, so the ranking is built without the user's history",
    unknown_scene: "the model does not know this scene, so the default scene was used",
  };
  const state = { config: null, mode: "rank", seq: 0 };

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  function show(id, text) {
    const node = $(id);
    node.textContent = text || "";
    node.hidden = !text;
  }

  async function readJson(response) {
    const text = await response.text();
    try {
      return JSON.parse(text);
    } catch (e) {
      return { error: `HTTP ${response.status}: the answer is not JSON (${text.slice(0, 120)})` };
    }
  }

  // ---- set-up ---------------------------------------------------------------------------------
  async function start() {
    document.body.dataset.state = "loading";
    try {
      const response = await fetch("config.json", { headers: { accept: "application/json" } });
      const config = await readJson(response);
      if (!response.ok) throw new Error(config.error || `HTTP ${response.status}`);
      setup(config);
    } catch (e) {
      document.body.dataset.state = "error";
      show("message", `Cannot read the page's set-up (config.json): ${e.message}`);
      return;
    }
    document.body.dataset.state = "ready";
    if ($("user").value) await ask();
  }

  function options(select, values, chosen) {
    select.replaceChildren(...values.map((v) => {
      const option = el("option", null, v);
      option.value = v;
      option.selected = v === chosen;
      return option;
    }));
  }

  function setup(config) {
    state.config = config;
    $("model-name").textContent = config.model || "?";
    $("model-version").textContent = config.model_version || "?";
    $("model-provider").textContent = config.provider || "?";
    const scenes = config.scenes || [];
    options($("scene"), scenes, config.default_scene);
    options($("scene-b"), scenes, scenes.find((s) => s !== config.default_scene) || config.default_scene);
    options($("device"), config.devices || [], (config.devices || [])[0]);
    $("k").max = String(config.max_k || 1000);
    const fields = new Set(config.request_fields || []);
    for (const label of document.querySelectorAll("#filters [data-field]")) {
      label.hidden = !fields.has(label.dataset.field)
        || (label.dataset.field === "categories" && !(config.categories || []).length);
    }
    $("filters").hidden = !document.querySelector("#filters [data-field]:not([hidden])");
    options($("categories"), config.categories || [], null);
    const users = config.example_users || [];
    $("example-users").replaceChildren(...users.map((u) => {
      const option = el("option");
      option.value = u.user_id;
      option.label = `${u.interactions} interactions, last in ${u.last_scene || "?"}`;
      return option;
    }));
    const chips = users.map((u) => chip(u.user_id, `${u.interactions} events`, u));
    chips.push(chip("someone-new", "never seen", null));
    $("examples").replaceChildren(...chips);
    if (users.length) $("user").value = users[0].user_id;
    $("legend").replaceChildren(bars.legend());
    timestampText();
  }

  function chip(userId, note, user) {
    const button = el("button", "chip", userId);
    button.type = "button";
    button.dataset.user = userId;
    button.append(el("small", null, note));
    button.addEventListener("click", () => {
      $("user").value = userId;
      if (user && user.last_device && (state.config.devices || []).includes(user.last_device)) {
        $("device").value = user.last_device;
      }
      ask();
    });
    return button;
  }

  // ---- the request ------------------------------------------------------------------------------
  function integer(text, low, high, where, problems) {
    const value = Number(text);
    if (text === "" || !Number.isInteger(value) || value < low || value > high) {
      problems.push(`${where}: expected an integer in ${low}..${high}, got ${text === "" ? "nothing" : text}`);
    }
    return value;
  }

  function timestampOf(hour) {
    const now = new Date();
    return Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate()) / 1000 + hour * 3600;
  }

  function timestampText() {
    const hour = Number($("hour").value);
    if (!Number.isInteger(hour) || hour < 0 || hour > 23) return show("when", "");
    const when = new Date(timestampOf(hour) * 1000);
    const day = when.toLocaleDateString("en-GB", { weekday: "short", day: "numeric", month: "short", timeZone: "UTC" });
    show("when", `context time: ${day}, ${String(hour).padStart(2, "0")}:00 UTC`);
  }

  /** The V1 body for the form, or the problems that keep it from being sent (each names its field). */
  function buildRequest() {
    const problems = [];
    const fields = new Set(state.config.request_fields || []);
    const user = $("user").value.trim();
    if (!user) problems.push("user id: required (type one, or pick an example)");
    else if (user.length > MAX_ID) problems.push(`user id: longer than ${MAX_ID} characters`);
    const compare = state.mode === "compare";
    const k = compare ? COMPARE_K : integer($("k").value.trim(), 1, state.config.max_k || 1000, "k", problems);
    const hour = integer($("hour").value.trim(), 0, 23, "hour", problems);
    const instance = {
      user_id: user,
      scene: $("scene").value,
      context: { device: $("device").value, timestamp: timestampOf(hour) },
      k,
      explain: true,
      exclude_seen: $("exclude-seen").checked,
    };
    if (fields.has("diversity") && Number($("diversity").value) > 0) instance.diversity = Number($("diversity").value);
    const limits = state.config.list_limits || {};
    if (fields.has("exclude")) {
      const ids = $("exclude").value.split(",").map((s) => s.trim()).filter(Boolean);
      if (ids.some((id) => id.length > MAX_ID)) problems.push(`never show: an id longer than ${MAX_ID} characters`);
      if (ids.length > (limits.exclude || Infinity)) problems.push(`never show: at most ${limits.exclude} ids`);
      if (ids.length) instance.exclude = ids;
    }
    if (fields.has("categories")) {
      const chosen = [...$("categories").selectedOptions].map((o) => o.value);
      if (chosen.length > (limits.categories || Infinity)) {
        problems.push(`only categories: at most ${limits.categories}`);
      }
      if (chosen.length) instance.categories = chosen;
    }
    const instances = compare ? [instance, { ...instance, scene: $("scene-b").value }] : [instance];
    return { problems, body: { instances } };
  }

  // ---- asking -----------------------------------------------------------------------------------
  async function ask(event) {
    if (event) event.preventDefault();
    if (!state.config) return;
    const { problems, body } = buildRequest();
    show("message", problems.join("; "));
    if (problems.length) return;
    const seq = ++state.seq;
    const path = state.config.predict_path || `v1/models/${state.config.model}:predict`;
    performance.mark("scenerec:ask");
    document.body.dataset.busy = "true";
    let response;
    let answer;
    try {
      response = await fetch(`../${path}`, {
        method: "POST",
        headers: { "content-type": "application/json", accept: "application/json" },
        body: JSON.stringify(body),
      });
      answer = await readJson(response);
    } catch (e) {
      if (seq === state.seq) show("message", `The predictor did not answer: ${e.message}`);
      return;
    } finally {
      if (seq === state.seq) delete document.body.dataset.busy;
    }
    if (seq !== state.seq) return;  // a newer ask is on its way: show that one
    if (!response.ok || !Array.isArray(answer.predictions)) {
      show("message", answer.error || `HTTP ${response.status}: no predictions in the answer`);
      return;
    }
    render(body, answer.predictions);
    await new Promise((resolve) => requestAnimationFrame(() => requestAnimationFrame(resolve)));
    performance.measure("scenerec:answer", "scenerec:ask");
    document.body.dataset.answers = String(Number(document.body.dataset.answers || 0) + 1);
  }

  // ---- the answer -------------------------------------------------------------------------------
  function render(body, predictions) {
    const first = predictions[0] || { items: [] };
    $("model-version").textContent = first.model_version || state.config.model_version || "?";
    if (first.provider) $("model-provider").textContent = first.provider;
    const reasons = [...new Set(predictions.flatMap((p) => (p.fallback ? p.fallback.split(",") : [])))];
    $("fallback").dataset.reasons = reasons.join(",");
    show("fallback", reasons.length
      ? `Fallback (${reasons.join(", ")}): ${reasons.map((r) => REASONS[r] || r).join("; ")}.` : "");
    show("notice", predictions.map((p) => p.notice).filter(Boolean).join(" "));
    const compare = predictions.length > 1;
    $("ranking").hidden = compare;
    $("history").hidden = compare;
    $("compare").hidden = !compare;
    if (compare) renderCompare(body, predictions);
    else renderRanking(first);
    $("request-body").textContent = JSON.stringify(body, null, 2);
  }

  function itemCell(item) {
    const cell = el("td", "item");
    cell.append(el("span", "title", item.title || item.item_id));
    const meta = el("span", "meta", item.title ? item.item_id : "");
    if (item.category) meta.append(el("span", "category", item.category));
    if (item.new) meta.append(el("span", "badge", "new"));
    cell.append(meta);
    return cell;
  }

  function renderRanking(prediction) {
    const items = prediction.items || [];
    const scale = bars.scaleOf(items);
    const rows = items.map((item, n) => {
      const row = el("tr");
      row.dataset.itemId = item.item_id;
      row.append(el("td", "rank", n + 1), itemCell(item));
      const score = el("td", "score", item.score.toFixed(3));
      score.dataset.score = String(item.score);
      const bar = el("td", "why");
      bar.append(bars.bar(item, scale, false));
      const p = el("td", "p-conversion");
      if (typeof item.p_conversion === "number") {
        p.dataset.value = String(item.p_conversion);
        const meter = el("span", "meter");
        const fill = el("span", "fill");
        fill.style.width = `${Math.max(0, Math.min(1, item.p_conversion)) * 100}%`;
        meter.append(fill);
        p.append(meter, el("span", null, `${(item.p_conversion * 100).toFixed(1)}%`));
      }
      row.append(score, bar, p);
      return row;
    });
    document.querySelector("#items tbody").replaceChildren(...rows);
    show("empty", items.length ? "" : "No items in this answer.");
    renderHistory(prediction.history);
  }

  function renderHistory(history) {
    const list = $("history-items");
    if (!Array.isArray(history)) {
      list.replaceChildren();
      $("history-note").textContent = "This server's answers do not carry the user's history.";
      return;
    }
    list.dataset.total = String(history.length);
    list.replaceChildren(...history.slice(0, HISTORY_SHOWN).map((h) => {
      const entry = el("li");
      entry.dataset.itemId = h.item_id;
      entry.append(el("span", "title", h.title || h.item_id));
      const meta = el("span", "meta", h.title ? h.item_id : "");
      if (h.category) meta.append(el("span", "category", h.category));
      if (h.scene) meta.append(el("span", "scene-tag", `in ${h.scene}`));
      entry.append(meta);
      return entry;
    }));
    const older = history.length - HISTORY_SHOWN;
    $("history-note").textContent = !history.length ? "No history: a user the feature store does not know."
      : `Most recent first, as the feature store holds it${older > 0 ? ` (and ${older} older)` : ""}.`;
  }

  function renderCompare(body, predictions) {
    const all = predictions.flatMap((p) => p.items || []);
    const scale = bars.scaleOf(all);
    const ranks = predictions.map((p) => new Map((p.items || []).map((item, n) => [item.item_id, n + 1])));
    ["compare-a", "compare-b"].forEach((id, side) => {
      const prediction = predictions[side];
      const scene = body.instances[side].scene;
      const other = ranks[1 - side];
      const column = $(id);
      const heading = el("h2", null, `top ${COMPARE_K} in ${scene}`);
      const note = el("p", "muted", prediction.fallback ? `fallback: ${prediction.fallback}` : "");
      const list = el("ol", "compare-list");
      (prediction.items || []).forEach((item) => {
        const entry = el("li");
        entry.dataset.itemId = item.item_id;
        entry.dataset.score = String(item.score);
        const where = other.get(item.item_id);
        entry.classList.toggle("shared", where !== undefined);
        const head = el("div", "line");
        head.append(el("span", "title", item.title || item.item_id), el("span", "score", item.score.toFixed(3)));
        const meta = el("span", "meta", item.title ? item.item_id : "");
        if (item.category) meta.append(el("span", "category", item.category));
        const otherScene = body.instances[1 - side].scene;
        meta.append(el("span", "also", where ? `#${where} in ${otherScene}` : `not in ${otherScene}'s top ${COMPARE_K}`));
        entry.append(head, meta, bars.bar(item, scale, true));
        list.append(entry);
      });
      column.replaceChildren(heading, note, list);
    });
  }

  // ---- wiring -----------------------------------------------------------------------------------
  function setMode(mode) {
    state.mode = mode;
    document.body.dataset.mode = mode;
    $("mode-rank").setAttribute("aria-selected", String(mode === "rank"));
    $("mode-compare").setAttribute("aria-selected", String(mode === "compare"));
    $("go").textContent = mode === "compare" ? "Compare" : "Rank";
    if (state.config) ask();
  }

  document.addEventListener("DOMContentLoaded", () => {
    $("ask").addEventListener("submit", ask);
    $("mode-rank").addEventListener("click", () => setMode("rank"));
    $("mode-compare").addEventListener("click", () => setMode("compare"));
    $("hour").addEventListener("input", timestampText);
    $("diversity").addEventListener("input", () => { $("diversity-value").value = $("diversity").value; });
    document.body.dataset.mode = state.mode;
    start();
  });
})();
