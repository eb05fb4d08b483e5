#!/usr/bin/env node
// Generates every generated part of the AssemblyScript SDK, from the repository's proto/ and from the
// Teleport reference tables in reference/ (teleport-event-types.tsv, teleport-common-events.md):
//
//   assembly/generated/proto/   protobuf classes for what a plugin sends (as-proto-gen via protoc)
//   assembly/generated/abi_version.ts the ABI version, from package.json's eventplug.abiVersion
//   assembly/generated/views.ts       typed views of the common events and their metadata blocks
//   assembly/generated/event_types.ts event type dispatch for all types (teleport-event-types.tsv)
//   ../fixture-templates.json   one realistic event per typed view, for `eventplug fixtures`
//   ../prototype-fields.json    Go field paths of the 2022 prototype's fixtures to flat keys
//
// Run `npm run generate` in sdk/assemblyscript (after `npm ci`). The output depends only on the
// inputs: running it again changes nothing. `npm run generate:check` (`--check`) writes nothing and
// fails, naming them, when the files on disk are not what the generator makes.

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
const referenceDir = join(sdkDir, "reference");
const generatedDir = join(sdkDir, "assembly/generated");
const checkOnly = process.argv.includes("--check");

function fail(message) {
  console.error(`generate: ${message}`);
  process.exit(1);
}

/** What the generator makes: absolute path → text. Written (or checked) once everything is made. */
const outputs = new Map();

function addOutput(path, text) {
  if (outputs.has(path)) fail(`${relative(repoRoot, path)} is made twice`);
  outputs.set(path, text);
}

/** Replaces assembly/generated/ and writes the other outputs. */
function writeOutputs() {
  rmSync(generatedDir, { recursive: true, force: true });
  for (const [path, text] of outputs) {
    mkdirSync(dirname(path), { recursive: true });
    writeFileSync(path, text);
    console.log(`generate: wrote ${relative(repoRoot, path)}`);
  }
}

/** Fails, naming them, when outputs differ from the files on disk or assembly/generated/ holds others. */
function checkOutputs() {
  const stale = [];
  for (const [path, text] of outputs) {
    if (!existsSync(path)) stale.push(`${relative(repoRoot, path)} is missing`);
    else if (readFileSync(path, "utf8") !== text) stale.push(`${relative(repoRoot, path)} differs`);
  }
  for (const path of existsSync(generatedDir) ? listFiles(generatedDir) : []) {
    if (!outputs.has(path)) stale.push(`${relative(repoRoot, path)} is not generated any more`);
  }
  if (stale.length) {
    fail(`the generated files are stale; run \`npm run generate\` in sdk/assemblyscript and commit the result:\n  ${stale.join("\n  ")}`);
  }
  console.log(`generate: the ${outputs.size} generated files are up to date`);
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

/** Fails, saying what to install, when protoc cannot run. */
function requireProtoc() {
  try {
    execFileSync("protoc", ["--version"], { stdio: "ignore" });
  } catch (error) {
    fail(
      error.code === "ENOENT"
        ? "protoc is not installed: install Debian's protobuf-compiler (bash scripts/setup.sh does)"
        : `protoc --version failed: ${error.message}`,
    );
  }
}

function generateProtobufClasses() {
  const plugin = join(sdkDir, "node_modules/.bin/as-proto-gen");
  if (!existsSync(plugin)) fail(`${plugin} is missing: run \`npm ci\` in sdk/assemblyscript first`);
  const wellKnown = process.env.PROTOBUF_INCLUDE || "/usr/include";
  if (!existsSync(join(wellKnown, "google/protobuf/timestamp.proto"))) {
    fail(`the protobuf well-known types are not in ${wellKnown}: install libprotobuf-dev, or set PROTOBUF_INCLUDE`);
  }
  requireProtoc();
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
    const kept = listFiles(out)
      .map((path) => relative(out, path))
      .filter((path) => !READ_BY_HAND.includes(path));
    for (const path of kept) {
      const text = readFileSync(join(out, path), "utf8");
      for (const [, imported] of text.matchAll(/from "(\.[^"]+)"/g)) {
        const target = relative(out, resolve(dirname(join(out, path)), imported)) + ".ts";
        if (READ_BY_HAND.includes(target)) fail(`${path} imports ${target}, which is not kept`);
      }
      addOutput(join(target, path), text);
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
  addOutput(join(generatedDir, "abi_version.ts"), lines.join("\n") + "\n");
}

// ---- typed views and dispatch -----------------------------------------------------------------

/** Members of the SDK's Event class, private ones too; a property of a view may not take one of these names. */
const EVENT_MEMBERS = new Set([
  "type", "byteLength", "edits", "root", "replaced", "added", "has", "get", "getAt", "getString", "getNumber",
  "getBool", "getStringArray", "keys", "setString", "setNumber", "setBool", "setNull", "setStringArray",
  "setJson", "setJsonAt", "remove", "removeAt", "modified", "toJson", "set", "unset", "put", "isRemoved",
  "constructor",
]);

/** Members of the SDK's EventBlock class; a property of a block may not take one of these names. */
const BLOCK_MEMBERS = new Set(["event", "constructor"]);

/** Members of HandleEventBase and TypedHandlers; an event type's method may not take one of these names. */
const HANDLER_MEMBERS = new Set(["any", "init", "skip", "fail", "error", "rejectConfig", "dispatchType", "constructor"]);

/**
 * How the views show Teleport's shared metadata blocks (the headings of teleport-common-events.md).
 * Every event has Metadata, and most say who acted (UserMetadata): those two are a chain of base
 * classes (Event → AuditEvent → UserEvent) whose properties are the view's own. Each other block is
 * a class of its own that a view returns from a property named as Teleport's events name the field
 * that embeds it (`event.server.serverHostname`, `event.status.success`).
 */
const BLOCKS = {
  Metadata: { baseClass: "AuditEvent", about: "the index, type, id, code, time and cluster that every audit event has" },
  UserMetadata: { baseClass: "UserEvent", about: "who acted" },
  SessionMetadata: { property: "session", about: "the session the event belongs to" },
  ServerMetadata: { property: "server", about: "the server (node or agent) it happened on" },
  ConnectionMetadata: { property: "connection", about: "the addresses and protocol of the network connection" },
  Status: { property: "status", about: "whether the operation succeeded, and why not" },
  ClientMetadata: { property: "client", about: "the client program" },
  KubernetesClusterMetadata: { property: "kubernetesCluster", about: "the Kubernetes cluster, and the users and groups used in it" },
  KubernetesPodMetadata: { property: "kubernetesPod", about: "the Kubernetes pod and container" },
  ResourceMetadata: { property: "resource", about: "the resource created, changed or removed" },
  CommandMetadata: { property: "command", about: "the command run, and how it exited" },
  AppMetadata: { property: "app", about: "the application accessed" },
  DatabaseMetadata: { property: "database", about: "the database accessed" },
  MFADeviceMetadata: { property: "device", about: "the MFA device" },
};

/** The base-class blocks, outermost first: a view extends the class of the last one it has. */
const BASE_BLOCKS = Object.keys(BLOCKS).filter((heading) => BLOCKS[heading].baseClass);

/** The keys Event refuses to edit (`IDENTITY_KEYS` in assembly/event.ts): their properties have no setter. */
function readIdentityKeys() {
  const path = join(sdkDir, "assembly/event.ts");
  const match = readFileSync(path, "utf8").match(/^const IDENTITY_KEYS: string\[\] = (\[[^\]]*\]);$/m);
  if (!match) fail(`${relative(repoRoot, path)}: found no line \`const IDENTITY_KEYS: string[] = [...];\` to read the identity keys from`);
  return new Set(JSON.parse(match[1]));
}

/** How a JSON type of teleport-common-events.md reads and writes in AssemblyScript, on the event `on`. */
function accessorFor(jsonType, on, where) {
  switch (jsonType) {
    case "string":
    case "timestamp string":
      return { type: "string", get: (k) => `${on}.getString(${k})`, set: (k) => `${on}.setString(${k}, value)` };
    case "bool":
      return { type: "bool", get: (k) => `${on}.getBool(${k})`, set: (k) => `${on}.setBool(${k}, value)` };
    case "number":
      return { type: "f64", get: (k) => `${on}.getNumber(${k})`, set: (k) => `${on}.setNumber(${k}, value)` };
    case "number (enum)":
      return { type: "i32", get: (k) => `<i32>${on}.getNumber(${k})`, set: (k) => `${on}.setNumber(${k}, <f64>value)` };
    case "array of strings":
      return { type: "string[]", get: (k) => `${on}.getStringArray(${k})`, set: (k) => `${on}.setStringArray(${k}, value)` };
    case "object":
    case "object (string -> string)":
    case "object (string -> array of strings)":
    case "array of objects":
      return { type: "JsonValue | null", get: (k) => `${on}.get(${k})`, set: null };
    default:
      fail(`${where}: no accessor for the JSON type ${JSON.stringify(jsonType)}`);
  }
}

const HEADER = (sources) =>
  `// Code generated by sdk/assemblyscript/scripts/generate.mjs from ${sources}. DO NOT EDIT.\n`;

/**
 * Writes one class of views.ts: `docLines` are its doc comment's lines (each made one line by doc()),
 * `members` are [{name, lines}] (the lines of one property, without indentation); `taken` holds the
 * names it may not use, and takes its own.
 */
function classLines(docLines, declaration, members, taken, where) {
  const lines = ["", "/**", ...docLines.map((line) => ` * ${doc(line)}`), " */", `export class ${declaration} {`];
  members.forEach((member, index) => {
    if (taken.has(member.name)) fail(`${where}: the property ${member.name} is taken (by the base class or another key)`);
    taken.add(member.name);
    if (index > 0) lines.push("");
    lines.push(...member.lines.map((line) => (line ? `  ${line}` : "")));
  });
  lines.push("}");
  return lines;
}

/** The getter (and setter, unless read-only or an object) of one key, read on the event `on`. */
function fieldMember(field, on, identityKeys, where) {
  const name = camelCase(field.key);
  const accessor = accessorFor(field.jsonType, on, `${where}, key ${field.key}`);
  const key = JSON.stringify(field.key);
  const readOnly = identityKeys.has(field.key);
  const about = `${field.meaning}. JSON key \`${field.key}\` (${field.jsonType}), present ${field.present}.`;
  const lines = [`/** ${doc(readOnly ? `${about} Read-only: it identifies the event.` : about)} */`];
  lines.push(`get ${name}(): ${accessor.type} {`, `  return ${accessor.get(key)};`, "}");
  if (accessor.set && !readOnly) lines.push("", `set ${name}(value: ${accessor.type}) {`, `  ${accessor.set(key)};`, "}");
  return { name, lines };
}

function keyList(fields) {
  return fields.map((f) => "`" + f.key + "`").join(", ");
}

function generateViews(blocks, sections, typesByName) {
  const identityKeys = readIdentityKeys();
  const lines = [HEADER("teleport-common-events.md and teleport-event-types.tsv")];
  lines.push(`import { Event, EventBlock } from "../event";`);
  lines.push(`import { JsonValue } from "../value";`);

  // A block's keys, but for unverified ones and `event` (the type: Event.type).
  const blockFields = (heading) => Object.values(blocks[heading]).filter((f) => !f.key.includes("?") && f.key !== "event");
  const usedBy = new Map(); // block heading → the view classes that have it
  for (const section of sections) {
    for (const heading of section.blockHeadings) {
      if (!BLOCKS[heading]) fail(`teleport-common-events.md: the block ${heading} has no entry in BLOCKS (generate.mjs)`);
      if (!usedBy.has(heading)) usedBy.set(heading, []);
      usedBy.get(heading).push(section.messages[0]);
    }
  }

  // The chain of base classes, and the names each one's subclasses may not use.
  lines.push("", "// ---- base classes: the blocks every view (Metadata) or most views (UserMetadata) have ----------");
  const takenBelow = new Map(); // base class → names its subclasses may not take
  let parent = "Event";
  let taken = new Set(EVENT_MEMBERS);
  for (const heading of BASE_BLOCKS) {
    const { baseClass, about } = BLOCKS[heading];
    const fields = blockFields(heading);
    const docLines = [
      `Teleport's ${heading}: ${about} (${keyList(fields)}).`,
      parent === "Event"
        ? "The base class of the typed views. A property is its JSON key in camelCase (`cluster_name` → `clusterName`); it reads the event with this call's edits applied (an absent key reads as empty: `\"\"`, `0`, `false`, `[]`, null), and its setter edits it. The keys that identify the event have no setter."
        : `The base class of the views of the events that have ${heading}; it extends ${parent}.`,
    ];
    const where = `the ${heading} block`;
    taken = new Set(taken);
    lines.push(...classLines(docLines, `${baseClass} extends ${parent}`, fields.map((f) => fieldMember(f, "this", identityKeys, where)), taken, where));
    takenBelow.set(baseClass, taken);
    parent = baseClass;
  }

  // The other blocks, each a class that the views return from a property.
  lines.push("", "// ---- blocks: the shared metadata blocks a view returns from a property ----------------------------");
  for (const [heading, { property, about }] of Object.entries(BLOCKS)) {
    if (!property || !usedBy.has(heading)) continue;
    const fields = blockFields(heading);
    const docLines = [`Teleport's ${heading}: ${about} (${keyList(fields)}).`, `\`event.${property}\` of ${usedBy.get(heading).join(", ")}.`];
    const where = `the ${heading} block`;
    lines.push(...classLines(docLines, `${heading} extends EventBlock`, fields.map((f) => fieldMember(f, "this.event", identityKeys, where)), new Set(BLOCK_MEMBERS), where));
  }

  // The views.
  lines.push("", "// ---- views: one per event message ----------------------------------------------------------------");
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
    const bases = BASE_BLOCKS.filter((heading) => section.blockHeadings.includes(heading));
    if (bases.length === 0 || bases.join() !== BASE_BLOCKS.slice(0, bases.length).join()) {
      fail(`${where}: its base blocks (${bases.join(", ")}) do not start the chain ${BASE_BLOCKS.join(" → ")}, so it has no base class`);
    }
    const baseClass = BLOCKS[bases[bases.length - 1]].baseClass;
    const keys = new Set(section.keys.map((f) => f.key));
    const members = [];
    for (const heading of section.blockHeadings) {
      const { property, about } = BLOCKS[heading];
      const fields = blockFields(heading);
      const missing = fields.filter((f) => !keys.has(f.key)).map((f) => f.key);
      if (missing.length) fail(`${where}: the block ${heading} has keys the event does not list: ${missing.join(", ")}`);
      if (!property) continue;
      members.push({
        name: property,
        lines: [`/** ${doc(`Teleport's ${heading}: ${about}.`)} */`, `get ${property}(): ${heading} {`, `  return new ${heading}(this);`, "}"],
      });
    }
    for (const field of section.keys) {
      if (field.block === null) members.push(fieldMember(field, "this", identityKeys, where));
    }
    const typeList = section.types.map((t) => "`" + t + "`").join(", ");
    const docLines = [`Typed view of ${typeList} (Teleport's ${section.messages.join(" / ")}).`];
    if (section.notes) docLines.push(section.notes);
    lines.push(...classLines(docLines, `${className} extends ${baseClass}`, members, new Set(takenBelow.get(baseClass)), where));
    for (const alias of section.messages.slice(1)) {
      lines.push("");
      lines.push(`/** ${doc(`Teleport's ${alias}: the same keys as ${className}.`)} */`);
      lines.push(`export type ${alias} = ${className};`);
    }
  }
  addOutput(join(generatedDir, "views.ts"), lines.join("\n") + "\n");
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
  addOutput(join(generatedDir, "event_types.ts"), lines.join("\n") + "\n");
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
  addOutput(join(sdkDir, "../fixture-templates.json"), JSON.stringify(templates, null, 2) + "\n");
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
  addOutput(join(sdkDir, "../prototype-fields.json"), JSON.stringify(table, null, 2) + "\n");
}

// ---- main -----------------------------------------------------------------------------------------

const typesPath = join(referenceDir, "teleport-event-types.tsv");
const commonPath = join(referenceDir, "teleport-common-events.md");
for (const path of [typesPath, commonPath]) {
  if (!existsSync(path)) fail(`${relative(repoRoot, path)} is missing`);
}
const types = readEventTypes(typesPath);
const typesByName = new Map(types.map((row) => [row.type, row]));
const { blocks, events: sections } = readCommonEvents(commonPath);

generateProtobufClasses();
generateAbiVersion();
const viewOf = generateViews(blocks, sections, typesByName);
generateEventTypes(types, viewOf);
generateFixtureTemplates(sections, typesByName);
generatePrototypeFields(sections, typesByName);
if (checkOnly) checkOutputs();
else writeOutputs();
