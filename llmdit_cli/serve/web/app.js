// The llmdit studio: a form built from GET /v1/llmdit/settings, work run as jobs
// (POST /v1/llmdit/generate, GET/DELETE /v1/llmdit/jobs/ID), rewriting, img2img, vision images and
// the history (GET/DELETE /v1/llmdit/history). No build step, no CDN: plain DOM code.
"use strict";
const $ = (sel, root = document) => root.querySelector(sel);
const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];
const role = (name) => $(`[data-role="${name}"]`);
const action = (name) => $(`[data-action="${name}"]`);

const state = {
  settings: [],      // from /v1/llmdit/settings
  images: {},        // image settings by key: a data URL, or "upload:NAME" from a reused entry
  init: null,        // the img2img input: {image: dataURL} or {parent: historyId}
  job: null,         // the running job's id
  abort: null,       // aborts a synchronous request (rewriting)
  nextHistory: null, // the history's cursor
};

// ---- talking to the server --------------------------------------------------------------------

const tokenBox = $("#token");
tokenBox.value = localStorage.getItem("llmdit-token") || "";
tokenBox.addEventListener("change", () => {
  localStorage.setItem("llmdit-token", tokenBox.value.trim());
  hideError();
  start();
});

function headers(json) {
  const h = json ? { "Content-Type": "application/json" } : {};
  const token = tokenBox.value.trim();
  if (token) h["Authorization"] = "Bearer " + token;
  return h;
}

function errorText(err, status) {
  return (err.message || `HTTP ${status}`) + (err.param ? ` (${err.param})` : "");
}

async function api(method, path, body, signal) {
  const form = body instanceof FormData; // multipart: the browser sets its Content-Type
  const init = { method, headers: headers(body !== undefined && !form), signal };
  if (body !== undefined) init.body = form ? body : JSON.stringify(body);
  const r = await fetch(path, init);
  const data = await r.json().catch(() => ({}));
  if (!r.ok) {
    const e = new Error(errorText((data && data.error) || {}, r.status));
    e.status = r.status;
    throw e;
  }
  return data;
}

async function runJob(label, start, onDone) {
  // Start a job, follow its progress, and show its result or why it ended.
  setBusy(true, label);
  try {
    const started = await start();
    state.job = started.job;
    const job = await follow(started.job);
    if (job.state === "done") await onDone(job.result);
    else if (job.state === "failed") showError(errorText(job.error));
    else showError("cancelled");
  } catch (e) {
    showError(e.message);
  } finally {
    state.job = null;
    setBusy(false);
    loadHistory();
  }
}

const blobs = new Map(); // file URL -> object URL (files never change)
async function fileUrl(path) {
  if (!blobs.has(path)) {
    const r = await fetch(path, { headers: headers(false) });
    if (!r.ok) throw new Error(`could not load ${path} (HTTP ${r.status})`);
    blobs.set(path, URL.createObjectURL(await r.blob()));
  }
  return blobs.get(path);
}

function readDataUrl(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.onerror = () => reject(new Error(`could not read ${file.name}`));
    reader.readAsDataURL(file);
  });
}

const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// ---- the settings form ------------------------------------------------------------------------

// Settings that name an image: a file input; the request sends the image (never a path).
const IMAGE_KEYS = new Set(["vl.image", "control.image", "generation.mask"]);
const WIDE = new Set(["encoder.system_prompt", "encoder.thinking_content", "encoder.assistant_content",
  "generation.negative_prompt", "layered.negative_prompt", "lora.loras", ...IMAGE_KEYS]);
const TEXTAREAS = new Set(["encoder.system_prompt", "generation.negative_prompt", "encoder.thinking_content"]);
const OPEN_PANELS = new Set(["Generation"]);

function shown(value) {
  if (value === null || value === undefined) return "";
  if (Array.isArray(value)) return value.join(",");
  return String(value);
}

function buildForm(list) {
  const box = role("settings");
  box.textContent = "";
  const panels = new Map();
  for (const s of list) {
    if (!panels.has(s.panel)) panels.set(s.panel, []);
    panels.get(s.panel).push(s);
  }
  for (const [panel, items] of panels) {
    const details = document.createElement("details");
    details.dataset.panel = panel;
    details.open = OPEN_PANELS.has(panel);
    const summary = document.createElement("summary");
    summary.textContent = panel;
    const grid = document.createElement("div");
    grid.className = "grid";
    details.append(summary, grid);
    if (items[0].section === "layered") {
      const note = document.createElement("p");
      note.className = "note";
      note.textContent = "For decomposing an image into layers and editing them (llmdit decompose, edit-layer).";
      grid.append(note);
    }
    for (const s of items) grid.append(settingControl(s));
    box.append(details);
  }
}

function settingControl(s) {
  const label = document.createElement("label");
  label.className = "setting" + (WIDE.has(s.key) ? " wide" : "");
  const id = "setting-" + s.key.replace(/[^a-z0-9]+/gi, "-");
  label.htmlFor = id;
  label.append(s.key === "seed" ? "seed" : s.name);
  const input = inputFor(s);
  input.id = id;
  input.dataset.setting = s.key;
  input.title = s.help;
  const help = document.createElement("small");
  help.textContent = s.help;
  label.append(input);
  if (s.key === "vl.alpha") label.append(rangeReadout(input, s));
  if (IMAGE_KEYS.has(s.key)) label.append(imageState(s.key));
  if (s.key === "lora.loras") label.append(loraPicker(input));
  label.append(help);
  return label;
}

function inputFor(s) {
  const fallback = s.model_default ?? s.default;
  const placeholder = fallback === null || fallback === undefined || fallback === "" ? "model default" : `default: ${shown(fallback)}`;
  if (IMAGE_KEYS.has(s.key)) {
    const input = document.createElement("input");
    input.type = "file";
    input.accept = "image/*";
    input.addEventListener("change", async () => {
      if (input.files[0]) state.images[s.key] = await readDataUrl(input.files[0]);
      else delete state.images[s.key];
      showImage(s.key);
    });
    return input;
  }
  if (s.key === "vl.alpha") {
    const input = document.createElement("input");
    input.type = "range";
    input.min = s.min ?? 0;
    input.max = s.max ?? 1;
    input.step = "0.05";
    input.value = fallback ?? 0.3;
    input.addEventListener("input", () => { input.dataset.touched = "1"; });
    return input;
  }
  if (s.key === "encoder.template" || s.choices || s.type === "boolean") {
    const select = document.createElement("select");
    const first = new Option(fallback === null || fallback === undefined ? "model default" : `default (${shown(fallback)})`, "");
    select.append(first);
    const values = s.type === "boolean" ? [true, false] : s.choices || [];
    for (const v of values) select.append(new Option(String(v), String(v)));
    return select;
  }
  const el = document.createElement(TEXTAREAS.has(s.key) ? "textarea" : "input");
  if (el.tagName === "TEXTAREA") el.rows = 2;
  if (s.type === "integer" || s.type === "number") {
    el.type = "number";
    el.step = s.type === "integer" ? "1" : "any";
    if (s.min !== null && s.min !== undefined) el.min = s.min;
    if (s.max !== null && s.max !== undefined && s.max < 1e15) el.max = s.max;
  } else if (el.tagName === "INPUT") {
    el.type = "text";
  }
  el.placeholder = s.key === "seed" ? "random" : placeholder;
  if (s.key === "slg.layers") el.placeholder += " (e.g. 7,8,9 or 7-12)";
  if (s.key === "lora.loras") el.placeholder = "NAME:SCALE, ...";
  return el;
}

function rangeReadout(input, s) {
  const out = document.createElement("output");
  const update = () => { out.textContent = input.dataset.touched ? input.value : `default ${shown(s.model_default ?? s.default)}`; };
  input.addEventListener("input", update);
  input.addEventListener("llmdit-reset", update);
  update();
  return out;
}

function imageState(key) {
  const span = document.createElement("span");
  span.dataset.role = "image-state";
  span.dataset.for = key;
  const label = document.createElement("span");
  label.dataset.role = "image-label";
  const clear = document.createElement("button");
  clear.type = "button";
  clear.dataset.action = "clear-image";
  clear.textContent = "No image";
  clear.addEventListener("click", () => {
    delete state.images[key];
    $(`[data-setting="${key}"]`).value = "";
    showImage(key);
  });
  span.append(label, clear);
  span.hidden = true;
  return span;
}

function showImage(key) {
  const box = $(`[data-role="image-state"][data-for="${key}"]`);
  if (!box) return;
  const value = state.images[key];
  box.hidden = !value;
  $('[data-role="image-label"]', box).textContent = !value ? "" :
    value.startsWith("upload:") ? `using ${value.slice(0, 20)}…` : "image chosen";
}

function loraPicker(input) {
  const span = document.createElement("span");
  span.dataset.role = "lora-picker";
  const select = document.createElement("select");
  select.dataset.role = "lora-choice";
  select.setAttribute("aria-label", "LoRA to add");
  const add = document.createElement("button");
  add.type = "button";
  add.dataset.action = "add-lora";
  add.textContent = "Add LoRA";
  add.addEventListener("click", () => {
    if (!select.value) return;
    const items = input.value.split(",").map((x) => x.trim()).filter(Boolean);
    items.push(`${select.value}:1`);
    input.value = items.join(", ");
  });
  span.append(select, add);
  return span;
}

function fillLoras(names) {
  const select = role("lora-choice");
  if (!select) return;
  select.textContent = "";
  for (const n of names) select.append(new Option(n.name, n.name));
  role("lora-picker").hidden = names.length === 0;
  const input = $('[data-setting="lora.loras"]');
  if (names.length === 0) input.placeholder = "this server has no LoRA folder (--lora-dir)";
}

function readValue(s, el) {
  if (IMAGE_KEYS.has(s.key)) return state.images[s.key];
  if (s.key === "vl.alpha") return el.dataset.touched ? Number(el.value) : undefined;
  const raw = el.value;
  if (raw.trim() === "") return undefined;
  if (s.key === "lora.loras") return raw.split(",").map((x) => x.trim()).filter(Boolean);
  if (s.type === "boolean") return raw === "true";
  if (s.choices && (s.type === "integer" || s.type === "number")) return /^-?[0-9.]+$/.test(raw) ? Number(raw) : raw;
  if (s.type === "list[integer]") return raw.trim();
  if (s.type === "integer" || s.type === "number") {
    const n = Number(raw);
    if (!Number.isFinite(n) || (s.type === "integer" && !Number.isInteger(n))) {
      throw new Error(`${s.name}: ${raw} is not ${s.type === "integer" ? "a whole number" : "a number"}`);
    }
    return n;
  }
  return raw;
}

function readSettings() {
  const llmdit = {};
  for (const s of state.settings) {
    if (s.section === "layered") continue; // the layer commands' settings
    const el = $(`[data-setting="${s.key}"]`);
    const value = readValue(s, el);
    if (value !== undefined) llmdit[s.name] = value;
  }
  return llmdit;
}

function resetForm() {
  for (const s of state.settings) {
    const el = $(`[data-setting="${s.key}"]`);
    if (s.key === "vl.alpha") {
      delete el.dataset.touched;
      el.value = s.model_default ?? s.default ?? 0.3;
      el.dispatchEvent(new Event("llmdit-reset"));
    } else {
      el.value = "";
    }
  }
  state.images = {};
  for (const key of IMAGE_KEYS) showImage(key);
}

function fillForm(request) {
  resetForm();
  for (const s of state.settings) {
    const value = request[s.name];
    if (value === undefined || value === null) continue;
    const el = $(`[data-setting="${s.key}"]`);
    if (IMAGE_KEYS.has(s.key)) {
      state.images[s.key] = value;
      showImage(s.key);
    } else if (s.key === "vl.alpha") {
      el.value = value;
      el.dataset.touched = "1";
      el.dispatchEvent(new Event("input"));
    } else if (s.key === "lora.loras") {
      el.value = value.join(", ");
    } else {
      el.value = shown(value);
    }
  }
}

// ---- work: generate, rewrite, cancel ----------------------------------------------------------

function setBusy(busy, label) {
  role("progress").hidden = !busy;
  role("status").textContent = label || "waiting";
  role("progress-bar").removeAttribute("value");
  for (const name of ["generate", "rewrite"]) action(name).disabled = busy;
}

function showProgress(job, started) {
  const bar = role("progress-bar");
  if (job.steps) {
    bar.max = job.steps;
    bar.value = job.step || 0;
  }
  const step = job.steps ? ` - step ${job.step || 0}/${job.steps}` : "";
  const seconds = ((Date.now() - started) / 1000).toFixed(1);
  role("status").textContent = `${job.state === "queued" ? "waiting in the queue" : job.stage || job.state}${step} - ${seconds} s`;
}

async function follow(jobId) {
  const started = Date.now();
  for (;;) {
    const job = await api("GET", `/v1/llmdit/jobs/${jobId}`);
    showProgress(job, started);
    if (["done", "failed", "cancelled"].includes(job.state)) return job;
    await sleep(250);
  }
}

async function generate(event) {
  event.preventDefault();
  hideError();
  const prompt = $("#prompt").value;
  let body;
  try {
    if (!prompt.trim()) throw new Error("prompt: write what the image should show");
    body = { prompt, n: 1, llmdit: readSettings(), ...(state.init || {}) };
  } catch (e) {
    showError(e.message);
    return;
  }
  await runJob("starting", () => api("POST", "/v1/llmdit/generate", body), (result) => showResult(result.images[0]));
}

async function showResult(image) {
  const url = await fileUrl(image.url);
  const img = role("result");
  img.src = url;
  const link = role("download");
  link.href = url;
  link.download = `llmdit-${image.seed}.png`;
  role("result-settings").textContent = JSON.stringify(image.settings, null, 2);
  $("#result").hidden = false;
}

async function cancel() {
  if (state.abort) state.abort.abort();
  if (state.job) {
    try { await api("DELETE", `/v1/llmdit/jobs/${state.job}`); } catch (e) { showError(e.message); }
  }
}

async function rewrite() {
  hideError();
  const prompt = $("#prompt").value;
  if (!prompt.trim()) { showError("prompt: write something to rewrite"); return; }
  const body = { prompts: [prompt], template: role("rewriter-template").value };
  state.abort = new AbortController();
  setBusy(true, "rewriting");
  try {
    const file = role("rewriter-image").files[0];
    if (file) body.image = await readDataUrl(file);
    const reply = await api("POST", "/v1/llmdit/rewrite", body, state.abort.signal);
    $("#prompt").value = reply.data[0].text;
  } catch (e) {
    showError(e.name === "AbortError" ? "cancelled" : e.message);
  } finally {
    state.abort = null;
    setBusy(false);
    loadHistory();
  }
}

// ---- img2img input ----------------------------------------------------------------------------

async function setInit(init, thumbUrl, label) {
  state.init = init;
  role("init-preview").hidden = false;
  role("init-thumb").src = thumbUrl;
  role("init-label").textContent = label;
  role("img2img").open = true;
}

function clearInit() {
  state.init = null;
  role("init-preview").hidden = true;
  role("init-image").value = "";
}

role("init-image").addEventListener("change", async (ev) => {
  const file = ev.target.files[0];
  if (!file) { clearInit(); return; }
  const url = await readDataUrl(file);
  setInit({ image: url }, url, file.name);
});

// ---- history ----------------------------------------------------------------------------------

async function loadHistory(more = false) {
  const params = new URLSearchParams({ limit: "20" });
  for (const [name, key] of [["history-task", "task"], ["history-model", "model"], ["history-query", "q"]]) {
    const v = role(name).value.trim();
    if (v) params.set(key, v);
  }
  if (more && state.nextHistory) params.set("before", state.nextHistory);
  try {
    const page = await api("GET", "/v1/llmdit/history?" + params);
    const list = role("history-list");
    if (!more) list.textContent = "";
    for (const entry of page.data) list.append(historyItem(entry));
    state.nextHistory = page.next;
    action("more-history").hidden = !page.next;
  } catch (e) {
    showError(e.message);
  }
}

function button(name, text, onClick) {
  const b = document.createElement("button");
  b.type = "button";
  b.dataset.action = name;
  b.textContent = text;
  b.addEventListener("click", onClick);
  return b;
}

function historyItem(entry) {
  const li = document.createElement("li");
  li.dataset.historyId = entry.id;
  li.dataset.task = entry.task;
  if (entry.urls.length) {
    const img = document.createElement("img");
    img.alt = `image of: ${entry.prompt.slice(0, 60)}`;
    fileUrl(entry.urls[0]).then((u) => { img.src = u; }).catch(() => {});
    li.append(img);
  }
  const text = document.createElement("div");
  text.className = "entry-text";
  const when = new Date(entry.created * 1000).toLocaleString();
  const head = document.createElement("div");
  head.textContent = `${entry.task} · ${entry.model}${entry.seed !== null ? ` · seed ${entry.seed}` : ""} · ${when}`;
  const prompt = document.createElement("div");
  prompt.textContent = entry.result ? `${entry.prompt} → ${entry.result}` : entry.prompt;
  text.append(head, prompt);
  if (entry.request) text.append(button("reuse", "Reuse", () => reuse(entry)));
  if (entry.urls.length) {
    text.append(button("img2img", "Use as input", async () => {
      setInit({ parent: entry.id }, await fileUrl(entry.urls[0]), `history ${entry.id}`);
    }));
  }
  if (entry.result) text.append(button("use-text", "Use text", () => { $("#prompt").value = entry.result; }));
  if (entry.stack) text.append(button("open-stack", "Open layers", () => openStack(entry.stack).catch((e) => showError(e.message))));
  text.append(button("delete", "Delete", async () => {
    try {
      await api("DELETE", `/v1/llmdit/history/${entry.id}`);
      li.remove();
    } catch (e) { showError(e.message); }
  }));
  li.append(text);
  return li;
}

async function reuse(entry) {
  $("#prompt").value = entry.prompt;
  fillForm(entry.request);
  if (entry.task === "img2img" && entry.parent) {
    try {
      const parent = await api("GET", `/v1/llmdit/history/${entry.parent}`);
      setInit({ parent: entry.parent }, await fileUrl(parent.urls[0]), `history ${entry.parent}`);
    } catch (e) { showError(`the input of this entry is gone: ${e.message}`); }
  } else {
    clearInit();
  }
  $("#prompt").focus();
}

// ---- layers: decompose, the stack view, the edit dialog ----------------------------------------

const stackView = { id: null, data: null, editLayer: null };

function layerSettings() {
  // The Layers panel's settings and the seed: what decompose and edit take.
  const llmdit = {};
  for (const s of state.settings) {
    if (s.section !== "layered" && s.key !== "seed") continue;
    const value = readValue(s, $(`[data-setting="${s.key}"]`));
    if (value !== undefined) llmdit[s.name] = value;
  }
  return llmdit;
}

async function decompose() {
  hideError();
  const file = role("decompose-image").files[0];
  if (!file) { showError("image: choose the image to decompose"); return; }
  let llmdit;
  try { llmdit = layerSettings(); } catch (e) { showError(e.message); return; }
  const prompt = role("decompose-prompt").value.trim();
  if (prompt) llmdit.prompt = prompt;
  const form = new FormData();
  form.append("image", file);
  form.append("llmdit", JSON.stringify(llmdit));
  await runJob("decomposing", () => api("POST", "/v1/llmdit/decompose", form), (result) => openStack(result.stack));
}

async function openStack(id) {
  const data = await api("GET", `/v1/llmdit/stacks/${id}`);
  stackView.id = id;
  stackView.data = data;
  role("stack-id").textContent = id;
  role("stack").hidden = false;
  fileUrl(data.source_url).then((u) => { role("source").src = u; }).catch(() => {});
  role("composite").src = await fileUrl(data.composite_url);
  role("composite").dataset.url = data.composite_url;
  renderTiles(data);
  if (stackView.editLayer !== null) renderVersions();
  history.replaceState(null, "", `?stack=${id}`);
}

function renderTiles(data) {
  const list = role("layer-tiles");
  list.textContent = "";
  const top = [...data.order].reverse();
  top.forEach((index, pos) => {
    const layer = data.layers[index];
    const li = document.createElement("li");
    li.dataset.layerIndex = index;
    li.draggable = true;
    li.classList.toggle("hidden-layer", layer.hidden);
    const img = document.createElement("img");
    img.alt = `layer ${index}`;
    img.dataset.role = "layer-image";
    fileUrl(layer.url).then((u) => { img.src = u; }).catch(() => {});
    const label = document.createElement("div");
    label.textContent = `layer ${index}${layer.hidden ? " (hidden)" : ""}`;
    li.append(img, label,
      button("toggle-visibility", layer.hidden ? "Show" : "Hide", () => toggleLayer(index)),
      button("layer-up", "↑", () => moveLayer(index, +1)),
      button("layer-down", "↓", () => moveLayer(index, -1)),
      button("edit-layer", "Edit", () => openEdit(index)));
    li.querySelector('[data-action="layer-up"]').disabled = pos === 0;
    li.querySelector('[data-action="layer-down"]').disabled = pos === top.length - 1;
    li.querySelector('[data-action="layer-up"]').setAttribute("aria-label", `move layer ${index} up`);
    li.querySelector('[data-action="layer-down"]').setAttribute("aria-label", `move layer ${index} down`);
    li.addEventListener("dragstart", (ev) => { ev.dataTransfer.setData("text/plain", String(index)); li.classList.add("dragging"); });
    li.addEventListener("dragend", () => li.classList.remove("dragging"));
    li.addEventListener("dragover", (ev) => ev.preventDefault());
    li.addEventListener("drop", (ev) => { ev.preventDefault(); dropLayer(Number(ev.dataTransfer.getData("text/plain")), index); });
    list.append(li);
  });
}

async function restack(order, hidden) {
  hideError();
  try {
    const data = await api("POST", `/v1/llmdit/stacks/${stackView.id}/restack`, { order, hidden });
    await openStack(data.id);
  } catch (e) { showError(e.message); }
}

function toggleLayer(index) {
  const hidden = new Set(stackView.data.hidden);
  if (hidden.has(index)) hidden.delete(index); else hidden.add(index);
  return restack(stackView.data.order, [...hidden]);
}

function moveLayer(index, by) {
  const order = [...stackView.data.order];
  const at = order.indexOf(index);
  const to = at + by; // `order` is bottom first: +1 moves a layer up the stack
  if (to < 0 || to >= order.length) return;
  [order[at], order[to]] = [order[to], order[at]];
  return restack(order, stackView.data.hidden);
}

function dropLayer(moved, onto) {
  if (moved === onto) return;
  const order = stackView.data.order.filter((i) => i !== moved);
  order.splice(order.indexOf(onto) + (stackView.data.order.indexOf(moved) < stackView.data.order.indexOf(onto) ? 1 : 0), 0, moved);
  return restack(order, stackView.data.hidden);
}

function openEdit(index) {
  stackView.editLayer = index;
  role("edit-layer-index").textContent = index;
  role("edit-status").textContent = "";
  renderVersions();
  const dialog = role("edit-dialog");
  if (!dialog.open) dialog.showModal();
  role("edit-instruction").focus();
}

function renderVersions() {
  const list = role("versions");
  list.textContent = "";
  const layer = stackView.data.layers[stackView.editLayer];
  if (!layer.versions.length) {
    const li = document.createElement("li");
    li.textContent = "none yet: the first edit keeps the current file as version 1";
    list.append(li);
  }
  for (const v of layer.versions) {
    const li = document.createElement("li");
    li.dataset.version = v.version;
    const img = document.createElement("img");
    img.alt = `version ${v.version}`;
    img.className = "checker";
    img.width = 64;
    fileUrl(v.url).then((u) => { img.src = u; }).catch(() => {});
    const b = button("revert", `Revert to version ${v.version}`, () => revertLayer(v.version));
    b.dataset.version = v.version;
    li.append(img, ` ${v.file} `, b);
    list.append(li);
  }
}

async function runEdit() {
  const instruction = role("edit-instruction").value.trim();
  const status = role("edit-status");
  if (!instruction) { status.textContent = "instruction: say what to change"; return; }
  const llmdit = {};
  for (const [name, key] of [["edit-steps", "layered_steps"], ["edit-seed", "seed"], ["edit-cfg", "layered_true_cfg_scale"]]) {
    const v = role(name).value.trim();
    if (v !== "") llmdit[key] = Number(v);
  }
  action("run-edit").disabled = true;
  try {
    const started = await api("POST", `/v1/llmdit/stacks/${stackView.id}/edit`,
      { layer: stackView.editLayer, instruction, llmdit });
    const t0 = Date.now();
    let job;
    for (;;) {
      job = await api("GET", `/v1/llmdit/jobs/${started.job}`);
      const step = job.steps ? ` - step ${job.step || 0}/${job.steps}` : "";
      status.textContent = `${job.stage || job.state}${step} - ${((Date.now() - t0) / 1000).toFixed(1)} s`;
      if (["done", "failed", "cancelled"].includes(job.state)) break;
      await sleep(250);
    }
    if (job.state !== "done") throw new Error(job.error ? job.error.message : job.state);
    status.textContent = `done: the previous version is kept as ${job.result.kept}`;
    await openStack(stackView.id);
  } catch (e) {
    status.textContent = e.message;
  } finally {
    action("run-edit").disabled = false;
    loadHistory();
  }
}

async function revertLayer(version) {
  try {
    const data = await api("POST", `/v1/llmdit/stacks/${stackView.id}/revert`, { layer: stackView.editLayer, version });
    await openStack(data.id);
    role("edit-status").textContent = `reverted to version ${version}`;
  } catch (e) { role("edit-status").textContent = e.message; }
}

async function exportStack(format) {
  try {
    const r = await fetch(`/v1/llmdit/stacks/${stackView.id}/export?format=${format}`, { headers: headers(false) });
    if (!r.ok) throw new Error((await r.json()).error.message);
    const a = document.createElement("a");
    a.href = URL.createObjectURL(await r.blob());
    a.download = `stack-${stackView.id}.${format}`;
    document.body.append(a);
    a.click();
    a.remove();
  } catch (e) { showError(e.message); }
}

async function compositeToImg2img() {
  const r = await fetch(role("composite").src);
  const url = await readDataUrl(await r.blob());
  setInit({ image: url }, url, `composite of stack ${stackView.id}`);
}

function closeStack() {
  role("stack").hidden = true;
  stackView.id = null;
  history.replaceState(null, "", location.pathname);
}

// ---- start ------------------------------------------------------------------------------------

function showError(message) {
  role("error").textContent = message;
  role("error").hidden = false;
}

function hideError() {
  role("error").hidden = true;
}

async function start() {
  try {
    const health = await (await fetch("/health")).json();
    if (health.auth && !tokenBox.value.trim()) {
      $("#token-box").open = true;
      showError("This server needs an API token: enter it under 'API token'.");
      return;
    }
    const models = await api("GET", "/v1/models");
    role("model").textContent = models.data[0].id;
    const settings = await api("GET", "/v1/llmdit/settings");
    state.settings = settings.data;
    buildForm(state.settings);
    const templates = (await api("GET", "/v1/llmdit/templates")).data;
    const style = $('[data-setting="encoder.template"]');
    const rewriters = role("rewriter-template");
    rewriters.textContent = "";
    for (const t of templates) {
      const target = t.category === "rewriter" ? rewriters : style;
      target.append(new Option(t.category === "rewriter" ? t.name : `${t.name} (${t.category})`, t.name));
    }
    if ($$("option", rewriters).some((o) => o.value === "general-enhancer")) rewriters.value = "general-enhancer";
    fillLoras((await api("GET", "/v1/llmdit/loras")).data);
    await loadHistory();
    const wanted = new URLSearchParams(location.search).get("stack");
    if (wanted) await openStack(wanted).catch((e) => showError(`stack ${wanted}: ${e.message}`));
    document.body.dataset.ready = "1"; // the form, its lists, the history (and a ?stack=) are in place
  } catch (e) {
    if (e.status === 401) {
      $("#token-box").open = true;
      showError("This server needs an API token: enter it under 'API token'.");
    } else {
      showError(e.message);
    }
  }
}

$("#form").addEventListener("submit", generate);
action("rewrite").addEventListener("click", rewrite);
action("cancel").addEventListener("click", cancel);
action("clear-input").addEventListener("click", clearInit);
action("reset").addEventListener("click", resetForm);
action("more-history").addEventListener("click", () => loadHistory(true));
action("decompose").addEventListener("click", decompose);
action("run-edit").addEventListener("click", runEdit);
role("edit-form").addEventListener("submit", (ev) => { ev.preventDefault(); runEdit(); }); // Enter edits
action("close-dialog").addEventListener("click", () => { role("edit-dialog").close(); stackView.editLayer = null; });
action("composite-to-img2img").addEventListener("click", compositeToImg2img);
action("close-stack").addEventListener("click", closeStack);
for (const b of $$('[data-action="export"]')) b.addEventListener("click", () => exportStack(b.dataset.format));
for (const name of ["history-task", "history-model", "history-query"]) role(name).addEventListener("change", () => loadHistory());
start();
