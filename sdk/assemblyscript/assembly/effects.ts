// What a plugin can do besides deciding an event's fate: log, count with tokens, raise alerts, lock
// users. Effects (alerts, locks) are declared during the call and carried out by the host after the
// event's fate is known, once per event; a plugin never waits for them (docs/abi.md, "Effects").

import { Protobuf } from "as-proto/assembly";
import { Alert } from "./generated/proto/eventplug/v1/Alert";
import { CreateLock } from "./generated/proto/eventplug/v1/CreateLock";
import { DeleteLock } from "./generated/proto/eventplug/v1/DeleteLock";
import { LockTarget } from "./generated/proto/eventplug/v1/LockTarget";
import { Severity } from "./generated/proto/eventplug/v1/Severity";
import { hostAlert, hostLockCreate, hostLockDelete, hostLog, hostStoreReleaseTokens, hostStoreTakeToken } from "./abi";
import { encodeUtf8 } from "./text";

/**
 * Declares an alert about the event being handled.
 *
 * @param severity how serious it is (syslog order, `Severity.WARNING`, …)
 * @param message a one-line summary for people
 * @param includeEvent attach the event, as it entered this plugin, to the alert
 * @param metadata extra key/value pairs for routing and display
 * @returns whether the host recorded it (false past 16 effects in one call, or over 64 KiB)
 */
export function alert(
  severity: Severity,
  message: string,
  includeEvent: bool = false,
  metadata: Map<string, string> | null = null,
): bool {
  const declared = new Alert(message, metadata !== null ? metadata : new Map<string, string>(), severity, includeEvent);
  const bytes = Protobuf.encode(declared, Alert.encode);
  return hostAlert(bytes.dataStart, bytes.byteLength) == 0;
}

/** Log lines, shown by `eventplug run` / `eventplug test` and in the sidecar's logs (at most 32 per call, 4 KiB each). */
export namespace log {
  /** Writes a debug line. */
  export function debug(message: string): void {
    write(0, message);
  }

  /** Writes an info line. */
  export function info(message: string): void {
    write(1, message);
  }

  /** Writes a warning line. */
  export function warn(message: string): void {
    write(2, message);
  }

  /** Writes an error line. */
  export function error(message: string): void {
    write(3, message);
  }

  function write(level: i32, message: string): void {
    const bytes = encodeUtf8(message);
    hostLog(level, changetype<usize>(bytes), bytes.byteLength);
  }
}

/**
 * The token store: counters that outlive an instance and are shared by all instances of this plugin
 * (scopes belong to the plugin; two plugins never share one). Answered locally, never waiting on the
 * network.
 */
export namespace store {
  /**
   * Adds a token to `scope` that lives `ttlSeconds`, and returns how many live tokens the scope holds
   * now, this one included: "more than 3 failed logins of a user in 5 minutes" is
   * `store.takeToken(user, 300) > 3`. Returns -1 for an invalid scope (more than 256 bytes) or a
   * `ttlSeconds` ≤ 0, and -3 when the store failed (the host logs why).
   */
  export function takeToken(scope: string, ttlSeconds: i32): i32 {
    const bytes = encodeUtf8(scope);
    return hostStoreTakeToken(changetype<usize>(bytes), bytes.byteLength, ttlSeconds);
  }

  /** Removes every token of `scope`; returns how many were live, -1 for an invalid scope, -3 when the store failed. */
  export function releaseTokens(scope: string): i32 {
    const bytes = encodeUtf8(scope);
    return hostStoreReleaseTokens(changetype<usize>(bytes), bytes.byteLength);
  }
}

/** Teleport API requests, declared as effects: the host carries them out within the permissions the platform allows. */
export namespace api {
  /**
   * Declares a Teleport lock on `target` (set the fields that apply: `user`, `login`, `role`, …).
   *
   * @param target who or what is locked
   * @param message shown to the locked user
   * @param ttlSeconds how long the lock lasts from when it is carried out; 0: it does not expire
   * @param name the lock's name; empty: the host derives a stable name from the target
   * @returns whether the host recorded it
   */
  export function createLock(target: LockTarget, message: string, ttlSeconds: i64 = 0, name: string = ""): bool {
    const bytes = Protobuf.encode(new CreateLock(name, target, message, ttlSeconds), CreateLock.encode);
    return hostLockCreate(bytes.dataStart, bytes.byteLength) == 0;
  }

  /** Declares the deletion of the Teleport lock named `name`; returns whether the host recorded it. */
  export function deleteLock(name: string): bool {
    const bytes = Protobuf.encode(new DeleteLock(name), DeleteLock.encode);
    return hostLockDelete(bytes.dataStart, bytes.byteLength) == 0;
  }
}
