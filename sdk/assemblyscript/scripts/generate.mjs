#!/usr/bin/env node
// Generates every generated part of the AssemblyScript SDK, from the repository's proto/ and from the
// Teleport reference tables in ../shared/reference (beside the repository root):
//
//   assembly/generated/proto/   protobuf classes for what a plugin sends (as-proto-gen via protoc)
//   assembly/generated/abi_version.ts the ABI version, from package.json's eventplug.abiVersion
//   assembly/generated/views.ts       typed views of the common events (teleport-common-events.md)
//   assembly/generated/event_types.ts event type dispatch for all types (teleport-event-types.tsv)
//   ../fixture-templates.json   one realistic event per typed view, for `eventplug fixtures`
//   ../prototype-fields.json    Go field paths of the 2022 prototype's fixtures to flat keys
//
// Run `npm run generate` in sdk/assemblyscript (after `npm ci`). The output depends only on the
// inputs: running it again changes nothing.

import { execFileSync } from "node:child_process";
import { createHash } from "node:crypto";
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, relative, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { OMIT, SAMPLE_TIME, SAMPLE_VALUES, SAMPLES_BY_TYPE } from "./fixture-samples.mjs";
import { BLOCK_NAMES, EVENT_FIELD_NAMES } from "./prototype-names.mjs";
import { readCommonEvents, readEventTypes } from "./reference.mjs";

const sdkDir = resolve(dirname(fileURLToPath(import.meta.url)), "..");
const repoRoot = resolve(sdkDir, "../..");
const referenceDir = resolve(repoRoot, "../shared/reference");
const generatedDir = join(sdkDir, "assembly/generated");

function fail(message) {
  console.error(`generate: ${message}`);
  process.exit(1);
}

function writeOutput(path, text) {
  mkdirSync(dirname(path), { recursive: true });
  writeFileSync(path, text);
  console.log(`generate: wrote ${relative(repoRoot, path)}`);
}

/** Doc comment text: one line, no comment terminators. */
function doc(text) {
  return text.replace(/\*\//g, "* /").replace(/\s+/g, " ").trim();
}

/** `user.login` → `userLogin`, `addr.remote` → `addrRemote`, `exitCode` stays. */
function camelCase(name) {
  const parts = name.split(/[._-]/).filter(Boolean);
  return parts.map((p, i) => (i === 0 ? p : p[0].toUpperCase() + p.slice(1))).join("");
}

// ---- protobuf classes -------------------------------------------------------------------------

/**
 * Files as-proto-gen writes for the request side, which the SDK reads with its own lazy reader
 * (assembly/value.ts) instead: decoding needs no classes, and as-proto-gen 1.3's google.protobuf.Value
 * encoder writes every member of the `kind` oneof, so that class must never be used.
 */
const READ_BY_HAND = [
  "eventplug/v1/HandleEventRequest.ts",
  "eventplug/v1/EventEnvelope.ts",
  "google/protobuf/Struct.ts",
  "google/protobuf/Value.ts",
  "google/protobuf/ListValue.ts",
  "google/protobuf/NullValue.ts",
];

function listFiles(dir) {
  return readdirSync(dir)
    .flatMap((name) => {
      const path = join(dir, name);
      return statSync(path).isDirectory() ? listFiles(path) : [path];
    })
    .sort();
}

function generateProtobufClasses() {
  const plugin = join(sdkDir, "node_modules/.bin/as-proto-gen");
  if (!existsSync(plugin)) fail(`${plugin} is missing: run \`npm ci\` in sdk/assemblyscript first`);
  const wellKnown = process.env.PROTOBUF_INCLUDE || "/usr/include";
  if (!existsSync(join(wellKnown, "google/protobuf/timestamp.proto"))) {
    fail(`the protobuf well-known types are not in ${wellKnown}: install libprotobuf-dev, or set PROTOBUF_INCLUDE`);
  }
  const out = mkdtempSync(join(tmpdir(), "eventplug-as-proto-"));
  try {
    execFileSync(
      "protoc",
      [
        `--plugin=protoc-gen-as=${plugin}`,
        `--as_out=${out}`,
        `-I${join(repoRoot, "proto")}`,
        `-I${wellKnown}`,
        "eventplug/v1/plugin.proto",
        "eventplug/v1/effects.proto",
      ],
      { stdio: ["ignore", "inherit", "inherit"] },
    );
    const target = join(generatedDir, "proto");
    rmSync(target, { recursive: true, force: true });
    const kept = listFiles(out)
      .map((path) => relative(out, path))
      .filter((path) => !READ_BY_HAND.includes(path));
    for (const path of kept) {
      const text = readFileSync(join(out, path), "utf8");
      for (const [, imported] of text.matchAll(/from "(\.[^"]+)"/g)) {
        const target = relative(out, resolve(dirname(join(out, path)), imported)) + ".ts";
        if (READ_BY_HAND.includes(target)) fail(`${path} imports ${target}, which is not kept`);
      }
      writeOutput(join(target, path), text);
    }
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

// ---- ABI version ---------------------------------------------------------------------------------

/** The ABI version constant, from package.json's `eventplug.abiVersion` (one source for both). */
function generateAbiVersion() {
  const pkg = JSON.parse(readFileSync(join(sdkDir, "package.json"), "utf8"));
  const version = pkg.eventplug && pkg.eventplug.abiVersion;
  if (!Number.isInteger(version) || version < 1) fail(`package.json: eventplug.abiVersion must be a positive integer`);
  const lines = [HEADER("package.json (eventplug.abiVersion)")];
  lines.push(`/** The plugin ABI version this SDK speaks; \`eventplug_abi_version\` returns it (docs/abi.md). */`);
  lines.push(`export const ABI_VERSION: i32 = ${version};`);
  writeOutput(join(generatedDir, "abi_version.ts"), lines.join("\n") + "\n");
}

// ---- typed views and dispatch -----------------------------------------------------------------

/** Members of the SDK's Event class; a view property may not take one of these names. */
const EVENT_MEMBERS = new Set([
  "type", "byteLength", "edits", "root", "has", "get", "getAt", "getString", "getNumber", "getBool",
  "getStringArray", "keys", "setString", "setNumber", "setBool", "setNull", "setStringArray", "setJson",
  "setJsonAt", "remove", "removeAt", "modified", "toJson", "record", "constructor",
]);

/** Members of HandleEventBase and TypedHandlers; an event type's method may not take one of these names. */
const HANDLER_MEMBERS = new Set(["any", "init", "skip", "error", "rejectConfig", "dispatchType", "constructor"]);

/** How a JSON type of teleport-common-events.md reads and writes in AssemblyScript. */
function accessorFor(jsonType, where) {
  switch (jsonType) {
    case "string":
    case "timestamp string":
      return { type: "string", get: (k) => `this.getString(${k})`, set: (k) => `this.setString(${k}, value)` };
    case "bool":
      return { type: "bool", get: (k) => `this.getBool(${k})`, set: (k) => `this.setBool(${k}, value)` };
    case "number":
      return { type: "f64", get: (k) => `this.getNumber(${k})`, set: (k) => `this.setNumber(${k}, value)` };
    case "number (enum)":
      return { type: "i32", get: (k) => `<i32>this.getNumber(${k})`, set: (k) => `this.setNumber(${k}, <f64>value)` };
    case "array of strings":
      return { type: "string[]", get: (k) => `this.getStringArray(${k})`, set: (k) => `this.setStringArray(${k}, value)` };
    case "object":
    case "object (string -> string)":
    case "object (string -> array of strings)":
    case "array of objects":
      return { type: "JsonValue | null", get: (k) => `this.get(${k})`, set: null };
    default:
      fail(`${where}: no accessor for the JSON type ${JSON.stringify(jsonType)}`);
  }
}

const HEADER = (sources) =>
  `// Code generated by sdk/assemblyscript/scripts/generate.mjs from ${sources}. DO NOT EDIT.\n`;

function generateViews(sections, typesByName) {
  const lines = [HEADER("teleport-common-events.md and teleport-event-types.tsv")];
  lines.push(`import { Event } from "../event";`);
  lines.push(`import { JsonValue } from "../value";`);
  const viewOf = new Map(); // event type → {name: its message's view type, className: the class}
  for (const section of sections) {
    const where = `teleport-common-events.md (${section.types.join(", ")})`;
    const className = section.messages[0];
    for (const type of section.types) {
      const row = typesByName.get(type);
      if (!row) fail(`${where}: ${type} is not in teleport-event-types.tsv`);
      if (!section.messages.includes(row.message)) {
        fail(`${where}: teleport-event-types.tsv names ${row.message} for ${type}, not one of ${section.messages.join(", ")}`);
      }
      viewOf.set(type, { name: row.message, className });
    }
    const typeList = section.types.map((t) => "`" + t + "`").join(", ");
    lines.push("");
    lines.push("/**");
    lines.push(` * ${doc(`Typed view of ${typeList} (Teleport's ${section.messages.join(" / ")}).`)}`);
    if (section.notes) lines.push(` * ${doc(section.notes)}`);
    lines.push(" *");
    lines.push(" * Getters read the event as it arrived (absent keys read as empty); setters record edits.");
    lines.push(" */");
    lines.push(`export class ${className} extends Event {`);
    const names = new Set();
    let first = true;
    for (const field of section.keys) {
      if (field.key === "event") continue; // the type: Event.type
      const name = camelCase(field.key);
      if (EVENT_MEMBERS.has(name)) fail(`${where}: the key ${field.key} would hide Event.${name}`);
      if (names.has(name)) fail(`${where}: two keys make the property ${name}`);
      names.add(name);
      const accessor = accessorFor(field.jsonType, `${where}, key ${field.key}`);
      const key = JSON.stringify(field.key);
      if (!first) lines.push("");
      first = false;
      lines.push(`  /** ${doc(`${field.meaning}. JSON key \`${field.key}\` (${field.jsonType}), present ${field.present}.`)} */`);
      lines.push(`  get ${name}(): ${accessor.type} {`);
      lines.push(`    return ${accessor.get(key)};`);
      lines.push("  }");
      if (accessor.set) {
        lines.push("");
        lines.push(`  set ${name}(value: ${accessor.type}) {`);
        lines.push(`    ${accessor.set(key)};`);
        lines.push("  }");
      }
    }
    lines.push("}");
    for (const alias of section.messages.slice(1)) {
      lines.push("");
      lines.push(`/** ${doc(`Teleport's ${alias}: the same keys as ${className}.`)} */`);
      lines.push(`export type ${alias} = ${className};`);
    }
  }
  writeOutput(join(generatedDir, "views.ts"), lines.join("\n") + "\n");
  return viewOf;
}

function generateEventTypes(types, viewOf) {
  const methods = new Set();
  const entries = types.map((row, index) => {
    const method = camelCase(row.type);
    if (HANDLER_MEMBERS.has(method)) fail(`event type ${row.type} would hide HandleEventBase.${method}`);
    if (methods.has(method)) fail(`two event types make the method ${method}`);
    methods.add(method);
    const view = viewOf.get(row.type);
    return { ...row, index, method, view: view ? view.name : null, viewClass: view ? view.className : null };
  });
  const viewNames = [...new Set(entries.filter((e) => e.view).flatMap((e) => [e.view, e.viewClass]))].sort();

  const lines = [HEADER("teleport-event-types.tsv")];
  lines.push(`import { Event } from "../event";`);
  lines.push(`import { JsonValue } from "../value";`);
  lines.push(`import {`);
  for (const name of viewNames) lines.push(`  ${name},`);
  lines.push(`} from "./views";`);
  lines.push("");
  lines.push(`/** The index of \`type\` among the known event types (teleport-event-types.tsv order), or -1. */`);
  lines.push(`export function eventTypeIndex(type: string): i32 {`);
  lines.push(`  switch (type.length) {`);
  const byLength = new Map();
  for (const e of entries) {
    if (!byLength.has(e.type.length)) byLength.set(e.type.length, []);
    byLength.get(e.type.length).push(e);
  }
  for (const length of [...byLength.keys()].sort((a, b) => a - b)) {
    lines.push(`    case ${length}:`);
    for (const e of byLength.get(length)) lines.push(`      if (type == ${JSON.stringify(e.type)}) return ${e.index};`);
    lines.push(`      break;`);
  }
  lines.push(`  }`);
  lines.push(`  return -1;`);
  lines.push(`}`);
  lines.push("");
  lines.push(`/** The event as its typed view when its type has one, else as a plain Event. */`);
  lines.push(`export function newEvent(typeIndex: i32, type: string, byteLength: i32, root: JsonValue): Event {`);
  lines.push(`  switch (typeIndex) {`);
  for (const e of entries.filter((e) => e.view)) {
    lines.push(`    case ${e.index}: // ${e.type}`);
    lines.push(`      return new ${e.viewClass}(type, byteLength, root);`);
  }
  lines.push(`  }`);
  lines.push(`  return new Event(type, byteLength, root);`);
  lines.push(`}`);
  lines.push("");
  lines.push(`/**`);
  lines.push(` * One method per Teleport event type, called with the event when its type matches. Override the`);
  lines.push(` * ones a plugin handles; the others do nothing. Types that have a typed view get it.`);
  lines.push(` */`);
  lines.push(`export class TypedHandlers {`);
  for (const e of entries) {
    const codes = e.codes.length ? ` (${e.codes.join(", ")})` : "";
    const description = e.description ? `: ${e.description.replace(/^\[docs-only\]\s*/, "")}` : "";
    lines.push(`  /** ${doc(`\`${e.type}\`${codes}${description}.`)} */`);
    lines.push(`  ${e.method}(event: ${e.view || "Event"}): void {}`);
    lines.push("");
  }
  lines.push(`  /** Calls the method of the event's type (\`typeIndex\` from eventTypeIndex); nothing for unknown types. */`);
  lines.push(`  dispatchType(typeIndex: i32, event: Event): void {`);
  lines.push(`    switch (typeIndex) {`);
  for (const e of entries) {
    lines.push(`      case ${e.index}:`);
    lines.push(e.view ? `        this.${e.method}(changetype<${e.view}>(event));` : `        this.${e.method}(event);`);
    lines.push(`        break;`);
  }
  lines.push(`    }`);
  lines.push(`  }`);
  lines.push(`}`);
  writeOutput(join(generatedDir, "event_types.ts"), lines.join("\n") + "\n");
}

// ---- fixture templates --------------------------------------------------------------------------

/** A stable UUID-shaped id per type (the CLI writes a fresh one into each fixture). */
function placeholderUid(type) {
  const hex = createHash("sha1").update(`eventplug fixture ${type}`).digest("hex");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-4${hex.slice(13, 16)}-a${hex.slice(17, 20)}-${hex.slice(20, 32)}`;
}

function emptyValue(jsonType) {
  if (jsonType === "string") return "";
  if (jsonType === "timestamp string") return "0001-01-01T00:00:00Z";
  if (jsonType === "bool") return false;
  if (jsonType.startsWith("number")) return 0;
  return null; // arrays and objects: Go writes a nil slice or map as null
}

function generateFixtureTemplates(sections, typesByName) {
  const templates = [];
  const names = new Set();
  for (const section of sections) {
    for (const type of section.types) {
      const row = typesByName.get(type);
      const where = `fixture template for ${type}`;
      const byType = SAMPLES_BY_TYPE[type] || {};
      const keys = new Set(section.keys.map((f) => f.key));
      for (const key of Object.keys(byType)) {
        if (!keys.has(key)) fail(`${where}: fixture-samples.mjs sets ${key}, which ${type} does not have`);
      }
      const code = row.codes[0];
      if (!code) fail(`${where}: teleport-event-types.tsv lists no code`);
      const event = {};
      for (const field of section.keys) {
        const key = field.key;
        let value;
        if (key === "event") value = type;
        else if (key === "code") value = code;
        else if (key === "uid") value = placeholderUid(type);
        else if (key === "time") value = SAMPLE_TIME;
        else if (key === "ei") value = key in byType ? byType[key] : 0;
        else if (key in byType) value = byType[key];
        else if (key in SAMPLE_VALUES) value = SAMPLE_VALUES[key];
        else if (field.present.startsWith("always")) value = emptyValue(field.jsonType);
        else continue;
        if (value === OMIT) continue;
        event[key] = value;
      }
      const name = type.replace(/[._]/g, "-");
      if (names.has(name)) fail(`${where}: two templates are named ${name}`);
      names.add(name);
      templates.push({ name, type, code, description: row.description, event });
    }
  }
  writeOutput(join(sdkDir, "../fixture-templates.json"), JSON.stringify(templates, null, 2) + "\n");
}

// ---- prototype field table ----------------------------------------------------------------------

const PROTOTYPE_ABOUT = [
  "Converts a fixture in the 2022 prototype's wrapper format {name, type, description, data} into the flat event JSON that event-handler posts.",
  "`data` is protobuf JSON of a typed Teleport event with Go field names: the event itself ({\"Metadata\": {\"Type\": \"user.login\", ...}, \"User\": {...}}), or the event wrapped in its message name ({\"UserLogin\": {...}}, the prototype's types.OneOf; events[type].message names it). Unwrap when `data` has no Metadata and a single member.",
  "The event type is data.Metadata.Type. events[type].fields maps Go field paths (Go names joined with '.', from the top of the event) to JSON keys:",
  "  a path to an embedded block maps to \"\" (its members are lifted into the enclosing object: \"User\": \"\", \"User.Login\": \"login\");",
  "  any other path maps to the key its value takes in the enclosing object (\"MFADevice\": \"mfa_device\", \"MFADevice.DeviceName\": \"mfa_device_name\").",
  "An object is converted member by member when the table has paths below it; otherwise (labels, traits, attributes) it is copied as is. Go fields with no path are not part of the flat event.",
  "Protobuf JSON writes 64-bit integers as strings (\"Index\": \"1\"): keys listed in events[type].numbers take JSON numbers. Keys are listed for the typed-view events of the SDK only.",
  "Blocks appear under their field name in the message (User, Connection, Kubernetes in kube.request) and under their Go type name (UserMetadata, ConnectionMetadata); both are listed.",
];

function generatePrototypeFields(sections, typesByName) {
  const events = {};
  for (const section of sections) {
    const where = `prototype fields of ${section.types.join(", ")}`;
    const keys = new Set(section.keys.map((f) => f.key));
    const fields = {};
    const covered = new Set();
    const add = (path, key) => {
      fields[path] = key;
      if (key !== "") covered.add(key);
    };
    for (const heading of section.blockHeadings) {
      const block = BLOCK_NAMES[heading];
      if (!block) fail(`${where}: prototype-names.mjs has no block ${heading}`);
      for (const alias of block.embeddedAs) {
        add(alias, "");
        for (const [goName, key] of Object.entries(block.fields)) if (keys.has(key)) add(`${alias}.${goName}`, key);
      }
    }
    const own = EVENT_FIELD_NAMES[section.messages[0]];
    if (!own) fail(`${where}: prototype-names.mjs has no fields for ${section.messages[0]}`);
    for (const [goName, spec] of Object.entries(own)) {
      if (typeof spec === "string") {
        if (!keys.has(spec)) fail(`${where}: ${goName} maps to ${spec}, which the event does not have`);
        add(goName, spec);
        continue;
      }
      if (spec.key !== "" && !keys.has(spec.key)) fail(`${where}: ${goName} maps to ${spec.key}, which the event does not have`);
      fields[goName] = spec.key;
      if (spec.key !== "") covered.add(spec.key);
      for (const [inner, key] of Object.entries(spec.fields)) {
        if (spec.key === "") add(`${goName}.${inner}`, key);
        else fields[`${goName}.${inner}`] = key;
      }
    }
    const missing = [...keys].filter((k) => !covered.has(k));
    if (missing.length) fail(`${where}: no Go field path for ${missing.join(", ")}`);
    const numbers = section.keys.filter((f) => f.jsonType.startsWith("number")).map((f) => f.key);
    for (const type of section.types) {
      events[type] = { message: typesByName.get(type).message, numbers, fields };
    }
  }
  const table = { about: PROTOTYPE_ABOUT, events };
  writeOutput(join(sdkDir, "../prototype-fields.json"), JSON.stringify(table, null, 2) + "\n");
}

// ---- main -----------------------------------------------------------------------------------------

const typesPath = join(referenceDir, "teleport-event-types.tsv");
const commonPath = join(referenceDir, "teleport-common-events.md");
for (const path of [typesPath, commonPath]) {
  if (!existsSync(path)) fail(`${path} is missing: the shared reference folder sits beside the repository (../shared)`);
}
const types = readEventTypes(typesPath);
const typesByName = new Map(types.map((row) => [row.type, row]));
const { events: sections } = readCommonEvents(commonPath);

generateProtobufClasses();
generateAbiVersion();
const viewOf = generateViews(sections, typesByName);
generateEventTypes(types, viewOf);
generateFixtureTemplates(sections, typesByName);
generatePrototypeFields(sections, typesByName);
