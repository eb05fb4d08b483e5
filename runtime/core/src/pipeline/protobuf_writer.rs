//! Just enough protobuf wire-format writing to encode the envelope while parsing JSON, without
//! building an intermediate tree. Nested messages get their length patched in when they end.

/// Wire type of varint fields.
pub(crate) const VARINT: u8 = 0;
/// Wire type of 64-bit fields (double).
pub(crate) const FIXED64: u8 = 1;
/// Wire type of length-delimited fields (strings, bytes, messages).
pub(crate) const LEN: u8 = 2;

pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

pub(crate) fn put_tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

pub(crate) fn put_bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Starts a length-delimited field whose length is not known yet; pass the result to [`end_len`].
pub(crate) fn begin_len(out: &mut Vec<u8>, field: u32) -> usize {
    put_tag(out, field, LEN);
    out.push(0);
    out.len()
}

/// Ends a field started by [`begin_len`]: writes its length, widening the placeholder when the
/// length needs more than one byte.
pub(crate) fn end_len(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start;
    if len < 0x80 {
        out[start - 1] = len as u8;
        return;
    }
    let mut varint = Vec::with_capacity(5);
    put_varint(&mut varint, len as u64);
    out[start - 1] = varint[0];
    out.splice(start..start, varint[1..].iter().copied());
}
