//! Checks a compiled module against the ABI before anything runs, naming every problem at once.

use super::{HOST_MODULE, TEST_MODULE, exports};
use wasmtime::{ExternType, FuncType, Module, ValType};

/// The value types the ABI uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ValueKind {
    /// `i32`: pointers, lengths, small integers.
    I32,
    /// `i64`: packed (pointer, length) regions.
    I64,
    /// `f64`: AssemblyScript's numbers.
    F64,
}

impl std::fmt::Display for ValueKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::I32 => "i32",
            Self::I64 => "i64",
            Self::F64 => "f64",
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

impl std::fmt::Display for FuncSig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let list = |kinds: &[ValueKind]| {
            kinds
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        };
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

const EXPORTS: &[ExportSpec] = &[
    ExportSpec {
        name: exports::ABI_VERSION,
        sig: FuncSig {
            params: &[],
            results: &[I32],
        },
        required: true,
    },
    ExportSpec {
        name: exports::ALLOC,
        sig: FuncSig {
            params: &[I32],
            results: &[I32],
        },
        required: true,
    },
    ExportSpec {
        name: exports::HANDLE_EVENT,
        sig: FuncSig {
            params: &[I32, I32],
            results: &[I64],
        },
        required: true,
    },
    ExportSpec {
        name: exports::INIT,
        sig: FuncSig {
            params: &[I32, I32],
            results: &[I64],
        },
        required: false,
    },
    ExportSpec {
        name: exports::INITIALIZE,
        sig: FuncSig {
            params: &[],
            results: &[],
        },
        required: false,
    },
];

fn kinds(types: impl Iterator<Item = ValType>) -> Option<Vec<ValueKind>> {
    types
        .map(|ty| match ty {
            ValType::I32 => Some(I32),
            ValType::I64 => Some(I64),
            ValType::F64 => Some(F64),
            _ => None,
        })
        .collect()
}

fn describe(ty: &FuncType) -> String {
    let list = |types: Vec<String>| types.join(", ");
    format!(
        "({}) -> ({})",
        list(ty.params().map(|t| t.to_string()).collect()),
        list(ty.results().map(|t| t.to_string()).collect())
    )
}

fn matches(ty: &FuncType, sig: &FuncSig) -> bool {
    kinds(ty.params()).as_deref() == Some(sig.params)
        && kinds(ty.results()).as_deref() == Some(sig.results)
}

fn extern_kind(ty: &ExternType) -> &'static str {
    match ty {
        ExternType::Func(_) => "function",
        ExternType::Global(_) => "global",
        ExternType::Table(_) => "table",
        ExternType::Memory(_) => "memory",
        ExternType::Tag(_) => "tag",
    }
}

/// Checks the module's imports and exports against the ABI. Returns every problem found, each naming
/// the import or export and what the ABI expects; empty when the module fits. The test harness's
/// imports are accepted only when an engine's host extension serves them (`eventplug test`), and
/// are passed in as `extension`.
pub fn check_module(module: &Module, extension: &[ImportSpec]) -> Vec<String> {
    let mut problems = Vec::new();
    for import in module.imports() {
        let (module_name, name) = (import.module(), import.name());
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
        match import.ty() {
            ExternType::Func(ty) if matches(&ty, &spec.sig) => {}
            ExternType::Func(ty) => problems.push(format!(
                "imports `{module_name}.{name}` as {}, but the ABI defines it as {}",
                describe(&ty),
                spec.sig
            )),
            other => problems.push(format!(
                "imports `{module_name}.{name}` as a {}, but the ABI defines a function {}",
                extern_kind(&other),
                spec.sig
            )),
        }
    }
    match module.get_export(exports::MEMORY) {
        Some(ExternType::Memory(memory)) if memory.is_64() => problems
            .push("exports a 64-bit `memory`; the ABI needs a 32-bit linear memory".to_string()),
        Some(ExternType::Memory(_)) => {}
        Some(other) => problems.push(format!(
            "exports `memory` as a {}, but the ABI needs its linear memory there",
            extern_kind(&other)
        )),
        None => problems.push("does not export `memory` (its linear memory)".to_string()),
    }
    for spec in EXPORTS {
        match module.get_export(spec.name) {
            None if spec.required => {
                problems.push(format!("does not export `{}` {}", spec.name, spec.sig))
            }
            None => {}
            Some(ExternType::Func(ty)) if matches(&ty, &spec.sig) => {}
            Some(ExternType::Func(ty)) => problems.push(format!(
                "exports `{}` as {}, but the ABI defines it as {}",
                spec.name,
                describe(&ty),
                spec.sig
            )),
            Some(other) => problems.push(format!(
                "exports `{}` as a {}, but the ABI defines a function {}",
                spec.name,
                extern_kind(&other),
                spec.sig
            )),
        }
    }
    problems
}
