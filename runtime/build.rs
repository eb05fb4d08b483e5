//! Generates the Rust types of the interop contract from `proto/` with prost.
//!
//! Needs `protoc` (Debian `protobuf-compiler`) and the well-known type files it imports
//! (Debian `libprotobuf-dev`); `scripts/setup.sh` installs both.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "../proto/eventplug/v1/envelope.proto",
        "../proto/eventplug/v1/plugin.proto",
        "../proto/eventplug/v1/effects.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let mut config = prost_build::Config::new();
    config.btree_map(["."]);
    config.compile_protos(&protos, &["../proto", "/usr/include"])?;
    Ok(())
}
