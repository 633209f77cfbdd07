// JavaScript Automerge writing and reading Coherency records (tests/test_interop.py).
//
//   node records.mjs create <out> <spec.json>   a new patient document, as the spec says
//   node records.mjs update <in> <out> <spec.json>  change a saved record
//   node records.mjs read <in>                  print a saved record's fields as JSON
//
// spec: {device, actor?, record?, values, text_fields?: [names], sign?: bool}
//   device: the writing device's id (a UUID); the actor is its 16 bytes unless `actor`
//   values: the fields to write; every string is written as an ImmutableString (a
//     scalar), except the names in `text_fields`, written as JavaScript Automerge's
//     default for a string: collaborative text.
//   sign: add the signature envelope (crdt/_authorship.py) with a new Ed25519 key.
import { createPrivateKey, createPublicKey, generateKeyPairSync, sign } from "node:crypto";
import { readFileSync, writeFileSync } from "node:fs";
import * as A from "@automerge/automerge";

const hexOfUuid = (id) => id.replaceAll("-", "");

function write(doc, values, textFields) {
  for (const [name, value] of Object.entries(values)) {
    if (typeof value === "string" && !textFields.includes(name)) {
      doc[name] = new A.ImmutableString(value);
    } else {
      doc[name] = value; // a string here becomes Text; numbers, booleans, null as is
    }
  }
}

// The envelope `RecordDocument.seal` writes: the device's key, and its signature over
// "coherency-changes\n" + record id + "\n" + the sorted heads the envelope depends on.
function seal(doc, device, recordId, keys) {
  const heads = [...A.getHeads(doc)].sort();
  const message = Buffer.concat([
    Buffer.from(`coherency-changes\n${recordId}\n`),
    ...heads.map((h) => Buffer.from(h, "hex")),
  ]);
  const signature = sign(null, message, keys.privateKey);
  const publicKey = Buffer.from(keys.publicKey.export({ format: "jwk" }).x, "base64url");
  return A.change(doc, (d) => {
    if (d._auth === undefined) d._auth = {};
    d._auth[`key:${device}`] = new Uint8Array(publicKey);
    d._auth[`sig:${device}:${heads.join("").slice(0, 32)}`] = new Uint8Array(signature);
  });
}

function keysFor(spec) {
  if (spec.private_key) {
    // A PKCS#8 DER Ed25519 key, hex: the same device signing again.
    const privateKey = createPrivateKey({
      key: Buffer.from(spec.private_key, "hex"),
      format: "der",
      type: "pkcs8",
    });
    return { privateKey, publicKey: createPublicKey(privateKey) };
  }
  return generateKeyPairSync("ed25519");
}

function finish(doc, spec, out) {
  let keys = null;
  if (spec.sign) {
    keys = keysFor(spec);
    doc = seal(doc, spec.device, spec.record ?? spec.values.id, keys);
  }
  writeFileSync(out, A.save(doc));
  const privateKey = keys ? keys.privateKey.export({ format: "der", type: "pkcs8" }) : null;
  console.log(
    JSON.stringify({
      heads: A.getHeads(doc),
      actor: A.getActorId(doc),
      private_key: privateKey ? Buffer.from(privateKey).toString("hex") : null,
    }),
  );
}

function readable(value) {
  if (value === null || typeof value !== "object") return value;
  if (A.isImmutableString(value)) return { scalar: value.toString() };
  if (value instanceof Date) return { timestamp: value.toISOString() };
  return value;
}

const [command, ...args] = process.argv.slice(2);
if (command === "create") {
  const [out, specPath] = args;
  const spec = JSON.parse(readFileSync(specPath, "utf8"));
  let doc = A.init({ actor: spec.actor ?? hexOfUuid(spec.device) });
  doc = A.change(doc, (d) => write(d, spec.values, spec.text_fields ?? []));
  finish(doc, spec, out);
} else if (command === "update") {
  const [input, out, specPath] = args;
  const spec = JSON.parse(readFileSync(specPath, "utf8"));
  let doc = A.load(readFileSync(input), { actor: spec.actor ?? hexOfUuid(spec.device) });
  doc = A.change(doc, (d) => write(d, spec.values, spec.text_fields ?? []));
  finish(doc, spec, out);
} else if (command === "read") {
  const doc = A.load(readFileSync(args[0]));
  const fields = {};
  for (const [name, value] of Object.entries(doc)) {
    if (name !== "_auth") fields[name] = readable(value);
  }
  console.log(JSON.stringify(fields));
} else {
  console.error(`unknown command ${command}`);
  process.exit(2);
}
