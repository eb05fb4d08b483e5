//! The plugin ABI's surface (docs/abi.md): the version, what a module must export, which host
//! functions it may import with which signatures, and one check of a module's shape against them.
//!
//! The engine checks a compiled module with it (from wasmtime's view of the module); the operator
//! and `eventplug inspect` check module bytes with it before anything runs them (from wasmparser's
//! view), so both refuse the same modules with the same words.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

/// The ABI version this host speaks; a module's `eventplug_abi_version` must return it.
pub const ABI_VERSION: i32 = 1;

/// The import module of eventplug's own host functions.
pub const HOST_MODULE: &str = "eventplug";

/// The import module of the test harness's functions (docs/abi.md, "Testing plugins"), served only
/// by `eventplug test`.
pub const TEST_MODULE: &str = "eventplug_test";

/// Names of the functions and memory a plugin exports.
pub mod exports {
    /// The plugin's linear memory.
    pub const MEMORY: &str = "memory";
    /// `() -> i32`: the ABI version the plugin was built for.
    pub const ABI_VERSION: &str = "eventplug_abi_version";
    /// `(size: i32) -> i32`: memory for the host to write `size` bytes of input into.
    pub const ALLOC: &str = "eventplug_alloc";
    /// `(ptr: i32, len: i32) -> i64`: handle one `HandleEventRequest`; returns the response region.
    pub const HANDLE_EVENT: &str = "eventplug_handle_event";
    /// Optional `(ptr: i32, len: i32) -> i64`: take the plugin's configuration; returns an
    /// `InitResponse` region (0 for success).
    pub const INIT: &str = "eventplug_init";
    /// Optional `() -> ()`: run once before anything else (C and WASI reactors' constructors).
    pub const INITIALIZE: &str = "_initialize";
    /// `() -> ()` in a test build: the plugin's tests, run by `eventplug test`.
    pub const TEST: &str = "test";
}

/// A wasm value type, as far as the ABI tells them apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// `i32`: pointers, lengths, small integers.
    I32,
    /// `i64`: packed (pointer, length) regions.
    I64,
    /// `f64`: AssemblyScript's numbers.
    F64,
    /// Any other type (`f32`, `v128`, references): never part of the ABI.
    Other(&'static str),
}

impl std::fmt::Display for ValueKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::I32 => "i32",
            Self::I64 => "i64",
            Self::F64 => "f64",
            Self::Other(name) => name,
        })
    }
}

/// A function signature of the ABI.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FuncSig {
    /// Parameter types.
    pub params: &'static [ValueKind],
    /// Result types.
    pub results: &'static [ValueKind],
}

fn list(kinds: &[ValueKind]) -> String {
    kinds
        .iter()
        .map(ToString::to_string)
        .collect::<Vec<_>>()
        .join(", ")
}

impl std::fmt::Display for FuncSig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "({}) -> ({})", list(self.params), list(self.results))
    }
}

use ValueKind::{F64, I32, I64};

/// A host function a plugin may import.
#[derive(Debug, Clone, Copy)]
pub struct ImportSpec {
    /// Import module.
    pub module: &'static str,
    /// Import name.
    pub name: &'static str,
    /// Its signature.
    pub sig: FuncSig,
}

/// An import of `module.name` with the given signature.
pub const fn import(
    module: &'static str,
    name: &'static str,
    params: &'static [ValueKind],
    results: &'static [ValueKind],
) -> ImportSpec {
    ImportSpec {
        module,
        name,
        sig: FuncSig { params, results },
    }
}

const IMPORTS: &[ImportSpec] = &[
    import(HOST_MODULE, "log", &[I32, I32, I32], &[]),
    import(HOST_MODULE, "store_take_token", &[I32, I32, I32], &[I32]),
    import(HOST_MODULE, "store_release_tokens", &[I32, I32], &[I32]),
    import(HOST_MODULE, "alert", &[I32, I32], &[I32]),
    import(HOST_MODULE, "lock_create", &[I32, I32], &[I32]),
    import(HOST_MODULE, "lock_delete", &[I32, I32], &[I32]),
    import("env", "abort", &[I32, I32, I32, I32], &[]),
    import("env", "trace", &[I32, I32, F64, F64, F64, F64, F64], &[]),
    import("env", "seed", &[], &[F64]),
    import("env", "Date.now", &[], &[F64]),
];

/// Every host function a plugin may import in production.
pub fn known_imports() -> &'static [ImportSpec] {
    IMPORTS
}

struct ExportSpec {
    name: &'static str,
    sig: FuncSig,
    required: bool,
}

const fn export(
    name: &'static str,
    params: &'static [ValueKind],
    results: &'static [ValueKind],
    required: bool,
) -> ExportSpec {
    ExportSpec {
        name,
        sig: FuncSig { params, results },
        required,
    }
}

const EXPORTS: &[ExportSpec] = &[
    export(exports::ABI_VERSION, &[], &[I32], true),
    export(exports::ALLOC, &[I32], &[I32], true),
    export(exports::HANDLE_EVENT, &[I32, I32], &[I64], true),
    export(exports::INIT, &[I32, I32], &[I64], false),
    export(exports::INITIALIZE, &[], &[], false),
];

/// What an import or export is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Item {
    /// A function with these parameter and result types.
    Func(Vec<ValueKind>, Vec<ValueKind>),
    /// A linear memory; `true` when 64-bit.
    Memory(bool),
    /// A global, table or tag.
    Other(&'static str),
}

impl Item {
    fn kind(&self) -> &'static str {
        match self {
            Self::Func(..) => "function",
            Self::Memory(_) => "memory",
            Self::Other(kind) => kind,
        }
    }
}

/// A module's imports and exports: all the ABI check needs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModuleShape {
    /// `(module, name, item)` per import.
    pub imports: Vec<(String, String, Item)>,
    /// `(name, item)` per export.
    pub exports: Vec<(String, Item)>,
}

fn value_kind(ty: wasmparser::ValType) -> ValueKind {
    match ty {
        wasmparser::ValType::I32 => I32,
        wasmparser::ValType::I64 => I64,
        wasmparser::ValType::F64 => F64,
        wasmparser::ValType::F32 => ValueKind::Other("f32"),
        wasmparser::ValType::V128 => ValueKind::Other("v128"),
        wasmparser::ValType::Ref(_) => ValueKind::Other("ref"),
    }
}

impl ModuleShape {
    /// Reads a module's shape from its bytes, validating them as WebAssembly first (what the
    /// engine would refuse to compile is refused here too).
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut validator = wasmparser::Validator::new();
        let types = validator
            .validate_all(bytes)
            .map_err(|e| format!("is not a valid WebAssembly module: {e}"))?;
        let types = types.as_ref();
        let mut shape = Self::default();
        let func = |index: u32| -> Item {
            let ty = types[types.core_function_at(index)].unwrap_func();
            Item::Func(
                ty.params().iter().copied().map(value_kind).collect(),
                ty.results().iter().copied().map(value_kind).collect(),
            )
        };
        let mut imported_funcs = 0u32;
        for payload in wasmparser::Parser::new(0).parse_all(bytes) {
            match payload.map_err(|e| format!("cannot be read: {e}"))? {
                wasmparser::Payload::ImportSection(reader) => {
                    for import in reader.into_imports() {
                        let import = import.map_err(|e| format!("cannot be read: {e}"))?;
                        let item = match import.ty {
                            wasmparser::TypeRef::Func(_) | wasmparser::TypeRef::FuncExact(_) => {
                                let item = func(imported_funcs);
                                imported_funcs += 1;
                                item
                            }
                            wasmparser::TypeRef::Memory(memory) => Item::Memory(memory.memory64),
                            wasmparser::TypeRef::Global(_) => Item::Other("global"),
                            wasmparser::TypeRef::Table(_) => Item::Other("table"),
                            wasmparser::TypeRef::Tag(_) => Item::Other("tag"),
                        };
                        shape.imports.push((
                            import.module.to_string(),
                            import.name.to_string(),
                            item,
                        ));
                    }
                }
                wasmparser::Payload::ExportSection(reader) => {
                    for export in reader {
                        let export = export.map_err(|e| format!("cannot be read: {e}"))?;
                        let item = match export.kind {
                            wasmparser::ExternalKind::Func
                            | wasmparser::ExternalKind::FuncExact => func(export.index),
                            wasmparser::ExternalKind::Memory => {
                                let memory = types.memory_at(export.index);
                                Item::Memory(memory.memory64)
                            }
                            wasmparser::ExternalKind::Global => Item::Other("global"),
                            wasmparser::ExternalKind::Table => Item::Other("table"),
                            wasmparser::ExternalKind::Tag => Item::Other("tag"),
                        };
                        shape.exports.push((export.name.to_string(), item));
                    }
                }
                _ => {}
            }
        }
        Ok(shape)
    }
}

fn matches(params: &[ValueKind], results: &[ValueKind], sig: &FuncSig) -> bool {
    params == sig.params && results == sig.results
}

/// Checks a module's imports and exports against the ABI. Returns every problem found, each naming
/// the import or export and what the ABI expects; empty when the module fits. The test harness's
/// imports are accepted only when an engine's host extension serves them (`eventplug test`), and
/// are passed in as `extension`.
pub fn check_shape(shape: &ModuleShape, extension: &[ImportSpec]) -> Vec<String> {
    let mut problems = Vec::new();
    for (module_name, name, item) in &shape.imports {
        let Some(spec) = IMPORTS
            .iter()
            .chain(extension)
            .find(|spec| spec.module == module_name && spec.name == name)
        else {
            let hint = if module_name == TEST_MODULE {
                "; it is served only by `eventplug test`: load the plugin's release build, not the test build"
            } else {
                " (docs/abi.md lists the host functions)"
            };
            problems.push(format!(
                "imports `{module_name}.{name}`, which eventplug does not provide{hint}"
            ));
            continue;
        };
        match item {
            Item::Func(params, results) if matches(params, results, &spec.sig) => {}
            Item::Func(params, results) => problems.push(format!(
                "imports `{module_name}.{name}` as ({}) -> ({}), but the ABI defines it as {}",
                list(params),
                list(results),
                spec.sig
            )),
            other => problems.push(format!(
                "imports `{module_name}.{name}` as a {}, but the ABI defines a function {}",
                other.kind(),
                spec.sig
            )),
        }
    }
    let export = |name: &str| {
        shape
            .exports
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, item)| item)
    };
    match export(exports::MEMORY) {
        Some(Item::Memory(true)) => problems
            .push("exports a 64-bit `memory`; the ABI needs a 32-bit linear memory".to_string()),
        Some(Item::Memory(false)) => {}
        Some(other) => problems.push(format!(
            "exports `memory` as a {}, but the ABI needs its linear memory there",
            other.kind()
        )),
        None => problems.push("does not export `memory` (its linear memory)".to_string()),
    }
    for spec in EXPORTS {
        match export(spec.name) {
            None if spec.required => {
                problems.push(format!("does not export `{}` {}", spec.name, spec.sig))
            }
            None => {}
            Some(Item::Func(params, results)) if matches(params, results, &spec.sig) => {}
            Some(Item::Func(params, results)) => problems.push(format!(
                "exports `{}` as ({}) -> ({}), but the ABI defines it as {}",
                spec.name,
                list(params),
                list(results),
                spec.sig
            )),
            Some(other) => problems.push(format!(
                "exports `{}` as a {}, but the ABI defines a function {}",
                spec.name,
                other.kind(),
                spec.sig
            )),
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape(wat: &str) -> ModuleShape {
        ModuleShape::parse(&wat::parse_str(wat).expect("WAT")).expect("a module")
    }

    const GOOD: &str = r#"(module
        (import "eventplug" "log" (func (param i32 i32 i32)))
        (memory (export "memory") 1)
        (func (export "eventplug_abi_version") (result i32) (i32.const 1))
        (func (export "eventplug_alloc") (param i32) (result i32) (i32.const 0))
        (func (export "eventplug_handle_event") (param i32 i32) (result i64) (i64.const 0)))"#;

    #[test]
    fn a_module_that_fits_has_no_problems() {
        assert_eq!(check_shape(&shape(GOOD), &[]), Vec::<String>::new());
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let problems = check_shape(
            &shape(
                r#"(module
                (import "wasi_snapshot_preview1" "fd_write" (func (param i32 i32 i32 i32) (result i32)))
                (import "eventplug" "alert" (func (param i32) (result i32)))
                (import "eventplug_test" "expect" (func))
                (func (export "eventplug_alloc") (param i64) (result i32) (i32.const 0))
                (global (export "eventplug_handle_event") i32 (i32.const 0)))"#,
            ),
            &[],
        );
        let text = problems.join("\n");
        for expected in [
            "imports `wasi_snapshot_preview1.fd_write`, which eventplug does not provide",
            "imports `eventplug.alert` as (i32) -> (i32), but the ABI defines it as (i32, i32) -> (i32)",
            "served only by `eventplug test`",
            "does not export `memory`",
            "does not export `eventplug_abi_version` () -> (i32)",
            "exports `eventplug_alloc` as (i64) -> (i32)",
            "exports `eventplug_handle_event` as a global",
        ] {
            assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
        }
        assert_eq!(problems.len(), 7, "{text}");
    }

    #[test]
    fn bytes_that_are_not_wasm_are_refused_by_the_parser() {
        let error = ModuleShape::parse(b"\0asm\x01\0\0\0\x05garbage").unwrap_err();
        assert!(
            error.starts_with("is not a valid WebAssembly module"),
            "{error}"
        );
        assert!(ModuleShape::parse(b"not wasm").is_err());
    }
}
