// The ABI's exports (docs/abi.md, "Exports") on top of AssemblyScript's runtime. A plugin's entry file
// re-exports them: `export * from "eventplug-sdk/assembly/exports";`.
//
// Memory: `eventplug_alloc` allocates a fresh ArrayBuffer for each input and keeps it referenced until
// the next allocation (so the collector cannot free it while the host writes it); views of an event
// keep their buffer alive themselves. The last response stays referenced until the next call.

import { Protobuf } from "as-proto/assembly";
import { ABI_VERSION } from "./abi";
import { Event } from "./event";
import { eventTypeIndex, newEvent } from "./generated/event_types";
import { HandleEventResponse } from "./generated/proto/eventplug/v1/HandleEventResponse";
import { InitResponse } from "./generated/proto/eventplug/v1/InitResponse";
import { Verdict } from "./generated/proto/eventplug/v1/Verdict";
import { Decision, failureMessage, registeredHandler, runHandler, runInit } from "./handler";
import { JsonParser } from "./json";
import { decodeUtf8 } from "./text";
import { JsonValue } from "./value";
import { FieldReader, WIRE_LEN } from "./wire";

// Field numbers of HandleEventRequest and EventEnvelope (proto/eventplug/v1).
const REQUEST_EVENT: u32 = 1;
const ENVELOPE_TYPE: u32 = 1;
const ENVELOPE_UNSTRUCTURED: u32 = 5;

let input = new ArrayBuffer(0);
let lastResponse: Uint8Array | null = null;

/** The ABI version this module speaks. */
export function eventplug_abi_version(): i32 {
  return ABI_VERSION;
}

/** Returns `size` writable bytes for the host's next input. */
export function eventplug_alloc(size: i32): usize {
  input = new ArrayBuffer(max(size, 0));
  return changetype<usize>(input);
}

/** Receives the plugin's configuration (JSON text; empty when none is set) and hands it to the handler's `init`. */
export function eventplug_init(ptr: usize, len: i32): i64 {
  checkInput(ptr, len, "eventplug_init");
  const handler = registeredHandler();
  let config: JsonValue | null;
  const parser = new JsonParser();
  if (isBlank(ptr, len)) {
    config = parser.parse(String.UTF8.encode("{}"));
  } else {
    config = parser.parseAt(ptr, len);
  }
  if (config === null) return respond(Protobuf.encode(new InitResponse("the plugin's config is not valid JSON: " + parser.error), InitResponse.encode));
  const refusal = runInit(handler, config);
  if (refusal.length == 0) return 0;
  return respond(Protobuf.encode(new InitResponse(refusal), InitResponse.encode));
}

/** Handles one `HandleEventRequest`: builds the event's view, runs the handler, returns its decision. */
export function eventplug_handle_event(ptr: usize, len: i32): i64 {
  checkInput(ptr, len, "eventplug_handle_event");
  const handler = registeredHandler();
  const request = new FieldReader(ptr, ptr + <usize>len);
  if (!request.find(REQUEST_EVENT, WIRE_LEN)) return fail("the request holds no event");
  const envelopeStart = request.payloadStart;
  const envelopeEnd = request.payloadEnd;

  // The host writes the type first; the Struct is only located here, and read when a field is.
  const envelope = new FieldReader(envelopeStart, envelopeEnd);
  let type = "";
  let fieldsStart: usize = 0;
  let fieldsEnd: usize = 0;
  while (envelope.next()) {
    if (envelope.wire != WIRE_LEN) continue;
    if (envelope.number == ENVELOPE_TYPE) {
      type = decodeUtf8(envelope.payloadStart, <i32>(envelope.payloadEnd - envelope.payloadStart));
    } else if (envelope.number == ENVELOPE_UNSTRUCTURED) {
      fieldsStart = envelope.payloadStart;
      fieldsEnd = envelope.payloadEnd;
    }
  }
  if (envelope.malformed) return fail("the event envelope is not valid protobuf");

  const typeIndex = eventTypeIndex(type);
  const event = newEvent(typeIndex, type, <i32>(envelopeEnd - envelopeStart), JsonValue.ofStruct(input, fieldsStart, fieldsEnd));
  return respondTo(event, runHandler(handler, typeIndex, event));
}

function respondTo(event: Event, decision: Decision): i64 {
  if (decision == Decision.Skip) {
    return respond(Protobuf.encode(new HandleEventResponse(Verdict.VERDICT_SKIP), HandleEventResponse.encode));
  }
  if (decision == Decision.Fail) return fail(failureMessage());
  // Forward: an empty response means "unchanged".
  if (event.edits.length == 0) return 0;
  return respond(Protobuf.encode(new HandleEventResponse(Verdict.VERDICT_FORWARD, event.edits), HandleEventResponse.encode));
}

function fail(message: string): i64 {
  return respond(Protobuf.encode(new HandleEventResponse(Verdict.VERDICT_ERROR, [], message), HandleEventResponse.encode));
}

// Keeps `bytes` alive until the next call and returns its region: pointer high, length low.
function respond(bytes: Uint8Array): i64 {
  lastResponse = bytes;
  return (<i64>bytes.dataStart << 32) | <i64>bytes.byteLength;
}

function checkInput(ptr: usize, len: i32, entry: string): void {
  const start = changetype<usize>(input);
  if (ptr != start || len < 0 || len > input.byteLength) {
    throw new Error(entry + ": the input is not the buffer eventplug_alloc returned");
  }
}

function isBlank(ptr: usize, len: i32): bool {
  for (let i = 0; i < len; i++) {
    const c = load<u8>(ptr + <usize>i);
    if (c != 0x20 && c != 0x0a && c != 0x0d && c != 0x09) return false;
  }
  return true;
}
