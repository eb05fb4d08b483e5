// Event: one audit event as a plugin sees it, with generic access to every field by its JSON key, and
// the edits a plugin makes to it.

import { Edit } from "./generated/proto/eventplug/v1/Edit";
import { EditOp } from "./generated/proto/eventplug/v1/EditOp";
import { JsonParser } from "./json";
import { encodeUtf8, jsonNumber, jsonString } from "./text";
import { JsonValue } from "./value";

/**
 * One Teleport audit event, as event-handler posts it: a flat JSON object whose keys are the event's
 * fields (`user`, `addr.remote`, …). Works for every event type, including types added after this SDK.
 *
 * Reads see the event as it arrived and decode only what they touch. Writes (`set…`, `remove…`) do not
 * change what reads return: each one records an {@link Edit} that the host applies to the original JSON
 * after the call, keeping every byte the plugin did not touch. An event with no edits is forwarded
 * exactly as it arrived.
 *
 * Keys are taken whole: `addr.remote` is one key, not a path. To reach inside nested objects and arrays
 * use the `…At` methods with one path segment per key (a segment of digits indexes an array).
 */
export class Event {
  /** The event type, e.g. `user.login` (the JSON key `event`). */
  readonly type: string;
  /** Size in bytes of the event as the plugin received it (the encoded envelope). */
  readonly byteLength: i32;
  /** The changes made during this call, in order. */
  readonly edits: Edit[] = [];
  private readonly root: JsonValue;

  constructor(type: string, byteLength: i32, root: JsonValue) {
    this.type = type;
    this.byteLength = byteLength;
    this.root = root;
  }

  /** Whether the event has the top-level key `key`. */
  has(key: string): bool {
    return this.root.get(key) !== null;
  }

  /** The value of the top-level key `key`, or null when the event does not have it. */
  get(key: string): JsonValue | null {
    return this.root.get(key);
  }

  /** The value at `path` (one segment per key; digits index arrays), or null when any step is missing. */
  getAt(path: string[]): JsonValue | null {
    return this.root.getAt(path);
  }

  /** The string at `key`, or `fallback` when it is absent or not a string. */
  getString(key: string, fallback: string = ""): string {
    const value = this.root.get(key);
    return value === null ? fallback : value.asString(fallback);
  }

  /** The number at `key`, or `fallback` when it is absent or not a number. */
  getNumber(key: string, fallback: f64 = 0): f64 {
    const value = this.root.get(key);
    return value === null ? fallback : value.asNumber(fallback);
  }

  /** The boolean at `key`, or `fallback` when it is absent or not a boolean. */
  getBool(key: string, fallback: bool = false): bool {
    const value = this.root.get(key);
    return value === null ? fallback : value.asBool(fallback);
  }

  /** The strings of the array at `key`; empty when it is absent or not an array. */
  getStringArray(key: string): string[] {
    const value = this.root.get(key);
    return value === null ? new Array<string>() : value.asStringArray();
  }

  /** The top-level keys, in the order they arrived. */
  keys(): string[] {
    return this.root.keys();
  }

  /** Sets `key` to the string `value`. */
  setString(key: string, value: string): void {
    this.record([key], EditOp.EDIT_OP_SET, jsonString(value));
  }

  /** Sets `key` to the number `value` (NaN and infinities cannot be written as JSON: they abort the call). */
  setNumber(key: string, value: f64): void {
    this.record([key], EditOp.EDIT_OP_SET, jsonNumber(value, "setNumber(" + jsonString(key) + ")"));
  }

  /** Sets `key` to `true` or `false`. */
  setBool(key: string, value: bool): void {
    this.record([key], EditOp.EDIT_OP_SET, value ? "true" : "false");
  }

  /** Sets `key` to JSON `null`. */
  setNull(key: string): void {
    this.record([key], EditOp.EDIT_OP_SET, "null");
  }

  /** Sets `key` to an array of strings. */
  setStringArray(key: string, values: string[]): void {
    const parts = new Array<string>(values.length);
    for (let i = 0; i < values.length; i++) parts[i] = jsonString(values[i]);
    this.record([key], EditOp.EDIT_OP_SET, "[" + parts.join(",") + "]");
  }

  /** Sets `key` to the value written as JSON text in `json` (`{"a":1}`, `[1,2]`, …); invalid JSON aborts the call. */
  setJson(key: string, json: string): void {
    this.setJsonAt([key], json);
  }

  /**
   * Sets the value at `path` to the JSON text `json`; objects missing along the path are created, and an
   * index equal to an array's length appends. Invalid JSON aborts the call.
   */
  setJsonAt(path: string[], json: string): void {
    const parser = new JsonParser();
    if (parser.parse(encodeUtf8(json)) === null) {
      throw new Error("setJsonAt(" + pathText(path) + "): the value is not JSON: " + parser.error);
    }
    this.record(path, EditOp.EDIT_OP_SET, json);
  }

  /** Removes the top-level key `key` (removing an absent key is not an error). */
  remove(key: string): void {
    this.record([key], EditOp.EDIT_OP_REMOVE, "");
  }

  /** Removes the member or array element at `path` (removing something absent is not an error). */
  removeAt(path: string[]): void {
    this.record(path, EditOp.EDIT_OP_REMOVE, "");
  }

  /** Whether this call changed the event. */
  get modified(): bool {
    return this.edits.length > 0;
  }

  /** The event as it arrived, as compact JSON text (key order kept; edits not applied). */
  toJson(): string {
    return this.root.toJson();
  }

  private record(path: string[], op: EditOp, valueJson: string): void {
    if (path.length == 0) throw new Error("an edit needs a path of at least one key");
    this.edits.push(new Edit(path, op, valueJson));
  }
}

function pathText(path: string[]): string {
  const parts = new Array<string>(path.length);
  for (let i = 0; i < path.length; i++) parts[i] = jsonString(path[i]);
  return "[" + parts.join(",") + "]";
}
