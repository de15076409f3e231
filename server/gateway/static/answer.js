// One streamed answer in a pane: its tokens (highlighted where the contrast changed the choice, shaded by the
// divergence between the views), its timing, what the method decided, and the diagnostics summary.

const LOG_FLOOR = -4; // divergences (nats) from 1e-4 up to 1 are shaded on a log scale; below is no shade

function heat(divergence) {
  if (!(divergence > 0)) return 0;
  return Math.min(1, Math.max(0, 1 - Math.log10(divergence) / LOG_FLOOR));
}

function describe(text, diag) {
  return diag.changed.map((changed, i) => {
    const own = `${JSON.stringify(diag.own_tokens?.[i] ?? "")} (id ${diag.own_token_ids?.[i] ?? "?"})`;
    const div = `divergence ${Number(diag.divergence[i]).toFixed(4)}`;
    return changed
      ? `Changed: the original view alone would have chosen ${own} instead of ${JSON.stringify(text)}; ${div}`
      : `Kept: the original view chose ${own} too; ${div}`;
  }).join("\n");
}

export class Answer {
  constructor(element, started) {
    this.element = element; // the message element the tokens go into
    this.started = started; // performance.now() when the request was sent
    this.firstToken = null; // performance.now() at the first generated token
    this.lastToken = null;
    this.text = "";
    this.id = null; // the completion id, for feedback
    this.decoding = null; // the resolved decoding: first chunk, then the final one with usage
    this.usage = null;
    this.numTokens = 0; // counted from the stream until usage arrives
    this.changed = [];
    this.divergence = [];
    this.pending = { changed: [], divergence: [], own_tokens: [], own_token_ids: [] }; // tokens with no text yet
    this.lastSpan = null;
  }

  add(chunk) {
    this.id ??= chunk.id;
    if (chunk.decoding) this.decoding = chunk.decoding;
    if (chunk.usage) this.usage = chunk.usage;
    for (const choice of chunk.choices || []) {
      const text = choice.delta?.content || "";
      const diag = choice.diagnostics;
      if (diag) this.see(diag);
      else if (text) this.numTokens += 1;
      if (text || diag) this.lastToken = performance.now();
      if (text && this.firstToken === null) this.firstToken = this.lastToken;
      if (text) this.show(text);
    }
  }

  see(diag) {
    this.numTokens += diag.changed.length;
    this.changed.push(...diag.changed);
    this.divergence.push(...diag.divergence);
    for (const key of Object.keys(this.pending)) this.pending[key].push(...(diag[key] || []));
  }

  show(text) {
    const span = document.createElement("span");
    span.className = "tok";
    span.textContent = text;
    this.text += text;
    this.element.append(span);
    this.lastSpan = span;
    this.annotate(span);
  }

  // Put the diagnostics gathered since the last text on `span` (a token's text can arrive with a later token's).
  annotate(span) {
    const diag = this.pending;
    if (!diag.changed.length) return;
    span.title = describe(span.textContent, diag);
    if (diag.changed.some(Boolean)) {
      span.classList.add("changed");
      span.style.setProperty("--heat", heat(Math.max(...diag.divergence)).toFixed(3));
    }
    for (const key of Object.keys(diag)) diag[key] = [];
  }

  finish() {
    if (this.lastSpan) this.annotate(this.lastSpan);
    if (this.usage) this.numTokens = this.usage.completion_tokens;
    this.lastToken ??= performance.now();
  }

  // Tokens per second over the whole answer, from sending to the last token: the browser may receive several
  // chunks at once, so a rate after the first token alone can be wildly off.
  stats() {
    const ttft = this.firstToken === null ? null : (this.firstToken - this.started) / 1000;
    const elapsed = (this.lastToken - this.started) / 1000;
    const rate = this.numTokens > 0 && elapsed > 0 ? this.numTokens / elapsed : null;
    return {
      ttft: ttft === null ? "–" : `${ttft.toFixed(2)} s`,
      rate: rate === null ? "–" : `${rate.toFixed(1)} tokens/s`,
      tokens: String(this.numTokens),
    };
  }

  decided() {
    const d = this.decoding;
    if (!d) return "";
    const arm = d.experiment ? ` (experiment ${d.experiment}, arm ${d.arm})` : "";
    const decided = d.decided && Object.keys(d.decided).length ? `; decided ${JSON.stringify(d.decided)}` : "";
    return `${d.method}${arm}${decided}`;
  }

  summary() {
    const n = this.changed.length;
    if (!n) return "No contrast view: nothing to compare.";
    const changed = this.changed.filter(Boolean).length;
    const mean = this.divergence.reduce((a, b) => a + b, 0) / n;
    return `Contrast changed ${changed} of ${n} tokens; mean divergence ${mean.toFixed(4)}.`;
  }
}
