// The playground page: loads the models and methods, keeps two to four panes, and sends each message to every
// pane at once, so the same conversation streams under different decodings side by side.

import { ApiError, apiKey, getJSON } from "./api.js";
import { Pane } from "./pane.js";

const $ = (id) => document.getElementById(id);
const state = { models: [], catalog: null, panes: [], images: [], controller: null };

function say(message, isError = false) {
  const status = $("status");
  status.textContent = message;
  status.classList.toggle("error", isError);
  status.setAttribute("role", isError ? "alert" : "status");
}

// A stable pseudonymous user for this tab, so an A/B experiment keeps giving this person the same arm.
function sessionUser() {
  let user = sessionStorage.getItem("counterpoint.user");
  if (!user) {
    const bytes = crypto.getRandomValues(new Uint8Array(12)); // randomUUID needs https; this works on plain http too
    user = `playground-${Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("")}`;
    sessionStorage.setItem("counterpoint.user", user);
  }
  return user;
}

async function load() {
  say("Loading models and methods…");
  try {
    const [models, catalog] = await Promise.all([getJSON("/v1/models"), getJSON("/v1/methods")]);
    state.models = models.data;
    state.catalog = catalog;
  } catch (error) {
    const needsKey = error instanceof ApiError && error.status === 401;
    say(needsKey ? `This server needs an API key: ${error.message}` : `Could not load the server's models: ${error.message}`, true);
    if (needsKey) $("api-key").focus();
    return;
  }
  const select = $("model");
  select.replaceChildren(...state.models.map((m) => new Option(m.id, m.id)));
  if (!state.models.length) return say("No model is served yet (no worker is ready); reload in a moment.", true);
  state.panes = []; // new panes: the catalog may have changed
  setPanes(Number($("pane-count").value));
  say(`Ready: ${state.models.length} model(s), ${state.catalog.data.length} decoding methods` +
    (state.catalog.feedback ? "; feedback is recorded." : "."));
}

function currentModel() {
  return state.models.find((m) => m.id === $("model").value) || state.models[0];
}

// The default decodings: plain first, then contrast methods that need no extra input, then the model's others.
const DEFAULTS = ["plain", "dola", "lqcd", "contrastive_search"];

function preferred(index, model) {
  const order = [...DEFAULTS.filter((m) => model.methods.includes(m)), ...model.methods.filter((m) => !DEFAULTS.includes(m))];
  return `method:${order[index % order.length]}`;
}

function setPanes(count) {
  const model = currentModel();
  state.panes = state.panes.slice(0, count);
  while (state.panes.length < count) state.panes.push(new Pane(state.panes.length, state.catalog));
  $("panes").replaceChildren(...state.panes.map((p) => p.root));
  state.panes.forEach((p, i) => p.setModel(model, preferred(i, model)));
  clearConversation();
}

function clearConversation() {
  for (const pane of state.panes) pane.clear();
  state.images = [];
  showImages();
}

function settings() {
  const number = (id) => ($(id).value.trim() === "" ? undefined : Number($(id).value));
  const system = $("system").value.trim();
  return {
    system: system ? [{ role: "system", content: system }] : [],
    request: { model: currentModel().id, temperature: number("temperature"), max_tokens: number("max-tokens"),
      seed: number("seed"), user: sessionUser() },
  };
}

async function send(event) {
  event.preventDefault();
  const text = $("prompt").value.trim();
  if (!text && !state.images.length) return say("Type a message first.", true);
  if (!state.panes.length) return say("Nothing to send to: the models did not load.", true);
  const images = state.images.map((url) => ({ type: "image_url", image_url: { url } }));
  const user = { role: "user", content: images.length ? [{ type: "text", text }, ...images] : text };
  $("prompt").value = "";
  state.images = [];
  showImages();
  state.controller = new AbortController();
  $("send").disabled = true;
  $("stop").disabled = false;
  say("Streaming…");
  const common = settings();
  const answered = await Promise.all(state.panes.map((p) => p.send(user, common, state.controller.signal)));
  $("send").disabled = false;
  $("stop").disabled = true;
  say(answered.every(Boolean) ? "Done." : "Done; some panes have no answer (see their messages).");
}

// Images for vision models (vcd, ritual, lqcd), attached or pasted, sent as data URLs.
function addImages(files) {
  for (const file of files) {
    if (!file.type.startsWith("image/")) continue;
    const reader = new FileReader();
    reader.addEventListener("load", () => {
      state.images.push(reader.result);
      showImages();
    });
    reader.readAsDataURL(file);
  }
}

function showImages() {
  $("images").replaceChildren(...state.images.map((url, i) => {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "thumb-button";
    button.setAttribute("aria-label", `Remove image ${i + 1}`);
    const img = document.createElement("img");
    img.src = url;
    img.alt = "";
    img.className = "thumb";
    button.append(img);
    button.addEventListener("click", () => {
      state.images.splice(i, 1);
      showImages();
    });
    return button;
  }));
}

function start() {
  $("api-key").value = apiKey.get();
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    apiKey.set($("api-key").value.trim());
    load();
  });
  $("model").addEventListener("change", () => setPanes(state.panes.length));
  $("pane-count").addEventListener("change", () => setPanes(Number($("pane-count").value)));
  $("composer").addEventListener("submit", send);
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) $("composer").requestSubmit();
  });
  $("prompt").addEventListener("paste", (event) => addImages(event.clipboardData?.files || []));
  $("image-input").addEventListener("change", (event) => {
    addImages(event.target.files);
    event.target.value = "";
  });
  $("stop").addEventListener("click", () => state.controller?.abort());
  $("clear").addEventListener("click", clearConversation);
  load();
}

start();
