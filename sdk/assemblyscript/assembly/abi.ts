// The plugin ABI this SDK speaks (docs/abi.md): its version and the host functions of module
// `eventplug`. Pointers and lengths address UTF-8 text or protobuf bytes in this module's memory.

export { ABI_VERSION } from "./generated/abi_version";

/** Writes a log line: level 0 debug, 1 info, 2 warn, 3 error. */
@external("eventplug", "log")
export declare function hostLog(level: i32, ptr: usize, len: i32): void;

/** Adds a token to a scope for `ttlSeconds`; returns the scope's live tokens, or -1 / -3 on failure. */
@external("eventplug", "store_take_token")
export declare function hostStoreTakeToken(scopePtr: usize, scopeLen: i32, ttlSeconds: i32): i32;

/** Removes every token of a scope; returns how many were live, or -1 / -3 on failure. */
@external("eventplug", "store_release_tokens")
export declare function hostStoreReleaseTokens(scopePtr: usize, scopeLen: i32): i32;

/** Declares an `Alert`; 0 when recorded. */
@external("eventplug", "alert")
export declare function hostAlert(ptr: usize, len: i32): i32;

/** Declares a `CreateLock`; 0 when recorded. */
@external("eventplug", "lock_create")
export declare function hostLockCreate(ptr: usize, len: i32): i32;

/** Declares a `DeleteLock`; 0 when recorded. */
@external("eventplug", "lock_delete")
export declare function hostLockDelete(ptr: usize, len: i32): i32;
