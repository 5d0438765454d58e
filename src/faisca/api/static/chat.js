// The chat page: talks to this server's own OpenAI API (/v1/models, /v1/chat/completions with SSE streaming).
// Model text reaches the page only as text nodes (FaiscaMarkdown builds DOM nodes, never HTML strings).
// Conversations, settings and the API key are kept in this browser's localStorage.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const STORE = { conversations: "faisca.conversations", settings: "faisca.settings", key: "faisca.apiKey",
                  model: "faisca.model", current: "faisca.current" };
  const SAMPLING = ["temperature", "top_p", "top_k", "max_tokens", "seed"];
  const MAX_IMAGE_BYTES = 1.5 * 1024 * 1024; // larger pictures are scaled down to MAX_IMAGE_SIDE (JPEG) first
  const MAX_IMAGE_SIDE = 1536;

  const state = {
    models: [],              // served models' cards
    conversations: load(STORE.conversations, []),
    currentId: localStorage.getItem(STORE.current),
    pending: [],             // images attached to the next message: data URIs
    controller: null,        // the running request's AbortController
  };

  function load(key, fallback) {
    try {
      return JSON.parse(localStorage.getItem(key)) ?? fallback;
    } catch {
      return fallback;
    }
  }

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function notice(text) {
    $("notice").textContent = text || "";
    $("notice").hidden = !text;
  }

  // ---- storage ----------------------------------------------------------------------------------------------------

  function saveConversations() {
    try {
      localStorage.setItem(STORE.conversations, JSON.stringify(state.conversations));
    } catch { // over the browser's quota: drop the pictures of older messages, newest kept
      for (const conv of state.conversations) {
        for (const msg of conv.messages.slice(0, -2)) {
          if (msg.images?.length) { msg.images = []; msg.imagesDropped = true; }
        }
      }
      try {
        localStorage.setItem(STORE.conversations, JSON.stringify(state.conversations));
        notice("The browser's storage is full: older pictures were not kept.");
      } catch {
        notice("The browser's storage is full: this conversation is not saved. Delete older ones.");
      }
    }
  }

  function current() {
    return state.conversations.find((conv) => conv.id === state.currentId) || null;
  }

  function settings() {
    return load(STORE.settings, {});
  }

  // ---- the API ----------------------------------------------------------------------------------------------------

  function api(path, init = {}) {
    const headers = { ...(init.headers || {}) };
    const key = localStorage.getItem(STORE.key);
    if (key) headers.Authorization = `Bearer ${key}`;
    if (init.body) headers["Content-Type"] = "application/json";
    return fetch(path, { ...init, headers });
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      return body.error?.message || body.error || body.detail || `HTTP ${response.status}`;
    } catch {
      return `HTTP ${response.status}`;
    }
  }

  async function loadModels() {
    let response;
    try {
      response = await api("/v1/models");
    } catch (error) {
      return notice(`The server cannot be reached: ${error.message}`);
    }
    if (response.status === 401) {
      notice("This server needs an API key: enter it in Settings.");
      openSettings(true);
      return;
    }
    if (!response.ok) return notice(`Models: ${await errorText(response)}`);
    const listed = (await response.json()).data;
    const cards = await Promise.all(listed.map(async (model) => {
      const card = await api(`/v1/models/${encodeURIComponent(model.id)}`).then((r) => (r.ok ? r.json() : model));
      return { ...model, ...card };
    }));
    state.models = cards.filter((card) => card.served !== false);
    notice(state.models.length ? "" : "This server serves no model.");
    const select = $("model");
    select.replaceChildren(...state.models.map((card) => {
      const unique = card.name && state.models.filter((other) => other.name === card.name).length === 1;
      const option = el("option", "", unique ? card.name : card.id); // short names: the select fits a phone
      option.value = card.id;
      option.title = card.id;
      return option;
    }));
    const wanted = current()?.model || localStorage.getItem(STORE.model);
    if (state.models.some((card) => card.id === wanted)) select.value = wanted;
    showCapabilities();
  }

  function model() {
    return state.models.find((card) => card.id === $("model").value) || null;
  }

  function readsImages() {
    return model()?.input === "text+image";
  }

  function showCapabilities() {
    const card = model();
    const chips = [];
    if (card) {
      const context = card.max_model_len || card.context_length;
      if (card.input === "text+image") chips.push(["images", "Reads images"]);
      if (card.tool_calling) chips.push(["tools", `Tool calling: ${card.tool_calling_support || "yes"}`]);
      if (context) chips.push([`${context >= 1024 ? `${Math.round(context / 1024)}K` : context} context`,
                               `${context} tokens of context`]);
    }
    $("caps").replaceChildren(...chips.map(([text, title]) => {
      const chip = el("span", "chip", text);
      chip.title = title;
      return chip;
    }));
    $("attach").classList.toggle("disabled", !readsImages());
    $("file").disabled = !readsImages();
    $("attach").title = readsImages() ? "Attach images" : "This model does not read images";
  }

  // ---- rendering --------------------------------------------------------------------------------------------------

  function renderConversations() {
    const nav = $("conversations");
    const sorted = [...state.conversations].sort((a, b) => b.updated - a.updated);
    nav.replaceChildren(...sorted.map((conv) => {
      const row = el("div", `conversation${conv.id === state.currentId ? " active" : ""}`);
      const open = el("button", "open", conv.title || "New chat");
      open.type = "button";
      open.title = conv.title || "";
      open.addEventListener("click", () => openConversation(conv.id));
      const remove = el("button", "remove", "×");
      remove.type = "button";
      remove.setAttribute("aria-label", `Delete ${conv.title}`);
      remove.addEventListener("click", () => deleteConversation(conv.id));
      row.append(open, remove);
      return row;
    }));
  }

  function statsText(stats) {
    const parts = [];
    if (stats.completion_tokens !== undefined) {
      parts.push(`${stats.approximate ? "~" : ""}${stats.completion_tokens} tokens`); // stopped: no usage came
    }
    if (stats.tokens_per_s) parts.push(`${stats.tokens_per_s.toFixed(1)} tok/s`);
    if (stats.prompt_tokens !== undefined) parts.push(`prompt ${stats.prompt_tokens} (${stats.cached_tokens ?? 0} cached)`);
    if (stats.finish_reason === "length") parts.push("cut at max tokens");
    return parts.join(" · ");
  }

  function messageView(msg) {
    const view = el("article", `msg ${msg.role}`);
    const bubble = el("div", "bubble");
    if (msg.images?.length) {
      const pictures = el("div", "pictures");
      for (const url of msg.images) {
        const img = el("img");
        img.src = url;
        img.alt = "attached picture";
        pictures.append(img);
      }
      bubble.append(pictures);
    }
    if (msg.imagesDropped) bubble.append(el("p", "muted", "(pictures not kept: the browser's storage was full)"));
    if (msg.reasoning) {
      const details = el("details", "reasoning");
      details.append(el("summary", "", "Reasoning"), el("div", "reasoning-text", msg.reasoning));
      bubble.append(details);
    }
    if (msg.role === "user") bubble.append(el("div", "text", msg.content));
    else if (msg.content) {
      const body = el("div", "markdown");
      body.append(FaiscaMarkdown.render(msg.content));
      bubble.append(body);
    }
    for (const call of msg.toolCalls || []) {
      const box = el("div", "tool-call");
      box.append(el("div", "tool-name", `Tool call: ${call.name || "?"}`));
      let args = call.arguments || "";
      try { args = JSON.stringify(JSON.parse(args), null, 2); } catch { /* shown as it came */ }
      box.append(el("pre", "", args));
      bubble.append(box);
    }
    if (msg.role === "assistant" && msg.streaming && !msg.content && !msg.reasoning && !msg.toolCalls?.length) {
      bubble.append(el("div", "typing", "…"));
    }
    if (msg.error) bubble.append(el("div", "error", msg.error));
    view.append(bubble);
    if (msg.role === "assistant" && (msg.stats || msg.stopped)) {
      const line = [msg.stats ? statsText(msg.stats) : "", msg.stopped ? "stopped" : ""].filter(Boolean).join(" · ");
      view.append(el("div", "stats", line));
    }
    return view;
  }

  function renderMessages() {
    const conv = current();
    const box = $("messages");
    if (!conv || conv.messages.length === 0) {
      const empty = el("div", "empty");
      empty.append(el("div", "empty-title", "What can I help with?"),
                   el("div", "muted", "Pick a model above and send a message. Conversations stay in this browser."));
      box.replaceChildren(empty);
      return;
    }
    box.replaceChildren(...conv.messages.map(messageView));
    box.scrollTop = box.scrollHeight;
  }

  let frame = 0;
  function updateLast(msg) { // one redraw of the streaming message per animation frame
    if (frame) return;
    frame = requestAnimationFrame(() => {
      frame = 0;
      const box = $("messages");
      const atBottom = box.scrollHeight - box.scrollTop - box.clientHeight < 80;
      box.lastElementChild?.replaceWith(messageView(msg));
      if (atBottom) box.scrollTop = box.scrollHeight;
    });
  }

  function renderAttachments() {
    $("attachments").replaceChildren(...state.pending.map((url, index) => {
      const item = el("div", "attachment");
      const img = el("img");
      img.src = url;
      img.alt = `picture ${index + 1}`;
      const remove = el("button", "remove", "×");
      remove.type = "button";
      remove.setAttribute("aria-label", "Remove picture");
      remove.addEventListener("click", () => { state.pending.splice(index, 1); renderAttachments(); });
      item.append(img, remove);
      return item;
    }));
  }

  // ---- conversations ----------------------------------------------------------------------------------------------

  function openConversation(id) {
    state.currentId = id;
    localStorage.setItem(STORE.current, id || "");
    const conv = current();
    $("system").value = conv ? conv.system || "" : settings().system || "";
    if (conv && state.models.some((card) => card.id === conv.model)) $("model").value = conv.model;
    showCapabilities();
    renderConversations();
    renderMessages();
    closeDrawers();
  }

  function deleteConversation(id) {
    if (state.controller && id === state.currentId) state.controller.abort();
    state.conversations = state.conversations.filter((conv) => conv.id !== id);
    saveConversations();
    openConversation(id === state.currentId ? null : state.currentId);
  }

  function newConversation() {
    const conv = { id: crypto.randomUUID ? crypto.randomUUID() : String(Date.now()), title: "", model: $("model").value,
                   system: $("system").value, messages: [], updated: Date.now() };
    state.conversations.push(conv);
    state.currentId = conv.id;
    localStorage.setItem(STORE.current, conv.id);
    return conv;
  }

  function wireMessages(conv, history) {
    const wire = conv.system ? [{ role: "system", content: conv.system }] : [];
    for (let i = 0; i < history.length; i++) {
      const msg = history[i];
      const next = history[i + 1];
      if (msg.role === "user" && next && next.error && !next.content) { i++; continue; } // a failed turn is left out
      if (msg.role === "user") {
        const images = (msg.images || []).map((url) => ({ type: "image_url", image_url: { url } }));
        wire.push({ role: "user", content: images.length ? [{ type: "text", text: msg.content }, ...images] : msg.content });
      } else {
        const calls = (msg.toolCalls || []).map((call) => ({ id: call.id, type: "function",
                                                             function: { name: call.name, arguments: call.arguments } }));
        wire.push({ role: "assistant", content: msg.content || "", ...(calls.length ? { tool_calls: calls } : {}) });
      }
    }
    return wire;
  }

  function samplingFields() {
    const fields = {};
    for (const name of SAMPLING) {
      const value = $(name).value.trim();
      if (value !== "") fields[name] = Number(value);
    }
    return fields;
  }

  // ---- streaming --------------------------------------------------------------------------------------------------

  async function readEvents(response, onEvent) { // server-sent events: `data: JSON` blocks, then `data: [DONE]`
    const reader = response.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((line) => line.startsWith("data:")).map((line) => line.slice(5).trim()).join("");
        if (data === "[DONE]") return;
        if (data) onEvent(JSON.parse(data));
      }
    }
  }

  function applyChunk(msg, chunk, timing) {
    if (chunk.error) {
      msg.error = chunk.error.message || String(chunk.error);
      return;
    }
    if (chunk.usage) msg.usage = chunk.usage;
    const choice = chunk.choices?.[0];
    if (!choice) return;
    const delta = choice.delta || {};
    if (delta.content || delta.reasoning_content || delta.tool_calls) {
      timing.first ??= performance.now();
      timing.chunks++;
    }
    if (delta.content) msg.content += delta.content;
    if (delta.reasoning_content) msg.reasoning = (msg.reasoning || "") + delta.reasoning_content;
    for (const part of delta.tool_calls || []) {
      const calls = (msg.toolCalls ||= []);
      const call = (calls[part.index ?? calls.length] ||= { id: "", name: "", arguments: "" });
      if (part.id) call.id = part.id;
      if (part.function?.name) call.name += part.function.name;
      if (part.function?.arguments) call.arguments += part.function.arguments;
    }
    if (choice.finish_reason) msg.finish_reason = choice.finish_reason;
  }

  function finishStats(msg, timing) {
    const end = performance.now();
    const usage = msg.usage;
    const tokens = usage ? usage.completion_tokens : timing.chunks;
    const decodeSeconds = timing.first ? (end - timing.first) / 1000 : 0;
    const stats = { completion_tokens: tokens, finish_reason: msg.finish_reason, approximate: !usage };
    // tokens after the first over the time after the first: the decoding speed, without the prompt's
    if (tokens > 1 && decodeSeconds > 0.01) stats.tokens_per_s = (tokens - 1) / decodeSeconds;
    if (usage) {
      stats.prompt_tokens = usage.prompt_tokens;
      stats.cached_tokens = usage.prompt_tokens_details?.cached_tokens ?? 0;
    }
    if (timing.first) stats.first_token_ms = Math.round(timing.first - timing.start);
    msg.stats = stats;
    delete msg.usage;
  }

  function setBusy(busy) {
    $("send").hidden = busy;
    $("stop").hidden = !busy;
    $("model").disabled = busy;
  }

  async function send() {
    if (state.controller) return;
    const text = $("prompt").value.trim();
    if (!text && state.pending.length === 0) return;
    const card = model();
    if (!card) return notice("No model to talk to yet.");
    if (state.pending.length && !readsImages()) return notice(`${card.id} does not read images.`);
    notice("");
    const conv = current() || newConversation();
    conv.model = card.id;
    conv.system = $("system").value.trim();
    conv.title ||= (text || "Picture").slice(0, 60);
    const user = { role: "user", content: text, images: state.pending };
    const answer = { role: "assistant", content: "", streaming: true };
    conv.messages.push(user, answer);
    conv.updated = Date.now();
    $("prompt").value = "";
    autoGrow();
    state.pending = [];
    renderAttachments();
    saveConversations();
    renderConversations();
    renderMessages();

    const body = { model: card.id, messages: wireMessages(conv, conv.messages.slice(0, -1)), stream: true,
                   stream_options: { include_usage: true }, ...samplingFields() };
    const timing = { start: performance.now(), first: null, chunks: 0 };
    state.controller = new AbortController();
    setBusy(true);
    try {
      const response = await api("/v1/chat/completions", { method: "POST", body: JSON.stringify(body),
                                                           signal: state.controller.signal });
      if (!response.ok) {
        answer.error = await errorText(response);
        if (response.status === 401) openSettings(true);
      } else {
        await readEvents(response, (chunk) => { applyChunk(answer, chunk, timing); updateLast(answer); });
      }
    } catch (error) {
      if (error.name === "AbortError") answer.stopped = true;
      else answer.error = `The request failed: ${error.message}`;
    } finally {
      state.controller = null;
      delete answer.streaming;
      if (!answer.error || answer.content) finishStats(answer, timing);
      conv.updated = Date.now();
      saveConversations();
      setBusy(false);
      if (state.currentId === conv.id) renderMessages();
    }
  }

  // ---- pictures ---------------------------------------------------------------------------------------------------

  function readAsDataUrl(blob) {
    return new Promise((resolve, reject) => {
      const reader = new FileReader();
      reader.onload = () => resolve(reader.result);
      reader.onerror = () => reject(reader.error);
      reader.readAsDataURL(blob);
    });
  }

  async function pictureUrl(file) {
    if (file.size <= MAX_IMAGE_BYTES) return readAsDataUrl(file);
    const bitmap = await createImageBitmap(file);
    const scale = Math.min(1, MAX_IMAGE_SIDE / Math.max(bitmap.width, bitmap.height));
    const canvas = el("canvas");
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    return canvas.toDataURL("image/jpeg", 0.9);
  }

  async function attach(files) {
    const pictures = [...files].filter((file) => file.type.startsWith("image/"));
    if (pictures.length === 0) return;
    if (!readsImages()) return notice(`${$("model").value} does not read images: pick a model that does.`);
    for (const file of pictures) {
      try {
        state.pending.push(await pictureUrl(file));
      } catch {
        notice(`${file.name || "That picture"} could not be read.`);
      }
    }
    renderAttachments();
  }

  // ---- drawers and settings ---------------------------------------------------------------------------------------

  const narrow = () => window.matchMedia("(max-width: 820px)").matches;

  function closeDrawers() {
    if (narrow()) {
      $("app").classList.remove("sidebar-open");
      $("settings").hidden = true;
    }
    $("scrim").hidden = true;
  }

  function openSettings(focusKey) {
    $("settings").hidden = false;
    if (narrow()) $("scrim").hidden = false;
    if (focusKey) $("api-key").focus();
  }

  function bindSettings() {
    const saved = settings();
    for (const name of SAMPLING) $(name).value = saved[name] ?? "";
    $("system").value = current()?.system ?? saved.system ?? "";
    $("api-key").value = localStorage.getItem(STORE.key) || "";
    const store = () => {
      const values = { system: $("system").value };
      for (const name of SAMPLING) values[name] = $(name).value;
      localStorage.setItem(STORE.settings, JSON.stringify(values));
    };
    for (const name of [...SAMPLING, "system"]) $(name).addEventListener("change", store);
    $("api-key").addEventListener("change", () => {
      const key = $("api-key").value.trim();
      if (key) localStorage.setItem(STORE.key, key);
      else localStorage.removeItem(STORE.key);
      loadModels();
    });
    $("clear-all").addEventListener("click", () => {
      if (!confirm("Delete all conversations kept in this browser?")) return;
      state.conversations = [];
      saveConversations();
      openConversation(null);
    });
  }

  function autoGrow() {
    const prompt = $("prompt");
    prompt.style.height = "auto";
    prompt.style.height = `${Math.min(prompt.scrollHeight, 220)}px`;
  }

  function bind() {
    bindSettings();
    $("composer").addEventListener("submit", (event) => { event.preventDefault(); send(); });
    $("prompt").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) { event.preventDefault(); send(); }
    });
    $("prompt").addEventListener("input", autoGrow);
    $("prompt").addEventListener("paste", (event) => {
      const files = [...(event.clipboardData?.files || [])];
      if (files.some((file) => file.type.startsWith("image/"))) { event.preventDefault(); attach(files); }
    });
    $("stop").addEventListener("click", () => state.controller?.abort());
    $("file").addEventListener("change", () => { attach($("file").files); $("file").value = ""; });
    const main = $("main");
    main.addEventListener("dragover", (event) => { event.preventDefault(); main.classList.add("dropping"); });
    main.addEventListener("dragleave", (event) => { if (event.target === main) main.classList.remove("dropping"); });
    main.addEventListener("drop", (event) => {
      event.preventDefault();
      main.classList.remove("dropping");
      attach(event.dataTransfer?.files || []);
    });
    $("model").addEventListener("change", () => {
      localStorage.setItem(STORE.model, $("model").value);
      showCapabilities();
    });
    $("new-chat").addEventListener("click", () => { openConversation(null); $("prompt").focus(); });
    $("toggle-sidebar").addEventListener("click", () => {
      const open = $("app").classList.toggle(narrow() ? "sidebar-open" : "sidebar-closed");
      if (narrow()) $("scrim").hidden = !open;
    });
    $("toggle-settings").addEventListener("click", () => ($("settings").hidden ? openSettings(false) : closeDrawers()));
    $("close-settings").addEventListener("click", () => { $("settings").hidden = true; $("scrim").hidden = true; });
    $("scrim").addEventListener("click", closeDrawers);
  }

  bind();
  openConversation(current() ? state.currentId : null);
  loadModels();
})();
