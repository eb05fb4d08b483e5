//! The four ways wasm modules are stored in OCI registries, and which one a manifest uses.

use serde::{Deserialize, Serialize};

/// CNCF wasm artifact config (oci-wasm, wkg; what `eventplug push` writes).
pub const WASM_CONFIG_V0: &str = "application/vnd.wasm.config.v0+json";
/// CNCF wasm layer.
pub const WASM_LAYER: &str = "application/wasm";
/// The older wasm layer type (oci-client's constants, Kubewarden); its config type varies.
pub const WASM_LAYER_V1: &str = "application/vnd.wasm.content.layer.v1+wasm";
/// solo.io / Istio "oci" config.
pub const SOLO_CONFIG: &str = "application/vnd.module.wasm.config.v1+json";
/// solo.io / Istio "oci" layer.
pub const SOLO_LAYER: &str = "application/vnd.module.wasm.content.layer.v1+wasm";
/// Image config types of a "compat" image (Istio): a regular image whose one layer holds
/// `plugin.wasm`.
pub const IMAGE_CONFIGS: &[&str] = &[
    "application/vnd.oci.image.config.v1+json",
    "application/vnd.docker.container.image.v1+json",
];
/// Gzipped tar layer types of a "compat" image.
pub const TAR_GZ_LAYERS: &[&str] = &[
    "application/vnd.oci.image.layer.v1.tar+gzip",
    "application/vnd.docker.image.rootfs.diff.tar.gzip",
];
/// The file a "compat" image's layer holds.
pub const COMPAT_FILE: &str = "plugin.wasm";
/// Manifest media types eventplug reads.
pub const MANIFEST_TYPES: &[&str] = &[
    "application/vnd.oci.image.manifest.v1+json",
    "application/vnd.docker.distribution.manifest.v2+json",
];

/// A layout of a wasm module in a registry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// CNCF wasm v0: config `application/vnd.wasm.config.v0+json`, layer `application/wasm`.
    CncfV0,
    /// Layer `application/vnd.wasm.content.layer.v1+wasm`, any config.
    WasmV1,
    /// solo.io "oci": config and layer `application/vnd.module.wasm.*`.
    Solo,
    /// An image whose one gzipped tar layer holds `plugin.wasm`.
    Compat,
}

impl Layout {
    /// Short name, as `inspect` prints it.
    pub fn name(self) -> &'static str {
        match self {
            Self::CncfV0 => "cncf-wasm-v0",
            Self::WasmV1 => "wasm-v1",
            Self::Solo => "solo-oci",
            Self::Compat => "compat-image",
        }
    }

    /// What every accepted layout looks like, for error messages.
    pub fn accepted() -> String {
        format!(
            "config {WASM_CONFIG_V0} + layer {WASM_LAYER}; a layer {WASM_LAYER_V1} (any config); config {SOLO_CONFIG} + layer {SOLO_LAYER}; or an image ({}) with one layer ({}) holding {COMPAT_FILE}",
            IMAGE_CONFIGS.join(" or "),
            TAR_GZ_LAYERS.join(" or ")
        )
    }

    /// The layout of a manifest with this config type and these layer types, and the index of the
    /// layer that holds the module.
    pub fn detect(config: &str, layers: &[&str]) -> Option<(Self, usize)> {
        let only = |wanted: &str| match layers {
            [one] if *one == wanted => Some(0),
            _ => None,
        };
        if config == WASM_CONFIG_V0
            && let Some(i) = only(WASM_LAYER)
        {
            return Some((Self::CncfV0, i));
        }
        if config == SOLO_CONFIG
            && let Some(i) = only(SOLO_LAYER)
        {
            return Some((Self::Solo, i));
        }
        if let Some(i) = only(WASM_LAYER_V1) {
            return Some((Self::WasmV1, i));
        }
        if IMAGE_CONFIGS.contains(&config)
            && let [one] = layers
            && TAR_GZ_LAYERS.contains(one)
        {
            return Some((Self::Compat, 0));
        }
        None
    }
}

/// Takes `plugin.wasm` out of a compat image's gzipped tar layer, reading at most `limit` bytes of
/// it.
pub(crate) fn extract_compat(layer: &[u8], limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let gz = flate2::read::GzDecoder::new(layer);
    let mut archive = tar::Archive::new(gz);
    let entries = archive
        .entries()
        .map_err(|e| format!("the layer is not a gzipped tar: {e}"))?;
    for entry in entries {
        let entry = entry.map_err(|e| format!("the layer is not a gzipped tar: {e}"))?;
        let path = entry
            .path()
            .map_err(|e| format!("bad file name in the layer: {e}"))?
            .into_owned();
        let name = path.to_string_lossy();
        if name.trim_start_matches("./") != COMPAT_FILE {
            continue;
        }
        if entry.size() > limit {
            return Err(format!(
                "{COMPAT_FILE} is {} bytes, over the limit of {limit} bytes",
                entry.size()
            ));
        }
        let mut bytes = Vec::new();
        entry
            .take(limit + 1)
            .read_to_end(&mut bytes)
            .map_err(|e| format!("cannot read {COMPAT_FILE} from the layer: {e}"))?;
        return Ok(bytes);
    }
    Err(format!("the layer holds no {COMPAT_FILE}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detects_the_four_layouts_and_nothing_else() {
        assert_eq!(
            Layout::detect(WASM_CONFIG_V0, &[WASM_LAYER]),
            Some((Layout::CncfV0, 0))
        );
        assert_eq!(
            Layout::detect("application/vnd.oci.image.config.v1+json", &[WASM_LAYER_V1]),
            Some((Layout::WasmV1, 0))
        );
        assert_eq!(
            Layout::detect(SOLO_CONFIG, &[SOLO_LAYER]),
            Some((Layout::Solo, 0))
        );
        assert_eq!(
            Layout::detect(IMAGE_CONFIGS[0], &[TAR_GZ_LAYERS[0]]),
            Some((Layout::Compat, 0))
        );
        assert_eq!(
            Layout::detect(WASM_CONFIG_V0, &[WASM_LAYER, WASM_LAYER]),
            None
        );
        assert_eq!(
            Layout::detect("application/vnd.oci.image.config.v1+json", &["text/plain"]),
            None
        );
    }
}
