// HandleEventBase: what a plugin extends. The SDK calls it for each event and turns what it decided
// into the response the host expects.

import { Event } from "./event";
import { TypedHandlers } from "./generated/event_types";
import { JsonValue } from "./value";

/** What a plugin decided about the event of the current call. */
export enum Decision {
  /** Forward the event (with its edits, if any). */
  Forward,
  /** Drop the event. */
  Skip,
  /** Fail the event. */
  Fail,
}

// The current call's decision. An instance runs one call at a time, so module state is the call's state.
let decision = Decision.Forward;
let failure = "";
let configRefusal = "";
let registered: HandleEventBase | null = null;

/**
 * The base class of a plugin. Extend it, override `any` and the methods of the event types the plugin
 * handles (`user.login` → `userLogin(event: UserLogin)`; every Teleport event type has one), and
 * register one instance with {@link registerHandler} at the top level of the plugin's entry file.
 *
 * For each event the SDK calls `any(event)`, then, unless `any` skipped or failed it, the method of the
 * event's type. An event the plugin neither edits, skips nor fails is forwarded exactly as it arrived.
 * The same instance handles every event of a plugin instance, so its fields can cache (parsed config,
 * lookups); state that must be shared or must survive belongs in the token store.
 */
export class HandleEventBase extends TypedHandlers {
  /**
   * Receives the plugin's configuration once per instance, before any event: the JSON from the plugin's
   * settings (`--plugin-config` for `eventplug run` / `eventplug test`), or an empty object when none is
   * set. Call {@link rejectConfig} to refuse it.
   */
  init(config: JsonValue): void {}

  /** Called for every event, before the method of its type. */
  any(event: Event): void {}

  /** Drops the event: it is acknowledged and not forwarded; its edits are discarded. */
  skip(): void {
    decision = Decision.Skip;
  }

  /**
   * Fails the event with `message`: the plugin's failure policy decides what happens to it
   * (`FailOpen`: it goes on as it entered this plugin; `FailClosed`: it fails). Its edits and effects
   * are discarded. It returns, unlike a thrown error: the method goes on, and the last `skip` or
   * `fail` of the call decides.
   */
  fail(message: string): void {
    decision = Decision.Fail;
    failure = message;
  }

  /** An alias of {@link fail}, kept for plugins written before it had that name. */
  error(message: string): void {
    this.fail(message);
  }

  /** From `init`: refuses the configuration; the plugin does not load, and `message` is shown to the user. */
  rejectConfig(message: string): void {
    configRefusal = message;
  }
}

/** Makes `handler` the plugin's handler. Call it once, at the top level of the plugin's entry file. */
export function registerHandler(handler: HandleEventBase): void {
  registered = handler;
}

/** The registered handler; aborts with a clear message when the plugin registered none. */
export function registeredHandler(): HandleEventBase {
  const handler = registered;
  if (handler === null) {
    throw new Error("no handler is registered: call registerHandler(new YourHandler()) at the top level of the plugin's entry file");
  }
  return handler;
}

/** Runs `handler` on one event: `any`, then the method of its type; returns the decision. */
export function runHandler(handler: HandleEventBase, typeIndex: i32, event: Event): Decision {
  decision = Decision.Forward;
  failure = "";
  handler.any(event);
  if (decision == Decision.Forward) handler.dispatchType(typeIndex, event);
  return decision;
}

/** The message of the last `fail()` call. */
export function failureMessage(): string {
  return failure;
}

/** Runs `init` with `config`; returns the refusal message, empty when the configuration is accepted. */
export function runInit(handler: HandleEventBase, config: JsonValue): string {
  configRefusal = "";
  handler.init(config);
  return configRefusal;
}
