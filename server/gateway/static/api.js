// Calls to the server's /v1 API. The API key lives in sessionStorage (gone when the tab closes); errors in
// OpenAI's shape {"error": {"message", ...}} become ApiError with the server's own message.

const KEY = "counterpoint.apiKey";

export const apiKey = {
  get: () => sessionStorage.getItem(KEY) || "",
  set: (key) => (key ? sessionStorage.setItem(KEY, key) : sessionStorage.removeItem(KEY)),
};

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status; // HTTP status; 0 when the stream itself broke
  }
}

function headers() {
  const h = { "content-type": "application/json" };
  const key = apiKey.get();
  if (key) h.authorization = `Bearer ${key}`;
  return h;
}

async function failure(response) {
  let message = `${response.status} ${response.statusText}`;
  try {
    message = (await response.json()).error?.message || message;
  } catch {
    // not JSON: keep the status line
  }
  return new ApiError(response.status, message);
}

export async function getJSON(path) {
  const response = await fetch(path, { headers: headers() });
  if (!response.ok) throw await failure(response);
  return response.json();
}

export async function postJSON(path, body) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) throw await failure(response);
  return response.json();
}

// POST a streaming request and call onChunk(chunk) for every SSE `data:` payload until `[DONE]`.
// An error sent mid-stream (a `data: {"error": ...}` line) throws ApiError, as does a stream cut short.
export async function stream(path, body, onChunk, signal) {
  const response = await fetch(path, { method: "POST", headers: headers(), body: JSON.stringify(body), signal });
  if (!response.ok) throw await failure(response);
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) throw new ApiError(0, "the stream ended before the server finished");
    buffer += value;
    const lines = buffer.split("\n");
    buffer = lines.pop();
    for (const line of lines) {
      if (!line.startsWith("data:")) continue; // blank separators and `: ping` comments
      const data = line.slice(5).trim();
      if (data === "[DONE]") return;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new ApiError(500, chunk.error.message);
      onChunk(chunk);
    }
  }
}
