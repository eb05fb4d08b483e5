// JsonValue: a read-only view of one JSON value held as protobuf bytes (google.protobuf.Value, Struct
// or ListValue), decoded only as far as a read needs.

import { FieldReader, WIRE_FIXED64, WIRE_LEN, WIRE_VARINT } from "./wire";
import { decodeUtf8, jsonNumber, jsonString, utf8Equals } from "./text";

/** The kind of a JSON value. */
export enum JsonKind {
  Null = 0,
  Number = 1,
  String = 2,
  Bool = 3,
  Object = 4,
  Array = 5,
}

// Field numbers of google.protobuf.Value's `kind` oneof, of Struct and of ListValue.
export const VALUE_NULL: u32 = 1;
export const VALUE_NUMBER: u32 = 2;
export const VALUE_STRING: u32 = 3;
export const VALUE_BOOL: u32 = 4;
export const VALUE_STRUCT: u32 = 5;
export const VALUE_LIST: u32 = 6;
export const STRUCT_FIELDS: u32 = 1;
export const ENTRY_KEY: u32 = 1;
export const ENTRY_VALUE: u32 = 2;
export const LIST_VALUES: u32 = 1;

/**
 * One JSON value of an event, a configuration or a test result. Reads decode only what they touch: a
 * member lookup scans the object's keys without decoding the other values.
 *
 * A value keeps the bytes it reads alive, so it stays valid after the call that produced it.
 */
@final
export class JsonValue {
  /** What kind of value this is. */
  readonly kind: JsonKind;
  // The bytes this value reads (kept alive by this reference).
  private owner: ArrayBuffer | null;
  // The payload: UTF-8 text (String), 8 bytes (Number), Struct bytes (Object), ListValue bytes (Array).
  private start: usize;
  private end: usize;
  private flag: bool;

  private constructor(kind: JsonKind, owner: ArrayBuffer | null, start: usize, end: usize, flag: bool) {
    this.kind = kind;
    this.owner = owner;
    this.start = start;
    this.end = end;
    this.flag = flag;
  }

  /** A view of the `google.protobuf.Value` message at `start..end` inside `owner`. */
  static ofValue(owner: ArrayBuffer | null, start: usize, end: usize): JsonValue {
    const reader = new FieldReader(start, end);
    let kind = JsonKind.Null;
    let payloadStart: usize = 0;
    let payloadEnd: usize = 0;
    let flag = false;
    // A oneof takes the last member written.
    while (reader.next()) {
      const number = reader.number;
      const wire = reader.wire;
      if (number == VALUE_NULL && wire == WIRE_VARINT) kind = JsonKind.Null;
      else if (number == VALUE_NUMBER && wire == WIRE_FIXED64) kind = JsonKind.Number;
      else if (number == VALUE_STRING && wire == WIRE_LEN) kind = JsonKind.String;
      else if (number == VALUE_BOOL && wire == WIRE_VARINT) {
        kind = JsonKind.Bool;
        flag = reader.varint != 0;
      } else if (number == VALUE_STRUCT && wire == WIRE_LEN) kind = JsonKind.Object;
      else if (number == VALUE_LIST && wire == WIRE_LEN) kind = JsonKind.Array;
      else continue;
      payloadStart = reader.payloadStart;
      payloadEnd = reader.payloadEnd;
    }
    return new JsonValue(kind, owner, payloadStart, payloadEnd, flag);
  }

  /** A view of the `google.protobuf.Struct` message at `start..end` inside `owner`, as an object. */
  static ofStruct(owner: ArrayBuffer | null, start: usize, end: usize): JsonValue {
    return new JsonValue(JsonKind.Object, owner, start, end, false);
  }

  /** Whether this is JSON `null`. */
  get isNull(): bool {
    return this.kind == JsonKind.Null;
  }

  /** Whether this is a string. */
  get isString(): bool {
    return this.kind == JsonKind.String;
  }

  /** Whether this is a number. */
  get isNumber(): bool {
    return this.kind == JsonKind.Number;
  }

  /** Whether this is `true` or `false`. */
  get isBool(): bool {
    return this.kind == JsonKind.Bool;
  }

  /** Whether this is an object. */
  get isObject(): bool {
    return this.kind == JsonKind.Object;
  }

  /** Whether this is an array. */
  get isArray(): bool {
    return this.kind == JsonKind.Array;
  }

  /** The string, or `fallback` when this is not a string. */
  asString(fallback: string = ""): string {
    if (this.kind != JsonKind.String) return fallback;
    return decodeUtf8(this.start, <i32>(this.end - this.start));
  }

  /** Whether this is a string equal to `text` (compared without decoding the string). */
  equalsString(text: string): bool {
    return this.kind == JsonKind.String && utf8Equals(this.start, <i32>(this.end - this.start), text);
  }

  /** The number, or `fallback` when this is not a number. Audit event numbers are doubles. */
  asNumber(fallback: f64 = 0): f64 {
    if (this.kind != JsonKind.Number) return fallback;
    return load<f64>(this.start);
  }

  /** The boolean, or `fallback` when this is not a boolean. */
  asBool(fallback: bool = false): bool {
    if (this.kind != JsonKind.Bool) return fallback;
    return this.flag;
  }

  /** The string elements of an array (others are left out); empty when this is not an array. */
  asStringArray(): string[] {
    const strings = new Array<string>();
    if (this.kind != JsonKind.Array) return strings;
    const reader = new FieldReader(this.start, this.end);
    while (reader.find(LIST_VALUES, WIRE_LEN)) {
      const element = JsonValue.ofValue(this.owner, reader.payloadStart, reader.payloadEnd);
      if (element.kind == JsonKind.String) strings.push(element.asString());
    }
    return strings;
  }

  /** Elements of an array, or members of an object; 0 for anything else. */
  get length(): i32 {
    if (this.kind != JsonKind.Array && this.kind != JsonKind.Object) return 0;
    const reader = new FieldReader(this.start, this.end);
    let count = 0;
    // ListValue.values and Struct.fields are both field 1.
    while (reader.find(1, WIRE_LEN)) count++;
    return count;
  }

  /** The member `key` of an object (the key is taken whole: `addr.remote` is one key); null when absent or not an object. */
  get(key: string): JsonValue | null {
    if (this.kind != JsonKind.Object) return null;
    const entries = new FieldReader(this.start, this.end);
    const entry = new FieldReader(0, 0);
    while (entries.find(STRUCT_FIELDS, WIRE_LEN)) {
      entry.pos = entries.payloadStart;
      entry.end = entries.payloadEnd;
      // Keys come first in the entries the host writes; look further only when one does not.
      let keyMatches = false;
      let valueStart: usize = 0;
      let valueEnd: usize = 0;
      let hasValue = false;
      while (entry.next()) {
        if (entry.number == ENTRY_KEY && entry.wire == WIRE_LEN) {
          keyMatches = utf8Equals(entry.payloadStart, <i32>(entry.payloadEnd - entry.payloadStart), key);
          if (!keyMatches) break;
        } else if (entry.number == ENTRY_VALUE && entry.wire == WIRE_LEN) {
          valueStart = entry.payloadStart;
          valueEnd = entry.payloadEnd;
          hasValue = true;
        }
      }
      if (keyMatches) {
        // An entry without a value holds the default Value: null.
        return hasValue ? JsonValue.ofValue(this.owner, valueStart, valueEnd) : JsonValue.ofValue(null, 0, 0);
      }
    }
    return null;
  }

  /** Whether this is an object with the member `key`. */
  has(key: string): bool {
    return this.get(key) !== null;
  }

  /** The element at `index` of an array; null when out of range or not an array. */
  at(index: i32): JsonValue | null {
    if (this.kind != JsonKind.Array || index < 0) return null;
    const reader = new FieldReader(this.start, this.end);
    let position = 0;
    while (reader.find(LIST_VALUES, WIRE_LEN)) {
      if (position == index) return JsonValue.ofValue(this.owner, reader.payloadStart, reader.payloadEnd);
      position++;
    }
    return null;
  }

  /**
   * The value at `path` below this one: each segment is an object key (taken whole) or, on an array, an
   * index written in digits. An empty path is this value; null when any step is missing.
   */
  getAt(path: string[]): JsonValue | null {
    let current: JsonValue | null = this;
    for (let i = 0; i < path.length && current !== null; i++) {
      const segment = path[i];
      const value: JsonValue = current;
      if (value.kind == JsonKind.Array) {
        const index = arrayIndex(segment);
        current = index < 0 ? null : value.at(index);
      } else {
        current = value.get(segment);
      }
    }
    return current;
  }

  /** The keys of an object, in the order they arrived; empty when this is not an object. */
  keys(): string[] {
    const keys = new Array<string>();
    if (this.kind != JsonKind.Object) return keys;
    const entries = new FieldReader(this.start, this.end);
    const entry = new FieldReader(0, 0);
    while (entries.find(STRUCT_FIELDS, WIRE_LEN)) {
      entry.pos = entries.payloadStart;
      entry.end = entries.payloadEnd;
      if (entry.find(ENTRY_KEY, WIRE_LEN)) {
        keys.push(decodeUtf8(entry.payloadStart, <i32>(entry.payloadEnd - entry.payloadStart)));
      }
    }
    return keys;
  }

  /**
   * The members' values of an object, in the order of {@link keys}, or the elements of an array;
   * empty for anything else. One pass, where `get` or `at` in a loop would scan again for each.
   */
  values(): JsonValue[] {
    const values = new Array<JsonValue>();
    if (this.kind == JsonKind.Array) {
      const reader = new FieldReader(this.start, this.end);
      while (reader.find(LIST_VALUES, WIRE_LEN)) {
        values.push(JsonValue.ofValue(this.owner, reader.payloadStart, reader.payloadEnd));
      }
      return values;
    }
    if (this.kind != JsonKind.Object) return values;
    const entries = new FieldReader(this.start, this.end);
    const entry = new FieldReader(0, 0);
    while (entries.find(STRUCT_FIELDS, WIRE_LEN)) {
      entry.pos = entries.payloadStart;
      entry.end = entries.payloadEnd;
      let hasKey = false;
      // An entry without a value holds the default Value: null.
      let value = JsonValue.ofValue(null, 0, 0);
      while (entry.next()) {
        if (entry.number == ENTRY_KEY && entry.wire == WIRE_LEN) hasKey = true;
        else if (entry.number == ENTRY_VALUE && entry.wire == WIRE_LEN) value = JsonValue.ofValue(this.owner, entry.payloadStart, entry.payloadEnd);
      }
      // As in keys(): an entry without a key is not a member.
      if (hasKey) values.push(value);
    }
    return values;
  }

  /** This value as compact JSON text. */
  toJson(): string {
    const parts = new Array<string>();
    this.writeJson(parts);
    return parts.join("");
  }

  private writeJson(parts: string[]): void {
    switch (this.kind) {
      case JsonKind.Null:
        parts.push("null");
        break;
      case JsonKind.Number: {
        const number = this.asNumber();
        parts.push(isFinite(number) ? jsonNumber(number, "number") : "null");
        break;
      }
      case JsonKind.String:
        parts.push(jsonString(this.asString()));
        break;
      case JsonKind.Bool:
        parts.push(this.flag ? "true" : "false");
        break;
      case JsonKind.Array: {
        parts.push("[");
        const reader = new FieldReader(this.start, this.end);
        let first = true;
        while (reader.find(LIST_VALUES, WIRE_LEN)) {
          if (!first) parts.push(",");
          first = false;
          JsonValue.ofValue(this.owner, reader.payloadStart, reader.payloadEnd).writeJson(parts);
        }
        parts.push("]");
        break;
      }
      case JsonKind.Object: {
        parts.push("{");
        const entries = new FieldReader(this.start, this.end);
        let first = true;
        while (entries.find(STRUCT_FIELDS, WIRE_LEN)) {
          const entry = new FieldReader(entries.payloadStart, entries.payloadEnd);
          let key = "";
          let value = JsonValue.ofValue(null, 0, 0);
          while (entry.next()) {
            if (entry.number == ENTRY_KEY && entry.wire == WIRE_LEN) {
              key = decodeUtf8(entry.payloadStart, <i32>(entry.payloadEnd - entry.payloadStart));
            } else if (entry.number == ENTRY_VALUE && entry.wire == WIRE_LEN) {
              value = JsonValue.ofValue(this.owner, entry.payloadStart, entry.payloadEnd);
            }
          }
          if (!first) parts.push(",");
          first = false;
          parts.push(jsonString(key));
          parts.push(":");
          value.writeJson(parts);
        }
        parts.push("}");
        break;
      }
    }
  }
}

/** `segment` as an array index when it is only digits (at most 9), else -1. */
export function arrayIndex(segment: string): i32 {
  const length = segment.length;
  if (length == 0 || length > 9) return -1;
  let index = 0;
  for (let i = 0; i < length; i++) {
    const c = segment.charCodeAt(i);
    if (c < 0x30 || c > 0x39) return -1;
    index = index * 10 + (c - 0x30);
  }
  return index;
}
