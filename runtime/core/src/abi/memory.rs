//! Reading the plugin's linear memory safely: every region is bounds-checked and copied out.

use wasmtime::{AsContext, Memory};

/// Splits a packed `i64` result into (pointer, length): pointer in the high 32 bits, length in the
/// low 32 bits.
pub fn unpack_region(packed: i64) -> (u32, u32) {
    let bits = packed as u64;
    ((bits >> 32) as u32, bits as u32)
}

/// Copies `len` bytes at `ptr` out of `memory`, or names the region that lies outside it.
pub fn read_guest_bytes(
    memory: &Memory,
    store: impl AsContext,
    ptr: u32,
    len: u32,
    what: &str,
) -> Result<Vec<u8>, String> {
    let data = memory.data(&store);
    let start = ptr as usize;
    let end = start.saturating_add(len as usize);
    data.get(start..end).map(<[u8]>::to_vec).ok_or_else(|| {
        format!(
            "{what}: bytes {start:#x}..{end:#x} lie outside the plugin's memory of {} bytes",
            data.len()
        )
    })
}

/// Reads an AssemblyScript string (UTF-16LE, byte length in the u32 before it) at `ptr`, at most
/// `max_bytes` of it; a longer string is cut and ends in `…`.
pub(crate) fn read_assemblyscript_string(
    memory: &Memory,
    store: impl AsContext,
    ptr: u32,
    max_bytes: u32,
) -> Result<String, String> {
    if ptr < 4 {
        return Err(format!("no AssemblyScript string at {ptr:#x}"));
    }
    let header = read_guest_bytes(memory, &store, ptr - 4, 4, "AssemblyScript string length")?;
    let len = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let cut = len > max_bytes;
    let bytes = read_guest_bytes(
        memory,
        &store,
        ptr,
        len.min(max_bytes),
        "AssemblyScript string",
    )?;
    let units: Vec<u16> = bytes
        .chunks_exact(2)
        .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
        .collect();
    let mut text = String::from_utf16_lossy(&units);
    if cut {
        text.push('…');
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::unpack_region;

    #[test]
    fn packed_regions_split_into_pointer_and_length() {
        assert_eq!(unpack_region((0x1234_i64 << 32) | 0x56), (0x1234, 0x56));
        assert_eq!(unpack_region(-1), (u32::MAX, u32::MAX));
        assert_eq!(unpack_region(0), (0, 0));
    }
}
