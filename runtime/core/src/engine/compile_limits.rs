//! Bounds on what a module may ask the compiler to do, checked before compiling: compiling is the
//! one step whose memory a module's size alone does not bound (a few MB of tiny functions can take
//! hundreds of MB to compile), and a sidecar that is OOM-killed while compiling restarts into the
//! same module.

use wasmparser::{Parser, Payload};

/// What a module may contain to be compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CompileLimits {
    /// Functions the module defines (imports not counted).
    pub max_functions: u32,
    /// Bytes of the code section (all function bodies).
    pub max_code_bytes: u64,
    /// Bytes of one function body (a single huge function is as costly to compile as many).
    pub max_function_bytes: u64,
    /// Bytes of all data segments together.
    pub max_data_bytes: u64,
}

impl Default for CompileLimits {
    fn default() -> Self {
        Self {
            max_functions: 20_000,
            max_code_bytes: 8 << 20,
            max_function_bytes: 1 << 20,
            max_data_bytes: 16 << 20,
        }
    }
}

impl CompileLimits {
    /// Checks a binary module against the limits; the error names what is over which limit.
    pub fn check(&self, wasm: &[u8]) -> Result<(), String> {
        let mut functions: u64 = 0;
        let mut data: u64 = 0;
        for payload in Parser::new(0).parse_all(wasm) {
            match payload.map_err(|e| format!("cannot read the module: {e}"))? {
                Payload::FunctionSection(section) => functions += u64::from(section.count()),
                Payload::CodeSectionStart { size, .. } if u64::from(size) > self.max_code_bytes => {
                    return Err(format!(
                        "its code is {size} bytes, over the {} bytes eventplug compiles",
                        self.max_code_bytes
                    ));
                }
                Payload::CodeSectionEntry(body) => {
                    let size = body.range().len() as u64;
                    if size > self.max_function_bytes {
                        return Err(format!(
                            "one of its functions is {size} bytes, over the {} bytes eventplug compiles",
                            self.max_function_bytes
                        ));
                    }
                }
                Payload::DataSection(section) => {
                    for segment in section {
                        let segment =
                            segment.map_err(|e| format!("cannot read a data segment: {e}"))?;
                        data += segment.data.len() as u64;
                    }
                }
                _ => {}
            }
        }
        if functions > u64::from(self.max_functions) {
            return Err(format!(
                "it defines {functions} functions, over the {} eventplug compiles",
                self.max_functions
            ));
        }
        if data > self.max_data_bytes {
            return Err(format!(
                "its data segments hold {data} bytes, over the {} bytes eventplug loads",
                self.max_data_bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::CompileLimits;

    fn module(functions: usize, data_bytes: usize) -> Vec<u8> {
        let funcs = "(func)".repeat(functions);
        let data = "\\00".repeat(data_bytes);
        wat::parse_str(format!(
            "(module (memory 1) {funcs} (data (i32.const 0) \"{data}\"))"
        ))
        .expect("valid WAT")
    }

    #[test]
    fn modules_within_the_limits_pass_and_others_are_named() {
        let limits = CompileLimits {
            max_functions: 10,
            max_code_bytes: 1 << 20,
            max_function_bytes: 1 << 10,
            max_data_bytes: 100,
        };
        assert_eq!(limits.check(&module(10, 100)), Ok(()));
        let err = limits.check(&module(11, 0)).unwrap_err();
        assert!(err.contains("defines 11 functions, over the 10"), "{err}");
        let err = limits.check(&module(1, 101)).unwrap_err();
        assert!(err.contains("data segments hold 101 bytes"), "{err}");
        let tight = CompileLimits {
            max_code_bytes: 8,
            ..limits
        };
        let err = tight.check(&module(10, 0)).unwrap_err();
        assert!(err.contains("its code is"), "{err}");
        assert!(
            limits.check(b"\0asm\x01\0\0\0\x01\xff").is_err(),
            "a truncated module"
        );
        let big_body = wat::parse_str(format!(
            "(module (func {}))",
            "(drop (i32.const 1))".repeat(400)
        ))
        .expect("valid WAT");
        let err = limits.check(&big_body).unwrap_err();
        assert!(err.contains("one of its functions is"), "{err}");
    }
}
