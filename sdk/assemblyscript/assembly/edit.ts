// Edits applied to JSON values inside the plugin, the way the host applies them to the event's JSON
// after the call (docs/abi.md, `HandleEventResponse.edits`), so that reads during the call see them.

import { jsonString } from "./text";
import { arrayIndex, JsonKind, JsonValue } from "./value";

/**
 * `container` (an object or an array) with the JSON text `json` set at `path[from..]` below it, as
 * JSON text. Objects missing along the path are created; on an array a segment is an index, and the
 * array's length appends. Throws, naming `what`, where the path goes through a value that is neither
 * an object nor an array, or past the end of an array.
 */
export function setBelow(container: JsonValue, path: string[], from: i32, json: string, what: string): string {
  const segment = path[from];
  const last = from == path.length - 1;
  const values = container.values();
  const isObject = container.kind == JsonKind.Object;
  const keys = isObject ? container.keys() : new Array<string>();
  // The host edits the last member with the key.
  let found = isObject ? keys.lastIndexOf(segment) : arrayIndex(segment);
  if (!isObject) {
    if (found < 0) throw new Error(what + ": " + jsonString(segment) + " is not an index into an array");
    if (found > values.length) {
      const length = values.length.toString();
      throw new Error(what + ": index " + segment + " is past the end of an array of " + length + " elements (only " + length + " appends)");
    }
    if (found == values.length) found = -1;
  }
  const parts = new Array<string>(values.length);
  for (let i = 0; i < values.length; i++) {
    let text: string;
    if (i != found) text = values[i].toJson();
    else if (last) text = json;
    else text = setBelow(containerAt(values[i], segment, what), path, from + 1, json, what);
    parts[i] = isObject ? jsonString(keys[i]) + ":" + text : text;
  }
  if (found < 0) {
    const added = nestedJson(path, from + 1, json);
    parts.push(isObject ? jsonString(segment) + ":" + added : added);
  }
  return wrap(container, parts);
}

/**
 * `container` (an object or an array) with what `path[from..]` names below it removed, as JSON text;
 * null when the path names nothing (removing something absent changes nothing).
 */
export function removeBelow(container: JsonValue, path: string[], from: i32): string | null {
  const segment = path[from];
  const last = from == path.length - 1;
  const values = container.values();
  const isObject = container.kind == JsonKind.Object;
  const keys = isObject ? container.keys() : new Array<string>();
  const found = isObject ? keys.lastIndexOf(segment) : arrayIndex(segment);
  if (found < 0 || found >= values.length) return null;
  let replacement: string | null = null;
  if (!last) {
    const child = values[found];
    if (child.kind != JsonKind.Object && child.kind != JsonKind.Array) return null;
    replacement = removeBelow(child, path, from + 1);
    if (replacement === null) return null;
  }
  const parts = new Array<string>();
  for (let i = 0; i < values.length; i++) {
    let text: string;
    if (i == found && replacement !== null) text = replacement;
    // Removing a member removes every member with that key, as the host does.
    else if (last && (isObject ? keys[i] == segment : i == found)) continue;
    else text = values[i].toJson();
    parts.push(isObject ? jsonString(keys[i]) + ":" + text : text);
  }
  return wrap(container, parts);
}

/** `{"a":{"b":json}}` for the segments `a`, `b` of `path[from..]`; `json` itself when there are none. */
export function nestedJson(path: string[], from: i32, json: string): string {
  let text = json;
  for (let i = path.length - 1; i >= from; i--) text = "{" + jsonString(path[i]) + ":" + text + "}";
  return text;
}

/** `value` when it is an object or an array, which a path can go on into; throws otherwise. */
export function containerAt(value: JsonValue, segment: string, what: string): JsonValue {
  if (value.kind == JsonKind.Object || value.kind == JsonKind.Array) return value;
  throw new Error(what + ": " + jsonString(segment) + " holds " + kindName(value.kind) + ", not an object or an array");
}

function wrap(container: JsonValue, parts: string[]): string {
  return container.kind == JsonKind.Object ? "{" + parts.join(",") + "}" : "[" + parts.join(",") + "]";
}

function kindName(kind: JsonKind): string {
  switch (kind) {
    case JsonKind.Null:
      return "null";
    case JsonKind.Number:
      return "a number";
    case JsonKind.String:
      return "a string";
    case JsonKind.Bool:
      return "a boolean";
    case JsonKind.Object:
      return "an object";
  }
  return "an array";
}
