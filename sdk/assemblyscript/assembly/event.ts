// Event: one audit event as a plugin sees it, with generic access to every field by its JSON key, and
// the edits a plugin makes to it.

import { containerAt, nestedJson, removeBelow, setBelow } from "./edit";
import { Edit } from "./generated/proto/eventplug/v1/Edit";
import { EditOp } from "./generated/proto/eventplug/v1/EditOp";
import { JsonParser, parseJson } from "./json";
import { encodeUtf8, jsonNumber, jsonString } from "./text";
import { JsonKind, JsonValue } from "./value";

/**
 * The top-level keys that identify an event. The host keeps each event to one outcome by its `uid`,
 * or where that is empty by its type, time, index and session id together: a redelivery gets the
 * first outcome again (docs/abi.md, "Once per event"). The `code` says, with the type, what the event
 * is. A plugin that changed any of them would forward an event no longer recognisable as the one that
 * arrived, so no edit may touch them.
 */
const IDENTITY_KEYS: string[] = ["event", "uid", "time", "ei", "code", "sid"];

/**
 * Whether `key` is one of the top-level keys that identify an event (`event`, `uid`, `time`, `ei`,
 * `code`, `sid`): those are read-only, and an edit of them, or of anything below them, aborts the call.
 */
export function isIdentityKey(key: string): bool {
  return IDENTITY_KEYS.includes(key);
}

/**
 * One Teleport audit event, as event-handler posts it: a flat JSON object whose keys are the event's
 * fields (`user`, `addr.remote`, …). Works for every event type, including types added after this SDK.
 *
 * Reads decode only what they touch, and see the event with this call's edits applied: after
 * `event.setString("user", "x")`, `event.getString("user")` is `"x"`. Each write (`set…`, `remove…`)
 * also records an {@link Edit} that the host applies to the original JSON after the call, keeping
 * every byte the plugin did not touch. An event with no edits is forwarded exactly as it arrived.
 *
 * Keys are taken whole: `addr.remote` is one key, not a path. To reach inside nested objects and arrays
 * use the `…At` methods with one path segment per key (a segment of digits indexes an array).
 *
 * The keys that identify the event ({@link isIdentityKey}) are read-only: editing them aborts the call.
 */
export class Event {
  /** The event type, e.g. `user.login` (the JSON key `event`). */
  readonly type: string;
  /** Size in bytes of the event as the plugin received it (the encoded envelope). */
  readonly byteLength: i32;
  /** The changes made during this call, in order. */
  readonly edits: Edit[] = [];
  private readonly root: JsonValue;
  // Keys the event arrived with whose value an edit changed, with the new value; null: removed.
  private readonly replaced: Map<string, JsonValue | null> = new Map<string, JsonValue | null>();
  // Keys edits added, with their values, in the order the host appends them.
  private readonly added: Map<string, JsonValue> = new Map<string, JsonValue>();

  constructor(type: string, byteLength: i32, root: JsonValue) {
    this.type = type;
    this.byteLength = byteLength;
    this.root = root;
  }

  /** Whether the event has the top-level key `key`. */
  has(key: string): bool {
    return this.get(key) !== null;
  }

  /** The value of the top-level key `key`, or null when the event does not have it. */
  get(key: string): JsonValue | null {
    if (this.added.has(key)) return this.added.get(key);
    if (this.replaced.has(key)) return this.replaced.get(key);
    return this.root.get(key);
  }

  /**
   * The value at `path` (one segment per key; digits index arrays), or null when any step is missing.
   * An empty path is the whole event.
   */
  getAt(path: string[]): JsonValue | null {
    if (path.length == 0) return this.edits.length == 0 ? this.root : parseJson(this.toJson());
    const member = this.get(path[0]);
    return member === null ? null : member.getAt(path.slice(1));
  }

  /** The string at `key`, or `fallback` when it is absent or not a string. */
  getString(key: string, fallback: string = ""): string {
    const value = this.get(key);
    return value === null ? fallback : value.asString(fallback);
  }

  /** The number at `key`, or `fallback` when it is absent or not a number. */
  getNumber(key: string, fallback: f64 = 0): f64 {
    const value = this.get(key);
    return value === null ? fallback : value.asNumber(fallback);
  }

  /** The boolean at `key`, or `fallback` when it is absent or not a boolean. */
  getBool(key: string, fallback: bool = false): bool {
    const value = this.get(key);
    return value === null ? fallback : value.asBool(fallback);
  }

  /** The strings of the array at `key`; empty when it is absent or not an array. */
  getStringArray(key: string): string[] {
    const value = this.get(key);
    return value === null ? new Array<string>() : value.asStringArray();
  }

  /** The top-level keys: those the event arrived with, in their order, then those edits added. */
  keys(): string[] {
    const keys = new Array<string>();
    const arrived = this.root.keys();
    for (let i = 0; i < arrived.length; i++) {
      if (!this.isRemoved(arrived[i])) keys.push(arrived[i]);
    }
    return keys.concat(this.added.keys());
  }

  /** Sets `key` to the string `value`. */
  setString(key: string, value: string): void {
    this.set([key], jsonString(value), "setString");
  }

  /** Sets `key` to the number `value` (NaN and infinities cannot be written as JSON: they abort the call). */
  setNumber(key: string, value: f64): void {
    this.set([key], jsonNumber(value, "setNumber(" + jsonString(key) + ")"), "setNumber");
  }

  /** Sets `key` to `true` or `false`. */
  setBool(key: string, value: bool): void {
    this.set([key], value ? "true" : "false", "setBool");
  }

  /** Sets `key` to JSON `null`. */
  setNull(key: string): void {
    this.set([key], "null", "setNull");
  }

  /** Sets `key` to an array of strings. */
  setStringArray(key: string, values: string[]): void {
    const parts = new Array<string>(values.length);
    for (let i = 0; i < values.length; i++) parts[i] = jsonString(values[i]);
    this.set([key], "[" + parts.join(",") + "]", "setStringArray");
  }

  /** Sets `key` to the value written as JSON text in `json` (`{"a":1}`, `[1,2]`, …); invalid JSON aborts the call. */
  setJson(key: string, json: string): void {
    this.set([key], json, "setJson");
  }

  /**
   * Sets the value at `path` to the JSON text `json`; objects missing along the path are created, and an
   * index equal to an array's length appends. Invalid JSON, a path through a value that is neither an
   * object nor an array, and an index past an array's length abort the call.
   */
  setJsonAt(path: string[], json: string): void {
    this.set(path, json, "setJsonAt");
  }

  /** Removes the top-level key `key` (removing an absent key is not an error). */
  remove(key: string): void {
    this.unset([key], "remove");
  }

  /** Removes the member or array element at `path` (removing something absent is not an error). */
  removeAt(path: string[]): void {
    this.unset(path, "removeAt");
  }

  /** Whether this call changed the event. */
  get modified(): bool {
    return this.edits.length > 0;
  }

  /** The event as compact JSON text, with this call's edits applied (key order kept, added keys last). */
  toJson(): string {
    if (this.edits.length == 0) return this.root.toJson();
    const parts = new Array<string>();
    const keys = this.root.keys();
    const values = this.root.values();
    for (let i = 0; i < keys.length; i++) {
      const key = keys[i];
      let value: JsonValue | null = values[i];
      if (this.replaced.has(key)) value = this.replaced.get(key);
      if (value !== null) parts.push(jsonString(key) + ":" + value.toJson());
    }
    const addedKeys = this.added.keys();
    for (let i = 0; i < addedKeys.length; i++) {
      parts.push(jsonString(addedKeys[i]) + ":" + this.added.get(addedKeys[i]).toJson());
    }
    return "{" + parts.join(",") + "}";
  }

  // Records an edit that sets `path` to the JSON text `json`, and keeps reads in step with it;
  // `method` names the caller in errors.
  private set(path: string[], json: string, method: string): void {
    const what = describe(method, path);
    const key = editableKey(path, what);
    const parser = new JsonParser();
    const value = parser.parse(encodeUtf8(json));
    if (value === null) throw new Error(what + ": the value is not JSON: " + parser.error);
    if (path.length == 1) this.put(key, value);
    else {
      const member = this.get(key);
      this.put(key, parseJson(member === null ? nestedJson(path, 1, json) : setBelow(containerAt(member, key, what), path, 1, json, what)));
    }
    this.edits.push(new Edit(path, EditOp.EDIT_OP_SET, json));
  }

  // Records an edit that removes `path`, and keeps reads in step with it.
  private unset(path: string[], method: string): void {
    const key = editableKey(path, describe(method, path));
    if (path.length == 1) {
      this.added.delete(key);
      if (this.root.get(key) !== null) this.replaced.set(key, null);
    } else {
      const member = this.get(key);
      if (member !== null && (member.kind == JsonKind.Object || member.kind == JsonKind.Array)) {
        const changed = removeBelow(member, path, 1);
        if (changed !== null) this.put(key, parseJson(changed));
      }
    }
    this.edits.push(new Edit(path, EditOp.EDIT_OP_REMOVE, ""));
  }

  // Gives the top-level `key` the value `value`: in place when the event has the key, else appended.
  private put(key: string, value: JsonValue): void {
    if (this.added.has(key) || this.isRemoved(key) || this.root.get(key) === null) this.added.set(key, value);
    else this.replaced.set(key, value);
  }

  // Whether an edit removed `key`, which the event arrived with, from its place.
  private isRemoved(key: string): bool {
    return this.replaced.has(key) && this.replaced.get(key) === null;
  }
}

// The top-level key an edit of `path` changes; throws, naming `what`, when there is none or it is read-only.
function editableKey(path: string[], what: string): string {
  if (path.length == 0) throw new Error(what + ": an edit needs a path of at least one key");
  const key = path[0];
  if (isIdentityKey(key)) {
    throw new Error(what + ": " + jsonString(key) + " identifies the event, so it cannot be edited (see isIdentityKey)");
  }
  return key;
}

// `setString("user")`, `setJsonAt(["annotations","seen-by-us"])`: the call, for error messages.
function describe(method: string, path: string[]): string {
  if (path.length == 1 && !method.endsWith("At")) return method + "(" + jsonString(path[0]) + ")";
  const parts = new Array<string>(path.length);
  for (let i = 0; i < path.length; i++) parts[i] = jsonString(path[i]);
  return method + "([" + parts.join(",") + "])";
}

/**
 * A view of one of Teleport's metadata blocks in an event: `event.server`, `event.connection`, … of
 * the typed views. A block's keys are top-level keys of the event, so its properties read and edit
 * the event itself, with the same rules as the event's own properties.
 */
export class EventBlock {
  /** The event the block belongs to. */
  protected readonly event: Event;

  constructor(event: Event) {
    this.event = event;
  }
}
