// A decoding method's parameter fields, built from its pydantic JSON schema (GET /v1/methods), and read back.
// An empty field is left out, so the server applies its default (shown as the placeholder). Values are parsed
// by the schema's types but not range-checked here: the server validates, and the page shows its answer.

// The schema's alternatives for one property, without `null` (an optional parameter is simply left out).
function options(schema) {
  return (schema.anyOf || [schema]).filter((s) => s.type !== "null");
}

// The value typed for one alternative, or undefined when the text does not fit that alternative.
function coerce(text, schema) {
  if (schema.enum) return schema.enum.includes(text) ? text : undefined;
  switch (schema.type) {
    case "number":
    case "integer": {
      const n = Number(text);
      return Number.isFinite(n) && (schema.type === "number" || Number.isInteger(n)) ? n : undefined;
    }
    case "boolean":
      return text === "true" ? true : text === "false" ? false : undefined;
    case "string":
      return text;
    case "array": {
      if (text.startsWith("[")) return parseJSON(text);
      const items = text.split(",").map((t) => coerce(t.trim(), schema.items || { type: "string" }));
      return items.includes(undefined) ? undefined : items;
    }
    default:
      return parseJSON(text);
  }
}

function parseJSON(text) {
  try {
    return JSON.parse(text);
  } catch {
    return undefined;
  }
}

// The first alternative the text fits; the raw text when none does (the server then explains what it wants).
export function parseValue(text, schema) {
  for (const option of options(schema)) {
    const value = coerce(text, option);
    if (value !== undefined) return value;
  }
  return text;
}

function hint(schema) {
  const parts = options(schema).map((o) => {
    if (o.enum) return o.enum.join(" | ");
    if (o.type === "array") return `comma-separated ${o.items?.type || "values"}`;
    const low = o.minimum ?? o.exclusiveMinimum;
    const high = o.maximum ?? o.exclusiveMaximum;
    return low !== undefined || high !== undefined ? `${o.type} ${low ?? "…"} to ${high ?? "…"}` : o.type;
  });
  return parts.join(" or ");
}

function control(schema) {
  const [only, ...rest] = options(schema);
  if (only?.enum && !rest.length) {
    const select = document.createElement("select");
    for (const value of only.enum) select.append(new Option(value, value, false, value === schema.default));
    return select;
  }
  if (only?.type === "boolean" && !rest.length) {
    const select = document.createElement("select");
    for (const value of ["false", "true"]) select.append(new Option(value, value, false, String(schema.default) === value));
    return select;
  }
  const input = document.createElement("input");
  input.type = "text";
  input.inputMode = !rest.length && (only?.type === "number" || only?.type === "integer") ? "decimal" : "text";
  input.placeholder = schema.default === null || schema.default === undefined ? "default" : JSON.stringify(schema.default);
  return input;
}

// Fields for every property of `schema`, appended to `container`; returns read(), which gives the parameters.
export function buildFields(container, schema, idPrefix) {
  container.replaceChildren();
  const fields = [];
  for (const [name, property] of Object.entries(schema.properties || {})) {
    const id = `${idPrefix}-${name}`;
    const wrap = document.createElement("div");
    wrap.className = "field";
    const label = document.createElement("label");
    label.htmlFor = id;
    label.textContent = property.title || name;
    const input = control(property);
    input.id = id;
    input.name = name;
    input.title = hint(property);
    wrap.append(label, input);
    container.append(wrap);
    fields.push({ name, input, property });
  }
  if (!fields.length) {
    const none = document.createElement("p");
    none.className = "muted";
    none.textContent = "No parameters.";
    container.append(none);
  }
  return () => {
    const params = {};
    for (const { name, input, property } of fields) {
      const text = input.value.trim();
      if (text !== "" && !(input.tagName === "SELECT" && text === String(property.default))) {
        params[name] = parseValue(text, property);
      }
    }
    return params;
  };
}
