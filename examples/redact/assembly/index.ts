// redact: masks the configured fields in every event type, wherever they occur.
//
// Config: {"fields": ["addr.remote", "user_agent", ["mfa_device", "mfa_device_uuid"]], "mask": "[REDACTED]"}
//   fields  top-level keys (taken whole: `addr.remote` is one key), or paths into nested objects and
//           arrays as arrays of keys; default ["addr.remote", "user_agent"]
//   mask    the text that replaces a present value; default "[REDACTED]"
// Absent fields stay absent; everything else keeps its exact bytes. The keys that identify an event
// (`uid`, `time`, …: see isIdentityKey) cannot be edited, so a config that names them is refused.

import { Event, HandleEventBase, isIdentityKey, JsonValue, jsonString, registerHandler } from "eventplug-sdk/assembly";

export * from "eventplug-sdk/assembly/exports";

const DEFAULT_FIELDS = ["addr.remote", "user_agent"];
const DEFAULT_MASK = "[REDACTED]";

class Redact extends HandleEventBase {
  paths: string[][] = [];
  maskJson: string = jsonString(DEFAULT_MASK);

  init(config: JsonValue): void {
    this.paths = [];
    const fields = config.get("fields");
    if (fields === null) {
      for (let i = 0; i < DEFAULT_FIELDS.length; i++) this.paths.push([DEFAULT_FIELDS[i]]);
    } else if (!fields.isArray) {
      this.rejectConfig('redact: "fields" must be an array of keys or of key paths');
      return;
    } else {
      for (let i = 0; i < fields.length; i++) {
        const field = fields.at(i)!;
        const path = field.isString ? [field.asString()] : field.asStringArray();
        if (path.length == 0 || (field.isArray && path.length != field.length)) {
          this.rejectConfig('redact: entry ' + i.toString() + ' of "fields" is not a key or an array of keys: ' + field.toJson());
          return;
        }
        if (isIdentityKey(path[0])) {
          this.rejectConfig('redact: entry ' + i.toString() + ' of "fields" is under ' + jsonString(path[0]) + ', which identifies the event and cannot be redacted');
          return;
        }
        this.paths.push(path);
      }
    }
    const mask = config.get("mask");
    if (mask !== null && !mask.isString) {
      this.rejectConfig('redact: "mask" must be a string');
      return;
    }
    this.maskJson = jsonString(mask === null ? DEFAULT_MASK : mask.asString());
  }

  any(event: Event): void {
    for (let i = 0; i < this.paths.length; i++) {
      const path = this.paths[i];
      if (event.getAt(path) !== null) event.setJsonAt(path, this.maskJson);
    }
  }
}

registerHandler(new Redact());
