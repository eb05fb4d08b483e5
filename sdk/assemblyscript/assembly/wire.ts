// Protobuf wire format over raw linear memory: reading fields without decoding whole messages, and
// the few writes the SDK does by hand (google.protobuf.Value, so no oneof member is ever written twice).

/** Wire type of varint fields. */
export const WIRE_VARINT: u32 = 0;
/** Wire type of 8-byte fields (double). */
export const WIRE_FIXED64: u32 = 1;
/** Wire type of length-delimited fields (strings, messages). */
export const WIRE_LEN: u32 = 2;
/** Wire type of 4-byte fields. */
export const WIRE_FIXED32: u32 = 5;

/**
 * Walks the fields of one protobuf message in memory (`start..end`), one `next()` at a time. Every
 * read stays inside the range; malformed bytes end the walk and set `malformed`.
 */
@final
export class FieldReader {
  /** Where the next field starts. */
  pos: usize;
  /** End of the message. */
  end: usize;
  /** The bytes were not a valid message. */
  malformed: bool = false;
  /** The current field's number. */
  number: u32 = 0;
  /** The current field's wire type. */
  wire: u32 = 0;
  /** The current field's varint value (wire type 0). */
  varint: u64 = 0;
  /** Start of the current field's payload (length-delimited: its bytes; fixed: its 4 or 8 bytes). */
  payloadStart: usize = 0;
  /** End of the current field's payload. */
  payloadEnd: usize = 0;

  constructor(start: usize, end: usize) {
    this.pos = start;
    this.end = end;
  }

  /** Moves to the next field; false at the end of the message or on malformed bytes. */
  next(): bool {
    if (this.pos >= this.end) return false;
    const tag = this.readVarint();
    if (this.malformed) return false;
    this.number = <u32>(tag >>> 3);
    this.wire = <u32>(tag & 7);
    switch (this.wire) {
      case WIRE_VARINT: {
        this.varint = this.readVarint();
        this.payloadStart = this.pos;
        this.payloadEnd = this.pos;
        break;
      }
      case WIRE_FIXED64: {
        this.fixed(8);
        break;
      }
      case WIRE_LEN: {
        const length = this.readVarint();
        if (this.malformed || length > <u64>(this.end - this.pos)) {
          this.malformed = true;
          break;
        }
        this.payloadStart = this.pos;
        this.pos += <usize>length;
        this.payloadEnd = this.pos;
        break;
      }
      case WIRE_FIXED32: {
        this.fixed(4);
        break;
      }
      default:
        this.malformed = true;
    }
    if (this.number == 0) this.malformed = true;
    return !this.malformed;
  }

  /** Moves to the next field numbered `number` with wire type `wire`; false when there is none. */
  find(number: u32, wire: u32): bool {
    while (this.next()) {
      if (this.number == number && this.wire == wire) return true;
    }
    return false;
  }

  private fixed(size: usize): void {
    if (this.end - this.pos < size) {
      this.malformed = true;
      return;
    }
    this.payloadStart = this.pos;
    this.pos += size;
    this.payloadEnd = this.pos;
  }

  private readVarint(): u64 {
    let value: u64 = 0;
    for (let shift: u64 = 0; shift < 64; shift += 7) {
      if (this.pos >= this.end) break;
      const byte = <u64>load<u8>(this.pos++);
      value |= (byte & 0x7f) << shift;
      if ((byte & 0x80) == 0) return value;
    }
    this.malformed = true;
    return 0;
  }
}

/**
 * A growable byte buffer for writing protobuf by hand. Nested lengths are written as 5-byte padded
 * varints (valid protobuf: decoders accept redundant continuation bytes), so a message can be
 * written before its length is known.
 */
@final
export class ByteWriter {
  /** The bytes; only the first `length` are written. */
  buffer: ArrayBuffer;
  /** How many bytes are written. */
  length: i32 = 0;

  constructor(capacity: i32 = 256) {
    this.buffer = new ArrayBuffer(max(capacity, 16));
  }

  /** Address of the first byte. */
  get dataStart(): usize {
    return changetype<usize>(this.buffer);
  }

  /** Makes room for `extra` more bytes. */
  reserve(extra: i32): void {
    const needed = this.length + extra;
    if (needed <= this.buffer.byteLength) return;
    const grown = new ArrayBuffer(max(needed, this.buffer.byteLength << 1));
    memory.copy(changetype<usize>(grown), changetype<usize>(this.buffer), this.length);
    this.buffer = grown;
  }

  /** Appends one byte. */
  byte(value: u8): void {
    this.reserve(1);
    store<u8>(this.dataStart + this.length, value);
    this.length++;
  }

  /** Appends a varint. */
  varint(value: u64): void {
    this.reserve(10);
    let at = this.dataStart + this.length;
    while (value >= 0x80) {
      store<u8>(at++, <u8>(value | 0x80));
      value >>>= 7;
    }
    store<u8>(at++, <u8>value);
    this.length = <i32>(at - this.dataStart);
  }

  /** Appends a field tag. */
  tag(number: u32, wire: u32): void {
    this.varint((<u64>number << 3) | wire);
  }

  /** Appends 8 bytes holding a double. */
  double(value: f64): void {
    this.reserve(8);
    store<f64>(this.dataStart + this.length, value);
    this.length += 8;
  }

  /** Appends `length` bytes from `ptr`. */
  bytes(ptr: usize, length: i32): void {
    this.reserve(length);
    memory.copy(this.dataStart + this.length, ptr, length);
    this.length += length;
  }

  /** Appends a tag for a length-delimited field and room for its length; returns where the payload starts. */
  beginLength(number: u32): i32 {
    this.tag(number, WIRE_LEN);
    this.reserve(5);
    this.length += 5;
    return this.length;
  }

  /** Fills in the length of the field begun at `payloadStart` (from `beginLength`). */
  endLength(payloadStart: i32): void {
    let size = <u32>(this.length - payloadStart);
    let at = this.dataStart + payloadStart - 5;
    for (let i = 0; i < 4; i++) {
      store<u8>(at++, <u8>(size | 0x80));
      size >>>= 7;
    }
    store<u8>(at, <u8>size);
  }
}
