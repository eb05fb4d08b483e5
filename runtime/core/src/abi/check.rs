//! Checks a compiled module against the ABI before anything runs, naming every problem at once: the
//! module's imports and exports as wasmtime sees them, checked by `eventplug-abi`, the same check
//! the operator runs on module bytes.

pub use eventplug_abi::{FuncSig, ImportSpec, ValueKind, import, known_imports};
use eventplug_abi::{Item, ModuleShape};
use wasmtime::{ExternType, FuncType, Module, ValType};

fn kind(ty: ValType) -> ValueKind {
    match ty {
        ValType::I32 => ValueKind::I32,
        ValType::I64 => ValueKind::I64,
        ValType::F64 => ValueKind::F64,
        ValType::F32 => ValueKind::Other("f32"),
        ValType::V128 => ValueKind::Other("v128"),
        ValType::Ref(_) => ValueKind::Other("ref"),
    }
}

fn func(ty: &FuncType) -> Item {
    Item::Func(
        ty.params().map(kind).collect(),
        ty.results().map(kind).collect(),
    )
}

fn item(ty: &ExternType) -> Item {
    match ty {
        ExternType::Func(ty) => func(ty),
        ExternType::Memory(memory) => Item::Memory(memory.is_64()),
        ExternType::Global(_) => Item::Other("global"),
        ExternType::Table(_) => Item::Other("table"),
        ExternType::Tag(_) => Item::Other("tag"),
    }
}

/// Checks the module's imports and exports against the ABI. Returns every problem found, each naming
/// the import or export and what the ABI expects; empty when the module fits. The test harness's
/// imports are accepted only when an engine's host extension serves them (`eventplug test`), and
/// are passed in as `extension`.
pub fn check_module(module: &Module, extension: &[ImportSpec]) -> Vec<String> {
    let shape = ModuleShape {
        imports: module
            .imports()
            .map(|i| (i.module().to_string(), i.name().to_string(), item(&i.ty())))
            .collect(),
        exports: module
            .exports()
            .map(|e| (e.name().to_string(), item(&e.ty())))
            .collect(),
    };
    eventplug_abi::check_shape(&shape, extension)
}
