//! Generates the Rust types of `eventplug/v1/*.proto` with prost, compiled by `protox` (a protobuf
//! compiler in Rust that bundles the well-known types), so no system `protoc` is needed.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let protos = [
        "eventplug/v1/envelope.proto",
        "eventplug/v1/plugin.proto",
        "eventplug/v1/effects.proto",
    ];
    for proto in protos {
        println!("cargo:rerun-if-changed={proto}");
    }
    let descriptors = protox::compile(protos, ["."])?;
    let mut config = prost_build::Config::new();
    config.btree_map(["."]);
    config.compile_fds(descriptors)?;
    Ok(())
}
