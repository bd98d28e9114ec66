// The llmdit web page: one form -> POST /v1/images/generations; progress from /v1/llmdit/status.
"use strict";
const $ = (id) => document.getElementById(id);
const tokenBox = $("token");
tokenBox.value = localStorage.getItem("llmdit-token") || "";
tokenBox.addEventListener("change", () => {
  localStorage.setItem("llmdit-token", tokenBox.value);
  $("error").hidden = true;
  loadLists();
});

function headers() {
  const h = { "Content-Type": "application/json" };
  if (tokenBox.value) h["Authorization"] = "Bearer " + tokenBox.value;
  return h;
}

async function getJSON(path) {
  const r = await fetch(path, { headers: headers() });
  if (!r.ok) {
    const e = new Error((await r.json()).error.message);
    e.status = r.status;
    throw e;
  }
  return r.json();
}

function number(id) {
  const v = $(id).value.trim();
  return v === "" ? undefined : Number(v);
}

function request() {
  const llmdit = {};
  const put = (k, v) => { if (v !== undefined && v !== "") llmdit[k] = v; };
  put("steps", number("steps"));
  put("seed", number("seed"));
  put("guidance_scale", number("guidance"));
  const slg = number("slg");
  if (slg) { llmdit.slg = true; llmdit.slg_scale = slg; }
  if ($("dype").checked) llmdit.dype = true;
  put("template", $("template").value);
  const body = { prompt: $("prompt").value, n: 1, response_format: "b64_json", llmdit };
  const w = number("width"), h = number("height");
  if (w !== undefined || h !== undefined) {
    if (w === undefined || h === undefined) throw new Error("give both width and height, or neither");
    body.size = `${w}x${h}`;
  }
  return body;
}

async function pollStatus(started, stop) {
  while (!stop.done) {
    try {
      const s = await getJSON("/v1/llmdit/status");
      const run = s.running;
      const step = run && run.total ? ` - step ${run.done}/${run.total}` : "";
      const where = run ? `${run.stage || run.label}${step}` : `waiting (${s.waiting} in the queue)`;
      $("status").textContent = `${where} - ${((Date.now() - started) / 1000).toFixed(1)} s`;
    } catch (e) { /* the result request reports errors */ }
    await new Promise((r) => setTimeout(r, 300));
  }
}

async function generate(event) {
  event.preventDefault();
  $("error").hidden = true;
  let body;
  try { body = request(); } catch (e) { showError(e.message); return; }
  $("generate").disabled = true;
  $("progress").hidden = false;
  const stop = { done: false };
  pollStatus(Date.now(), stop);
  try {
    const r = await fetch("/v1/images/generations", { method: "POST", headers: headers(), body: JSON.stringify(body) });
    const data = await r.json();
    if (!r.ok) throw new Error(data.error.message + (data.error.param ? ` (${data.error.param})` : ""));
    const item = data.data[0];
    const src = "data:image/png;base64," + item.b64_json;
    $("image").src = src;
    $("download").href = src;
    $("download").download = `llmdit-${item.llmdit.seed}.png`;
    $("settings").textContent = JSON.stringify(item.llmdit.settings, null, 2);
    $("result").hidden = false;
  } catch (e) {
    showError(e.message);
  } finally {
    stop.done = true;
    $("progress").hidden = true;
    $("generate").disabled = false;
  }
}

function showError(message) {
  $("error").textContent = message;
  $("error").hidden = false;
}

async function loadLists() {
  try {
    const models = await getJSON("/v1/models");
    $("model").textContent = models.data[0].id;
    const t = await getJSON("/v1/llmdit/templates");
    const select = $("template");
    select.length = 1;
    for (const x of t.data.filter((x) => x.category !== "rewriter")) {
      const o = document.createElement("option");
      o.value = x.name;
      o.textContent = `${x.name} (${x.category})`;
      select.appendChild(o);
    }
  } catch (e) {
    if (e.status === 401) {
      document.querySelector("details").open = true;
      showError("This server needs an API token: enter it under 'API token'.");
    } else {
      showError(e.message);
    }
  }
}

$("form").addEventListener("submit", generate);
loadLists();
