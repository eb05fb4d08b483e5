// Text across the boundary: AssemblyScript strings are UTF-16, the ABI speaks UTF-8 and JSON.

/** Decodes `length` bytes of UTF-8 at `ptr`. */
export function decodeUtf8(ptr: usize, length: i32): string {
  return String.UTF8.decodeUnsafe(ptr, <usize>length);
}

/** Encodes `text` as UTF-8; a lone surrogate becomes U+FFFD, so the bytes are always valid UTF-8. */
export function encodeUtf8(text: string): ArrayBuffer {
  return String.UTF8.encode(text, false, String.UTF8.ErrorMode.REPLACE);
}

/** Whether the `length` UTF-8 bytes at `ptr` spell exactly `text`, compared without decoding to a string. */
export function utf8Equals(ptr: usize, length: i32, text: string): bool {
  const units = text.length;
  // Each UTF-16 unit takes 1 to 3 UTF-8 bytes (a surrogate pair: 2 units, 4 bytes).
  if (length < units || length > units * 3) return false;
  const end = ptr + <usize>length;
  let unit = 0;
  while (ptr < end) {
    const b0 = <u32>load<u8>(ptr);
    if (b0 < 0x80) {
      if (unit >= units || <u32>text.charCodeAt(unit) != b0) return false;
      ptr += 1;
      unit += 1;
      continue;
    }
    let codePoint: u32;
    let size: usize;
    if (b0 >= 0xf0) {
      size = 4;
      codePoint = b0 & 0x07;
    } else if (b0 >= 0xe0) {
      size = 3;
      codePoint = b0 & 0x0f;
    } else {
      size = 2;
      codePoint = b0 & 0x1f;
    }
    if (end - ptr < size) return false;
    for (let i: usize = 1; i < size; i++) codePoint = (codePoint << 6) | (<u32>load<u8>(ptr + i) & 0x3f);
    ptr += size;
    if (codePoint >= 0x10000) {
      if (unit + 1 >= units) return false;
      const cp = codePoint - 0x10000;
      if (<u32>text.charCodeAt(unit) != 0xd800 + (cp >> 10)) return false;
      if (<u32>text.charCodeAt(unit + 1) != 0xdc00 + (cp & 0x3ff)) return false;
      unit += 2;
    } else {
      if (unit >= units || <u32>text.charCodeAt(unit) != codePoint) return false;
      unit += 1;
    }
  }
  return unit == units;
}

const HEX = "0123456789abcdef";

/**
 * `text` as a JSON string literal, quotes included: `"`, `\` and control characters are escaped, and a
 * lone surrogate (not valid in UTF-8 or JSON) becomes `\ufffd`.
 */
export function jsonString(text: string): string {
  const length = text.length;
  let plain = true;
  for (let i = 0; i < length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x20 || c == 0x22 || c == 0x5c || (c >= 0xd800 && c <= 0xdfff)) {
      plain = false;
      break;
    }
  }
  if (plain) return '"' + text + '"';

  const parts = new Array<string>();
  parts.push('"');
  let from = 0;
  for (let i = 0; i < length; i++) {
    const c = text.charCodeAt(i);
    let escaped: string | null = null;
    if (c == 0x22) escaped = '\\"';
    else if (c == 0x5c) escaped = "\\\\";
    else if (c == 0x0a) escaped = "\\n";
    else if (c == 0x0d) escaped = "\\r";
    else if (c == 0x09) escaped = "\\t";
    else if (c == 0x08) escaped = "\\b";
    else if (c == 0x0c) escaped = "\\f";
    else if (c < 0x20) escaped = "\\u00" + HEX.charAt(c >> 4) + HEX.charAt(c & 0xf);
    else if (c >= 0xd800 && c <= 0xdbff) {
      const next = i + 1 < length ? text.charCodeAt(i + 1) : 0;
      if (next >= 0xdc00 && next <= 0xdfff) {
        i++; // a valid pair stays as it is
        continue;
      }
      escaped = "\\ufffd";
    } else if (c >= 0xdc00 && c <= 0xdfff) escaped = "\\ufffd";
    if (escaped === null) continue;
    if (from < i) parts.push(text.substring(from, i));
    parts.push(escaped);
    from = i + 1;
  }
  if (from < length) parts.push(text.substring(from));
  parts.push('"');
  return parts.join("");
}

/**
 * `value` as a JSON number: integers up to 2^53 without a fraction (`42`, not `42.0`), others in
 * shortest round-trip form. JSON has no NaN or infinity: those throw, naming `what`.
 */
export function jsonNumber(value: f64, what: string): string {
  if (!isFinite(value)) throw new Error(what + ": " + value.toString() + " cannot be written as JSON");
  if (value == Math.floor(value) && Math.abs(value) <= 9007199254740992.0) return (<i64>value).toString();
  return value.toString();
}
