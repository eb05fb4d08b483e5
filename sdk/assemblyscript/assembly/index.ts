// eventplug-sdk: write eventplug plugins in AssemblyScript.
//
// A plugin's entry file re-exports the ABI (`export * from "eventplug-sdk/assembly/exports"`), extends
// HandleEventBase and registers it (`registerHandler(new MyPlugin())`). See docs/plugin-guide.md.

export { ABI_VERSION } from "./abi";
export { alert, api, log, store } from "./effects";
export { Event, EventBlock, isIdentityKey } from "./event";
export { HandleEventBase, registerHandler } from "./handler";
export { parseJson } from "./json";
export { jsonString } from "./text";
export { JsonKind, JsonValue } from "./value";
export * from "./generated/views";
export { Alert } from "./generated/proto/eventplug/v1/Alert";
export { CreateLock } from "./generated/proto/eventplug/v1/CreateLock";
export { DeleteLock } from "./generated/proto/eventplug/v1/DeleteLock";
export { Edit } from "./generated/proto/eventplug/v1/Edit";
export { EditOp } from "./generated/proto/eventplug/v1/EditOp";
export { LockTarget } from "./generated/proto/eventplug/v1/LockTarget";
export { Severity } from "./generated/proto/eventplug/v1/Severity";
