;; The smallest plugin that meets the ABI (docs/abi.md): it forwards every event unchanged by
;; returning an empty response. Used to measure the host's own cost per event.
(module
  (memory (export "memory") 1)
  (func (export "eventplug_abi_version") (result i32) (i32.const 1))
  ;; Input goes at 64 KiB, growing memory to fit.
  (func (export "eventplug_alloc") (param $n i32) (result i32)
    (local $need i32)
    (local.set $need (i32.add (i32.const 65536) (local.get $n)))
    (if (i32.gt_u (local.get $need) (i32.mul (memory.size) (i32.const 65536)))
      (then (if (i32.eq (memory.grow (i32.add (i32.shr_u (i32.sub (local.get $need) (i32.mul (memory.size) (i32.const 65536))) (i32.const 16)) (i32.const 1))) (i32.const -1))
        (then unreachable))))
    (i32.const 65536))
  (func (export "eventplug_handle_event") (param $ptr i32) (param $len i32) (result i64)
    (i64.const 0)))
