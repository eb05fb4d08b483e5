//! Just enough protobuf wire-format writing to encode the envelope while parsing JSON, without
//! building an intermediate tree. Nested messages get their length patched in when they end. (And
//! just enough reading to find the keys of a JSON object among the entries already written.)

/// Wire type of varint fields.
pub(crate) const VARINT: u8 = 0;
/// Wire type of 64-bit fields (double).
pub(crate) const FIXED64: u8 = 1;
/// Wire type of length-delimited fields (strings, bytes, messages).
pub(crate) const LEN: u8 = 2;

#[inline]
pub(crate) fn put_varint(out: &mut Vec<u8>, mut value: u64) {
    while value >= 0x80 {
        out.push((value as u8) | 0x80);
        value >>= 7;
    }
    out.push(value as u8);
}

#[inline]
pub(crate) fn put_tag(out: &mut Vec<u8>, field: u32, wire_type: u8) {
    put_varint(out, (u64::from(field) << 3) | u64::from(wire_type));
}

#[inline]
pub(crate) fn put_bytes_field(out: &mut Vec<u8>, field: u32, bytes: &[u8]) {
    put_tag(out, field, LEN);
    put_varint(out, bytes.len() as u64);
    out.extend_from_slice(bytes);
}

/// Starts a length-delimited field whose length is not known yet; pass the result to [`end_len`].
#[inline]
pub(crate) fn begin_len(out: &mut Vec<u8>, field: u32) -> usize {
    put_tag(out, field, LEN);
    out.push(0);
    out.len()
}

/// Ends a field started by [`begin_len`]: writes its length, widening the placeholder when the
/// length needs more than one byte.
#[inline]
pub(crate) fn end_len(out: &mut Vec<u8>, start: usize) {
    let len = out.len() - start;
    if len < 0x80 {
        out[start - 1] = len as u8;
    } else {
        widen_len(out, start, len);
    }
}

/// [`end_len`] of a field of `len` bytes, 128 or more: moves its contents to make room for the
/// length's further bytes.
#[cold]
#[inline(never)]
fn widen_len(out: &mut Vec<u8>, start: usize, len: usize) {
    let (bytes, width) = varint(len as u64);
    out[start - 1] = bytes[0];
    insert_bytes(out, start, &bytes[1..width]);
}

/// `value` as a varint: its bytes, and how many of them there are.
pub(crate) fn varint(mut value: u64) -> ([u8; 10], usize) {
    let mut bytes = [0u8; 10];
    let mut width = 0;
    while value >= 0x80 {
        bytes[width] = (value as u8) | 0x80;
        value >>= 7;
        width += 1;
    }
    bytes[width] = value as u8;
    (bytes, width + 1)
}

/// Writes `bytes` into `out` at `at`, moving what follows them.
pub(crate) fn insert_bytes(out: &mut Vec<u8>, at: usize, bytes: &[u8]) {
    let end = out.len();
    out.resize(end + bytes.len(), 0);
    out.copy_within(at..end, at + bytes.len());
    out[at..at + bytes.len()].copy_from_slice(bytes);
}

/// Splits a length-delimited field with a one-byte tag, as written here, off the front of `bytes`:
/// (its contents, what follows it). `None` at the end of `bytes`, or when they hold no such field.
#[inline]
pub(crate) fn split_len_field(bytes: &[u8]) -> Option<(&[u8], &[u8])> {
    let mut len = 0usize;
    let mut at = 1;
    loop {
        let byte = *bytes.get(at)?;
        len |= usize::from(byte & 0x7f) << (7 * (at - 1));
        at += 1;
        if byte < 0x80 {
            break;
        }
        if at > 10 {
            return None;
        }
    }
    let rest = bytes.get(at..)?;
    (len <= rest.len()).then(|| rest.split_at(len))
}

#[cfg(test)]
mod tests {
    use super::{begin_len, end_len, put_bytes_field, split_len_field};

    #[test]
    fn a_field_ended_at_any_length_reads_back() {
        for len in [0usize, 1, 127, 128, 300, 16_383, 16_384, 70_000] {
            let mut out = vec![9u8];
            let start = begin_len(&mut out, 1);
            put_bytes_field(&mut out, 1, &vec![b'k'; len]);
            end_len(&mut out, start);
            out.push(7);
            let (field, rest) = split_len_field(&out[1..]).expect("a field");
            let (key, after) = split_len_field(field).expect("a key");
            assert_eq!(
                (key.len(), after, rest),
                (len, &[][..], &[7u8][..]),
                "{len}"
            );
        }
    }

    #[test]
    fn a_cut_field_is_none() {
        assert_eq!(split_len_field(&[]), None);
        assert_eq!(split_len_field(&[0x0a]), None);
        assert_eq!(split_len_field(&[0x0a, 3, b'a']), None);
        assert_eq!(split_len_field(&[0x0a, 0x80]), None);
    }
}
