//! A module is checked against the ABI before anything reaches a pod: the same check the engine
//! runs (`eventplug-abi`), on the bytes, with a wasm parser and no engine. What only running it can
//! tell (the version its `eventplug_abi_version` returns, its `eventplug_init` accepting the
//! config) the sidecar reports through `/status`.

use eventplug_abi::{ModuleShape, check_shape};

/// The largest module the operator delivers: a target's module ConfigMaps (about 14 MiB) hold two
/// of them, the running digest and its successor during an upgrade.
pub const MAX_MODULE_BYTES: usize = 6 << 20;

/// Why a module is refused: every problem, in one message for the `ModuleResolved` condition.
pub fn check_module(bytes: &[u8]) -> Result<(), String> {
    if bytes.len() > MAX_MODULE_BYTES {
        return Err(format!(
            "the module is {} bytes, over the {MAX_MODULE_BYTES} bytes the operator delivers",
            bytes.len()
        ));
    }
    let shape = ModuleShape::parse(bytes).map_err(|e| format!("the module {e}"))?;
    let problems = check_shape(&shape, &[]);
    if problems.is_empty() {
        Ok(())
    } else {
        Err(format!(
            "the module does not fit the eventplug ABI (docs/abi.md): it {}",
            problems.join("; it ")
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_fitting_module_passes_and_a_test_build_or_junk_is_refused_with_every_problem() {
        let good = wat::parse_str(
            r#"(module (memory (export "memory") 1)
                (func (export "eventplug_abi_version") (result i32) (i32.const 1))
                (func (export "eventplug_alloc") (param i32) (result i32) (i32.const 0))
                (func (export "eventplug_handle_event") (param i32 i32) (result i64) (i64.const 0)))"#,
        )
        .expect("WAT");
        assert_eq!(check_module(&good), Ok(()));
        let test_build = wat::parse_str(
            r#"(module (import "eventplug_test" "handle" (func (param i32 i32) (result i64)))
                (memory (export "memory") 1))"#,
        )
        .expect("WAT");
        let error = check_module(&test_build).unwrap_err();
        assert!(error.contains("eventplug_test.handle"), "{error}");
        assert!(
            error.contains("does not export `eventplug_alloc`"),
            "{error}"
        );
        let error = check_module(b"PK\x03\x04 a zip file").unwrap_err();
        assert!(
            error.starts_with("the module is not a valid WebAssembly module"),
            "{error}"
        );
    }
}
