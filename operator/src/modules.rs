//! Modules reach pods without the registry: each target has a fixed set of module ConfigMaps,
//! mounted together into one folder of the sidecar (a projected volume), holding every digest the
//! target's EventPlugins run, each split into chunks under the API server's object size limit
//! (`sha256-<hex>.wasm.0`, `.1`, …). A new digest is new keys in the same ConfigMaps, so it needs no
//! new volume and no rollout; the sidecar joins the chunks and checks the digest. Only the operator
//! talks to the registry.

use std::collections::BTreeMap;

/// Module ConfigMaps per target.
pub const MODULE_CONFIG_MAPS: usize = 16;
/// Bytes of module data one ConfigMap holds (the API server takes objects up to about 1.5 MiB,
/// base64 in etcd included; binaryData is counted raw, the margin covers the object's metadata).
pub const CONFIG_MAP_BYTES: usize = 900 << 10;

/// The file name of chunk `index` of the module with `digest` (`sha256:<hex>`).
pub fn chunk_key(digest: &str, index: usize) -> String {
    format!("{}.wasm.{index}", digest.replace(':', "-"))
}

/// Spreads `modules` (digest, bytes) over `config_maps` ConfigMaps of at most `capacity` bytes
/// each, in chunks: the binaryData of each ConfigMap, in order. Deterministic: the same modules
/// give the same objects, so an unchanged plugin set writes nothing.
pub fn pack(
    modules: &[(&str, &[u8])],
    config_maps: usize,
    capacity: usize,
) -> Result<Vec<BTreeMap<String, Vec<u8>>>, String> {
    let total: usize = modules.iter().map(|(_, bytes)| bytes.len()).sum();
    if total > config_maps * capacity {
        return Err(format!(
            "the target's modules take {total} bytes, more than its {config_maps} module ConfigMaps of {capacity} bytes hold: fewer or smaller plugins"
        ));
    }
    let mut sorted: Vec<&(&str, &[u8])> = modules.iter().collect();
    sorted.sort_by_key(|(digest, _)| *digest);
    sorted.dedup_by_key(|(digest, _)| *digest);
    let mut maps = vec![BTreeMap::new(); config_maps];
    let (mut slot, mut used) = (0, 0);
    for (digest, bytes) in sorted {
        let mut rest: &[u8] = bytes;
        let mut index = 0;
        loop {
            if used == capacity {
                slot += 1;
                used = 0;
            }
            let room = capacity - used;
            let (chunk, tail) = rest.split_at(rest.len().min(room));
            maps[slot].insert(chunk_key(digest, index), chunk.to_vec());
            used += chunk.len();
            index += 1;
            rest = tail;
            if rest.is_empty() {
                break;
            }
        }
    }
    Ok(maps)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modules_are_split_across_config_maps_and_join_back_in_order() {
        let a: Vec<u8> = (0..2500u32).map(|i| (i % 251) as u8).collect();
        let b = vec![7u8; 300];
        let maps = pack(&[("sha256:bb", &b), ("sha256:aa", &a)], 4, 1000).expect("fits");
        assert_eq!(maps.len(), 4);
        assert!(
            maps.iter()
                .all(|m| m.values().map(Vec::len).sum::<usize>() <= 1000)
        );
        let join = |digest: &str| {
            let mut bytes = Vec::new();
            for index in 0.. {
                let Some(chunk) = maps.iter().find_map(|m| m.get(&chunk_key(digest, index))) else {
                    break;
                };
                bytes.extend_from_slice(chunk);
            }
            bytes
        };
        assert_eq!(join("sha256:aa"), a);
        assert_eq!(join("sha256:bb"), b);
        assert_eq!(chunk_key("sha256:aa", 2), "sha256-aa.wasm.2");
        // The same modules in another order give the same objects.
        assert_eq!(
            pack(&[("sha256:aa", &a), ("sha256:bb", &b)], 4, 1000),
            Ok(maps.clone())
        );
    }

    #[test]
    fn modules_that_do_not_fit_are_refused() {
        let big = vec![0u8; 5000];
        let error = pack(&[("sha256:aa", &big)], 4, 1000).unwrap_err();
        assert!(error.contains("5000 bytes"), "{error}");
    }
}
