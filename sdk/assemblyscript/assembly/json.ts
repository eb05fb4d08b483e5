// JSON text to JsonValue: the configuration, fixtures and test results arrive as JSON text. The text is
// converted once into the same protobuf bytes the host uses for events, so one reader serves all.

import { ByteWriter, WIRE_FIXED64, WIRE_VARINT } from "./wire";
import { decodeUtf8, encodeUtf8 } from "./text";
import {
  ENTRY_KEY,
  ENTRY_VALUE,
  JsonValue,
  LIST_VALUES,
  STRUCT_FIELDS,
  VALUE_BOOL,
  VALUE_LIST,
  VALUE_NULL,
  VALUE_NUMBER,
  VALUE_STRING,
  VALUE_STRUCT,
} from "./value";

/** Nesting deeper than this is refused rather than risking the stack. */
const MAX_DEPTH = 128;

/** Parses JSON text (RFC 8259); on invalid text `parse` returns null and `error` says where and why. */
@final
export class JsonParser {
  /** Why the last `parse` failed; empty after a success. */
  error: string = "";
  private base: usize = 0;
  private pos: usize = 0;
  private end: usize = 0;
  private out: ByteWriter = new ByteWriter(16);

  /** Parses the UTF-8 JSON text in `bytes`. */
  parse(bytes: ArrayBuffer): JsonValue | null {
    return this.parseAt(changetype<usize>(bytes), bytes.byteLength);
  }

  /** Parses the `length` bytes of UTF-8 JSON text at `ptr` (the result does not refer to them). */
  parseAt(ptr: usize, length: i32): JsonValue | null {
    this.base = ptr;
    this.pos = ptr;
    this.end = ptr + <usize>length;
    this.error = "";
    this.out = new ByteWriter(length * 2 + 16);
    this.skipSpace();
    if (!this.value(0)) return null;
    this.skipSpace();
    if (this.pos < this.end) return this.fail("unexpected text after the value");
    const out = this.out;
    return JsonValue.ofValue(out.buffer, out.dataStart, out.dataStart + <usize>out.length);
  }

  private fail(what: string): JsonValue | null {
    if (this.error.length == 0) {
      this.error = "invalid JSON at byte " + (this.pos - this.base).toString() + ": " + what;
    }
    return null;
  }

  private failed(what: string): bool {
    this.fail(what);
    return false;
  }

  private skipSpace(): void {
    while (this.pos < this.end) {
      const c = load<u8>(this.pos);
      if (c != 0x20 && c != 0x0a && c != 0x0d && c != 0x09) return;
      this.pos++;
    }
  }

  private peek(): u32 {
    return this.pos < this.end ? <u32>load<u8>(this.pos) : 0;
  }

  private literal(word: string): bool {
    const length = <usize>word.length;
    if (this.end - this.pos < length) return false;
    for (let i: usize = 0; i < length; i++) {
      if (<u32>load<u8>(this.pos + i) != <u32>word.charCodeAt(<i32>i)) return false;
    }
    this.pos += length;
    return true;
  }

  // Writes the Value field for the JSON value at `pos`.
  private value(depth: i32): bool {
    if (depth > MAX_DEPTH) return this.failed("nested deeper than " + MAX_DEPTH.toString() + " levels");
    const out = this.out;
    const c = this.peek();
    if (c == 0x7b) return this.object(depth);
    if (c == 0x5b) return this.array(depth);
    if (c == 0x22) {
      const payload = out.beginLength(VALUE_STRING);
      if (!this.string()) return false;
      out.endLength(payload);
      return true;
    }
    if (this.literal("true")) {
      out.tag(VALUE_BOOL, WIRE_VARINT);
      out.varint(1);
      return true;
    }
    if (this.literal("false")) {
      out.tag(VALUE_BOOL, WIRE_VARINT);
      out.varint(0);
      return true;
    }
    if (this.literal("null")) {
      out.tag(VALUE_NULL, WIRE_VARINT);
      out.varint(0);
      return true;
    }
    if (c == 0x2d || (c >= 0x30 && c <= 0x39)) return this.number();
    return this.failed(this.pos < this.end ? "expected a value" : "unexpected end of text");
  }

  private object(depth: i32): bool {
    const out = this.out;
    const struct = out.beginLength(VALUE_STRUCT);
    this.pos++; // {
    this.skipSpace();
    if (this.peek() == 0x7d) {
      this.pos++;
      out.endLength(struct);
      return true;
    }
    while (true) {
      this.skipSpace();
      if (this.peek() != 0x22) return this.failed("expected a string key");
      const entry = out.beginLength(STRUCT_FIELDS);
      const key = out.beginLength(ENTRY_KEY);
      if (!this.string()) return false;
      out.endLength(key);
      this.skipSpace();
      if (this.peek() != 0x3a) return this.failed("expected ':' after a key");
      this.pos++;
      this.skipSpace();
      const value = out.beginLength(ENTRY_VALUE);
      if (!this.value(depth + 1)) return false;
      out.endLength(value);
      out.endLength(entry);
      this.skipSpace();
      if (this.pos >= this.end) return this.failed("unexpected end of text");
      const next = this.peek();
      this.pos++;
      if (next == 0x2c) continue;
      if (next == 0x7d) break;
      this.pos--;
      return this.failed("expected ',' or '}' in an object");
    }
    out.endLength(struct);
    return true;
  }

  private array(depth: i32): bool {
    const out = this.out;
    const list = out.beginLength(VALUE_LIST);
    this.pos++; // [
    this.skipSpace();
    if (this.peek() == 0x5d) {
      this.pos++;
      out.endLength(list);
      return true;
    }
    while (true) {
      this.skipSpace();
      const element = out.beginLength(LIST_VALUES);
      if (!this.value(depth + 1)) return false;
      out.endLength(element);
      this.skipSpace();
      if (this.pos >= this.end) return this.failed("unexpected end of text");
      const next = this.peek();
      this.pos++;
      if (next == 0x2c) continue;
      if (next == 0x5d) break;
      this.pos--;
      return this.failed("expected ',' or ']' in an array");
    }
    out.endLength(list);
    return true;
  }

  // Writes the unescaped UTF-8 bytes of the string literal at `pos`.
  private string(): bool {
    const out = this.out;
    this.pos++; // opening quote
    while (true) {
      if (this.pos >= this.end) return this.failed("unterminated string");
      const c = <u32>load<u8>(this.pos);
      if (c == 0x22) {
        this.pos++;
        return true;
      }
      if (c < 0x20) return this.failed("control character in a string");
      if (c != 0x5c) {
        out.byte(<u8>c);
        this.pos++;
        continue;
      }
      this.pos++; // backslash
      const escape = this.peek();
      this.pos++;
      if (escape == 0x22 || escape == 0x5c || escape == 0x2f) out.byte(<u8>escape);
      else if (escape == 0x62) out.byte(0x08);
      else if (escape == 0x66) out.byte(0x0c);
      else if (escape == 0x6e) out.byte(0x0a);
      else if (escape == 0x72) out.byte(0x0d);
      else if (escape == 0x74) out.byte(0x09);
      else if (escape == 0x75) {
        let codePoint = this.hex4();
        if (codePoint < 0) return false;
        if (codePoint >= 0xd800 && codePoint <= 0xdbff && this.literal("\\u")) {
          const low = this.hex4();
          if (low < 0) return false;
          if (low >= 0xdc00 && low <= 0xdfff) codePoint = 0x10000 + ((codePoint - 0xd800) << 10) + (low - 0xdc00);
          else {
            this.writeCodePoint(0xfffd);
            codePoint = low;
          }
        }
        // A lone surrogate cannot be written as UTF-8.
        if (codePoint >= 0xd800 && codePoint <= 0xdfff) codePoint = 0xfffd;
        this.writeCodePoint(<u32>codePoint);
      } else {
        this.pos--;
        return this.failed("invalid escape in a string");
      }
    }
  }

  private hex4(): i32 {
    if (this.end - this.pos < 4) {
      this.fail("truncated \\u escape");
      return -1;
    }
    let value = 0;
    for (let i = 0; i < 4; i++) {
      const c = <i32>load<u8>(this.pos++);
      let digit = -1;
      if (c >= 0x30 && c <= 0x39) digit = c - 0x30;
      else if (c >= 0x61 && c <= 0x66) digit = c - 0x61 + 10;
      else if (c >= 0x41 && c <= 0x46) digit = c - 0x41 + 10;
      if (digit < 0) {
        this.pos--;
        this.fail("invalid \\u escape");
        return -1;
      }
      value = (value << 4) | digit;
    }
    return value;
  }

  private writeCodePoint(codePoint: u32): void {
    const out = this.out;
    if (codePoint < 0x80) out.byte(<u8>codePoint);
    else if (codePoint < 0x800) {
      out.byte(<u8>(0xc0 | (codePoint >> 6)));
      out.byte(<u8>(0x80 | (codePoint & 0x3f)));
    } else if (codePoint < 0x10000) {
      out.byte(<u8>(0xe0 | (codePoint >> 12)));
      out.byte(<u8>(0x80 | ((codePoint >> 6) & 0x3f)));
      out.byte(<u8>(0x80 | (codePoint & 0x3f)));
    } else {
      out.byte(<u8>(0xf0 | (codePoint >> 18)));
      out.byte(<u8>(0x80 | ((codePoint >> 12) & 0x3f)));
      out.byte(<u8>(0x80 | ((codePoint >> 6) & 0x3f)));
      out.byte(<u8>(0x80 | (codePoint & 0x3f)));
    }
  }

  private number(): bool {
    const start = this.pos;
    if (this.peek() == 0x2d) this.pos++;
    const first = this.peek();
    if (first == 0x30) this.pos++;
    else if (first >= 0x31 && first <= 0x39) this.digits();
    else return this.failed("expected a digit");
    if (this.peek() == 0x2e) {
      this.pos++;
      if (!this.digits()) return this.failed("expected a digit after '.'");
    }
    const e = this.peek();
    if (e == 0x65 || e == 0x45) {
      this.pos++;
      const sign = this.peek();
      if (sign == 0x2b || sign == 0x2d) this.pos++;
      if (!this.digits()) return this.failed("expected a digit in the exponent");
    }
    const out = this.out;
    out.tag(VALUE_NUMBER, WIRE_FIXED64);
    out.double(parseFloat(decodeUtf8(start, <i32>(this.pos - start))));
    return true;
  }

  private digits(): bool {
    const start = this.pos;
    while (this.pos < this.end) {
      const c = load<u8>(this.pos);
      if (c < 0x30 || c > 0x39) break;
      this.pos++;
    }
    return this.pos > start;
  }
}

/** Parses JSON text; invalid text aborts the call with the parser's message (use in tests and for text you wrote). */
export function parseJson(text: string): JsonValue {
  const parser = new JsonParser();
  const value = parser.parse(encodeUtf8(text));
  if (value === null) throw new Error(parser.error);
  return value;
}
