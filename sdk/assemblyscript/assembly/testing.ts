// Helpers for a plugin's tests, run by `eventplug test` (docs/abi.md, "Testing plugins: module
// eventplug_test"). Import them only from the test entry (assembly/test.ts): they import the module
// `eventplug_test`, which only `eventplug test` provides; a production load refuses it.
//
// A failed assertion aborts the test with its message; `eventplug test` prints it with the location of
// the abort, which for these helpers is inside this file: the message names the check (`what`) and the
// values. AssemblyScript's own `assert(condition, message)` reports the test's own line.

import { Protobuf } from "as-proto/assembly";
import { Alert } from "./generated/proto/eventplug/v1/Alert";
import { CreateLock } from "./generated/proto/eventplug/v1/CreateLock";
import { DeleteLock } from "./generated/proto/eventplug/v1/DeleteLock";
import { parseJson } from "./json";
import { decodeUtf8, encodeUtf8, jsonString } from "./text";
import { JsonValue } from "./value";

@external("eventplug_test", "fixture_size")
declare function fixtureSize(id: i32): i32;
@external("eventplug_test", "fixture_read")
declare function fixtureRead(id: i32, ptr: usize, len: i32): i32;
@external("eventplug_test", "handle_event")
declare function hostHandleEvent(ptr: usize, len: i32): i32;
@external("eventplug_test", "result_size")
declare function resultSize(): i32;
@external("eventplug_test", "result_read")
declare function resultRead(ptr: usize, len: i32): i32;
@external("eventplug_test", "alerts_count")
declare function alertsCount(): i32;
@external("eventplug_test", "alert_size")
declare function alertSize(index: i32): i32;
@external("eventplug_test", "alert_read")
declare function alertRead(index: i32, ptr: usize, len: i32): i32;
@external("eventplug_test", "api_requests_count")
declare function apiRequestsCount(): i32;
@external("eventplug_test", "api_request_kind")
declare function apiRequestKind(index: i32): i32;
@external("eventplug_test", "api_request_size")
declare function apiRequestSize(index: i32): i32;
@external("eventplug_test", "api_request_read")
declare function apiRequestRead(index: i32, ptr: usize, len: i32): i32;

/** What the plugin did with an event given to {@link handleEvent}. */
export enum Outcome {
  /** Forwarded unchanged. */
  Forwarded = 0,
  /** Forwarded with edits. */
  Modified = 1,
  /** Skipped (dropped). */
  Skipped = 2,
  /** Failed: an error verdict or a bad response. */
  Failed = 3,
}

/** The name of an outcome, for messages. */
export function outcomeName(outcome: Outcome): string {
  switch (outcome) {
    case Outcome.Forwarded:
      return "Forwarded";
    case Outcome.Modified:
      return "Modified";
    case Outcome.Skipped:
      return "Skipped";
    case Outcome.Failed:
      return "Failed";
  }
  return "Outcome(" + (<i32>outcome).toString() + ")";
}

/** The result of {@link handleEvent}. */
export class HandleResult {
  constructor(
    /** What the plugin did. */
    readonly outcome: Outcome,
    /** The forwarded event's JSON (as it arrived, or with the edits applied); empty when skipped; the error message when failed. */
    readonly output: string,
  ) {}

  /** The forwarded event, parsed; null when it was skipped or failed. */
  get event(): JsonValue | null {
    if (this.outcome != Outcome.Forwarded && this.outcome != Outcome.Modified) return null;
    return parseJson(this.output);
  }
}

/** The kind of a Teleport API request a plugin declared. */
export enum ApiRequestKind {
  /** A CreateLock. */
  CreateLock = 1,
  /** A DeleteLock. */
  DeleteLock = 2,
}

/** One Teleport API request a plugin declared (an effect), decoded. */
export class ApiRequest {
  constructor(
    /** Which request it is. */
    readonly kind: ApiRequestKind,
    /** The request, when `kind` is CreateLock. */
    readonly createLock: CreateLock | null,
    /** The request, when `kind` is DeleteLock. */
    readonly deleteLock: DeleteLock | null,
  ) {}
}

/** The flat event JSON of fixture `id` (the file `fixtures/<id>-<name>.json`). */
export function getFixture(id: i32): string {
  const size = fixtureSize(id);
  const bytes = new ArrayBuffer(size);
  const copied = fixtureRead(id, changetype<usize>(bytes), size);
  return decodeUtf8(changetype<usize>(bytes), copied);
}

/**
 * Runs the plugin on one event, exactly as production does (envelope, `eventplug_handle_event`, edits
 * applied to the JSON by the host), in this same instance. Effects it declares are recorded for
 * {@link getAlerts} and {@link getAPIRequests}. Aborts when `json` is not a JSON object.
 */
export function handleEvent(json: string): HandleResult {
  const input = encodeUtf8(json);
  const outcome = hostHandleEvent(changetype<usize>(input), input.byteLength);
  if (outcome < 0) throw new Error("handleEvent: the text is not an event (one JSON object): " + json.substring(0, 80));
  const size = resultSize();
  const bytes = new ArrayBuffer(size);
  const copied = resultRead(changetype<usize>(bytes), size);
  return new HandleResult(<Outcome>outcome, decodeUtf8(changetype<usize>(bytes), copied));
}

/** Every alert declared so far in this test run, in order. */
export function getAlerts(): Alert[] {
  const alerts = new Array<Alert>();
  const count = alertsCount();
  for (let i = 0; i < count; i++) {
    const size = alertSize(i);
    const bytes = new Uint8Array(size);
    alertRead(i, bytes.dataStart, size);
    alerts.push(Protobuf.decode<Alert>(bytes, Alert.decode));
  }
  return alerts;
}

/** Every Teleport API request (lock effects) declared so far in this test run, in order. */
export function getAPIRequests(): ApiRequest[] {
  const requests = new Array<ApiRequest>();
  const count = apiRequestsCount();
  for (let i = 0; i < count; i++) requests.push(readApiRequest(i));
  return requests;
}

/** The last Teleport API request declared so far in this test run; null when there is none. */
export function getLatestAPIRequest(): ApiRequest | null {
  const count = apiRequestsCount();
  return count == 0 ? null : readApiRequest(count - 1);
}

function readApiRequest(index: i32): ApiRequest {
  const kind = apiRequestKind(index);
  const size = apiRequestSize(index);
  const bytes = new Uint8Array(max(size, 0));
  apiRequestRead(index, bytes.dataStart, size);
  if (kind == ApiRequestKind.CreateLock) {
    return new ApiRequest(ApiRequestKind.CreateLock, Protobuf.decode<CreateLock>(bytes, CreateLock.decode), null);
  }
  if (kind == ApiRequestKind.DeleteLock) {
    return new ApiRequest(ApiRequestKind.DeleteLock, null, Protobuf.decode<DeleteLock>(bytes, DeleteLock.decode));
  }
  throw new Error("API request " + index.toString() + " has the unknown kind " + kind.toString());
}

/** Fails the test unless `condition` holds; `what` says what was checked. */
export function assertTrue(condition: bool, what: string): void {
  if (!condition) throw new Error(what);
}

/** Fails the test unless `actual == expected` (strings, numbers, booleans); the message shows both. */
export function assertEqual<T>(actual: T, expected: T, what: string): void {
  if (actual == expected) return;
  throw new Error(what + ": expected " + show<T>(expected) + ", got " + show<T>(actual));
}

/** Fails the test unless `result` has the outcome `expected`; the message shows the plugin's output. */
export function assertOutcome(result: HandleResult, expected: Outcome, what: string): void {
  if (result.outcome == expected) return;
  throw new Error(
    what + ": expected " + outcomeName(expected) + ", got " + outcomeName(result.outcome) + " (output: " + result.output.substring(0, 200) + ")",
  );
}

function show<T>(value: T): string {
  if (isNullable<T>()) {
    if (value === null) return "null";
  }
  if (isString<T>()) return jsonString(changetype<string>(value));
  if (isBoolean<T>()) return value ? "true" : "false";
  if (isInteger<T>() || isFloat<T>()) return value.toString();
  return "(" + nameof<T>() + ")";
}
