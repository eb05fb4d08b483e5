// Reads the Teleport reference tables in reference/ (the generator's inputs, kept with the SDK):
//   teleport-event-types.tsv   every event type string, its codes, protobuf message and description;
//   teleport-common-events.md  the flat JSON keys, types and meanings of the common events.
// Both readers fail loudly, naming the line, when a table is not shaped as expected.

import { readFileSync } from "node:fs";

/** Reads teleport-event-types.tsv: [{type, codes: [..], message, description}] in file order. */
export function readEventTypes(path) {
  const rows = [];
  const seen = new Set();
  let header = null;
  readFileSync(path, "utf8")
    .split("\n")
    .forEach((line, index) => {
      if (line.startsWith("#") || line.trim() === "") return;
      const cells = line.split("\t");
      if (header === null) {
        header = cells;
        if (cells.slice(0, 4).join(",") !== "type,codes,message,description") {
          throw new Error(`${path}:${index + 1}: expected the header type, codes, message, description`);
        }
        return;
      }
      const [type, codes, message, description] = cells;
      if (!/^[a-z0-9][a-z0-9._-]*$/.test(type)) throw new Error(`${path}:${index + 1}: odd event type ${JSON.stringify(type)}`);
      if (seen.has(type)) throw new Error(`${path}:${index + 1}: event type ${type} is listed twice`);
      seen.add(type);
      rows.push({
        type,
        codes: codes ? codes.split(",").map((c) => c.trim()).filter(Boolean) : [],
        // "DeviceEvent2?" marks an unverified message name.
        message: (message || "").replace(/\?$/, ""),
        description: (description || "").trim(),
      });
    });
  if (rows.length === 0) throw new Error(`${path}: no event types found`);
  return rows;
}

/** Short block names used in the events' "shared blocks" lines, to the block headings. */
const BLOCK_HEADINGS = {
  Metadata: "Metadata",
  User: "UserMetadata",
  Session: "SessionMetadata",
  Server: "ServerMetadata",
  Connection: "ConnectionMetadata",
  Status: "Status",
  Client: "ClientMetadata",
  KubeCluster: "KubernetesClusterMetadata",
  KubePod: "KubernetesPodMetadata",
  Resource: "ResourceMetadata",
  Command: "CommandMetadata",
  App: "AppMetadata",
  Database: "DatabaseMetadata",
  MFADevice: "MFADeviceMetadata",
};

function parseTableRow(line, where) {
  // | `key` | JSON type | present | meaning |
  const cells = line.split("|").slice(1, -1).map((c) => c.trim());
  if (cells.length !== 4) throw new Error(`${where}: expected 4 cells in ${JSON.stringify(line)}`);
  const key = cells[0].replace(/^`|`$/g, "");
  return { key, jsonType: cells[1], present: cells[2], meaning: cells[3] };
}

/**
 * Reads teleport-common-events.md: {blocks: {Heading: {key: field}}, events: [{types, messages,
 * blockHeadings, keys: [field...], notes}]} where a field is {key, jsonType, present, meaning, block}.
 * Keys marked `?` (unverified names) are left out.
 */
export function readCommonEvents(path) {
  const lines = readFileSync(path, "utf8").split("\n");
  const blocks = {};
  const events = [];
  let section = null; // {kind: "block"|"event", ...}
  let part = "";

  lines.forEach((line, index) => {
    const where = `${path}:${index + 1}`;
    if (line.startsWith("## ")) {
      part = line.slice(3).trim();
      section = null;
      return;
    }
    if (line.startsWith("### ")) {
      const title = line.slice(4).trim();
      if (part === "Shared metadata blocks") {
        const heading = title.split(" ")[0];
        section = { kind: "block", heading };
        blocks[heading] = {};
      } else if (part === "Events") {
        const types = [...title.matchAll(/`([^`]+)`/g)].map((m) => m[1]);
        if (types.length === 0) throw new Error(`${where}: an event heading names no type`);
        section = { kind: "event", types, messages: [], blockNames: [], keyNames: [], table: {}, notes: "", line: index + 1 };
        events.push(section);
      } else {
        section = null;
      }
      return;
    }
    if (section === null) return;
    if (line.startsWith("| `")) {
      const field = parseTableRow(line, where);
      if (section.kind === "block") blocks[section.heading][field.key] = { ...field, block: section.heading };
      else section.table[field.key] = { ...field, block: null };
      return;
    }
    if (section.kind !== "event") return;
    const item = line.match(/^- ([a-z -]+): (.*)$/);
    if (!item) return;
    const [, name, text] = item;
    if (name === "message") {
      section.messages = text.replace(/`/g, "").replace(/\(.*\)/, "").split("/").map((m) => m.trim()).filter(Boolean);
    } else if (name === "shared blocks") {
      section.blockNames = text.split(",").map((b) => b.trim());
    } else if (name === "all top-level keys") {
      section.keyNames = [...text.matchAll(/`([^`]+)`/g)].map((m) => m[1]);
    } else if (name === "notes") {
      section.notes = text.trim();
    }
  });

  for (const event of events) {
    const where = `${path}:${event.line} (${event.types.join(", ")})`;
    const blockFields = {};
    event.blockHeadings = event.blockNames.map((short) => {
      const heading = BLOCK_HEADINGS[short];
      if (!heading || !blocks[heading]) throw new Error(`${where}: unknown shared block ${short}`);
      Object.assign(blockFields, blocks[heading]);
      return heading;
    });
    event.keys = [];
    for (const name of event.keyNames) {
      if (name.includes("?")) continue; // an unverified key name
      const field = event.table[name] || blockFields[name];
      if (!field) throw new Error(`${where}: key ${name} is in no table of the event or its blocks`);
      event.keys.push(field);
    }
    if (event.messages.length === 0) throw new Error(`${where}: no message named`);
  }
  return { blocks, events };
}
