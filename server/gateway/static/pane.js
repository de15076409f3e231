// One pane: a decoding (a method with its parameter form, or an A/B experiment), its side of the conversation,
// and per answer the timing, what the method decided, the diagnostics summary and thumbs up/down.

import { postJSON, stream } from "./api.js";
import { Answer } from "./answer.js";
import { buildFields } from "./form.js";

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

export class Pane {
  constructor(index, catalog) {
    this.index = index;
    this.catalog = catalog; // GET /v1/methods: methods with parameter schemas, experiments, feedback
    this.history = []; // this pane's finished exchanges: user and assistant messages
    this.readParams = () => ({});
    const id = `pane-${index}`;
    this.root = el("article", "pane");
    this.root.setAttribute("aria-labelledby", `${id}-title`);
    const title = el("h2", "", `Pane ${index + 1}`);
    title.id = `${id}-title`;
    const label = el("label", "", "Decoding");
    label.htmlFor = `${id}-method`;
    this.method = el("select");
    this.method.id = `${id}-method`;
    this.method.addEventListener("change", () => this.showParams());
    this.about = el("p", "muted about");
    this.params = el("div", "fields");
    const details = el("details", "params");
    details.append(el("summary", "", "Parameters"), this.params);
    this.transcript = el("div", "transcript");
    this.transcript.addEventListener("click", (event) => this.explain(event.target));
    this.tokenInfo = el("p", "token-info muted");
    this.tokenInfo.setAttribute("aria-live", "polite");
    this.stats = el("dl", "stats");
    this.root.append(title, label, this.method, this.about, details, this.transcript, this.tokenInfo, this.stats);
  }

  // Offer the methods `model` runs (from GET /v1/models) and every experiment; keep the choice when possible.
  setModel(model, preferred) {
    const previous = this.method.value || preferred;
    this.method.replaceChildren();
    for (const m of this.catalog.data.filter((m) => model.methods.includes(m.id))) {
      this.method.append(new Option(m.id, `method:${m.id}`));
    }
    for (const x of this.catalog.experiments) this.method.append(new Option(`A/B experiment: ${x.id}`, `experiment:${x.id}`));
    const values = [...this.method.options].map((o) => o.value);
    this.method.value = values.includes(previous) ? previous : values[0];
    this.showParams();
  }

  showParams() {
    const [kind, name] = this.method.value.split(/:(.*)/s);
    if (kind === "experiment") {
      const x = this.catalog.experiments.find((e) => e.id === name);
      this.about.textContent = `Each request is given an arm: ${x.arms
        .map((a) => `${a.name} (weight ${a.weight}, ${JSON.stringify(a.decoding)})`).join(", ")}.`;
      this.params.replaceChildren(el("p", "muted", "The experiment's arms fix the parameters."));
      this.readParams = () => ({});
      return;
    }
    const method = this.catalog.data.find((m) => m.id === name);
    this.about.textContent = method.description;
    this.readParams = buildFields(this.params, method.parameters, `pane-${this.index}-${name}`);
  }

  decoding() {
    const [kind, name] = this.method.value.split(/:(.*)/s);
    if (kind === "experiment") return { experiment: name, diagnostics: true };
    return { method: name, ...this.readParams(), diagnostics: true };
  }

  clear() {
    this.history = [];
    this.transcript.replaceChildren();
    this.stats.replaceChildren();
    this.tokenInfo.textContent = "";
  }

  // Stream this pane's answer to `user` (an OpenAI user message) with the shared request settings; true if it
  // finished, false if it failed or was stopped.
  async send(user, settings, signal) {
    this.transcript.append(this.userMessage(user));
    const message = el("div", "msg assistant");
    this.transcript.append(message);
    const answer = new Answer(message, performance.now());
    const body = { ...settings.request, decoding: this.decoding(), stream: true, stream_options: { include_usage: true },
      messages: [...settings.system, ...this.history, user] };
    try {
      await stream("/v1/chat/completions", body, (chunk) => {
        answer.add(chunk);
        this.showStats(answer);
      }, signal);
      answer.finish();
      this.history.push(user, { role: "assistant", content: answer.text });
      this.showStats(answer);
      if (this.catalog.feedback && answer.id) message.after(this.feedback(answer.id));
      return true;
    } catch (error) {
      answer.finish();
      if (answer.text) this.showStats(answer);
      else this.stats.replaceChildren();
      const stopped = error.name === "AbortError";
      const note = el("div", stopped ? "msg note" : "msg error", stopped ? "Stopped." : `Error: ${error.message}`);
      if (!stopped) note.setAttribute("role", "alert");
      message.after(note);
      if (!answer.text) message.remove();
      return false;
    } finally {
      this.transcript.lastElementChild?.scrollIntoView({ block: "nearest" });
    }
  }

  userMessage(user) {
    const node = el("div", "msg user");
    const parts = typeof user.content === "string" ? [{ type: "text", text: user.content }] : user.content;
    for (const part of parts) {
      if (part.type === "text") node.append(el("p", "", part.text));
      else {
        const img = el("img", "thumb");
        img.src = part.image_url.url;
        img.alt = "attached image";
        node.append(img);
      }
    }
    return node;
  }

  showStats(answer) {
    const stats = answer.stats();
    const rows = [["Time to first token", stats.ttft], ["Speed (whole answer)", stats.rate], ["Tokens", stats.tokens],
      ["Decoding", answer.decided()], ["Diagnostics", answer.summary()]];
    this.stats.replaceChildren(...rows.flatMap(([k, v]) => [el("dt", "", k), el("dd", "", v)]));
  }

  feedback(completionId) {
    const bar = el("div", "feedback");
    const status = el("span", "muted");
    status.setAttribute("aria-live", "polite");
    const buttons = [["up", "Good answer", 1], ["down", "Bad answer", 0]].map(([way, name, score]) => {
      const button = el("button", `thumb-${way}`);
      const icon = el("img");
      icon.src = "/playground/thumb.svg";
      icon.alt = "";
      button.append(icon);
      button.type = "button";
      button.setAttribute("aria-label", name);
      button.setAttribute("aria-pressed", "false");
      button.addEventListener("click", async () => {
        try {
          await postJSON("/v1/feedback", { completion_id: completionId, score });
          for (const b of buttons) b.setAttribute("aria-pressed", String(b === button));
          status.textContent = "Feedback saved.";
        } catch (error) {
          status.textContent = `Feedback failed: ${error.message}`;
        }
      });
      return button;
    });
    bar.append(...buttons, status);
    return bar;
  }

  // Tap or click a token: its diagnostics in words (the tooltip, for screens without hover).
  explain(target) {
    if (target.classList?.contains("tok") && target.title) this.tokenInfo.textContent = target.title;
  }
}
