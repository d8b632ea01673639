// Parse spec/asyncapi.yaml with the AsyncAPI project's own parser (@asyncapi/parser, pinned in
// package.json / package-lock.json), resolving its $refs to spec/schemas/*.json, and print every
// diagnostic. Exits 1 on any error-severity diagnostic or when no document comes out, and also
// on warnings unless SPEC_ALLOW_WARNINGS=1 (the spec is ours: a warning is a thing to fix, not
// to get used to). Informational and hint diagnostics are printed only.
//
// Usage: node validate.mjs [path/to/asyncapi.yaml]   (default: ../../spec/asyncapi.yaml)
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Parser, fromFile, DiagnosticSeverity } from '@asyncapi/parser';

const here = path.dirname(fileURLToPath(import.meta.url));
const file = path.resolve(process.argv[2] ?? path.join(here, '..', '..', 'spec', 'asyncapi.yaml'));
const allowWarnings = process.env.SPEC_ALLOW_WARNINGS === '1';

const SEVERITY = {
  [DiagnosticSeverity.Error]: 'error',
  [DiagnosticSeverity.Warning]: 'warning',
  [DiagnosticSeverity.Information]: 'info',
  [DiagnosticSeverity.Hint]: 'hint',
};

const parser = new Parser();
const { document, diagnostics } = await fromFile(parser, file).parse();

const counts = { error: 0, warning: 0, info: 0, hint: 0 };
for (const d of diagnostics) {
  const severity = SEVERITY[d.severity] ?? `severity ${d.severity}`;
  counts[severity] = (counts[severity] ?? 0) + 1;
  const where = d.path && d.path.length ? d.path.join('.') : '(document)';
  const line = d.range ? `:${d.range.start.line + 1}:${d.range.start.character + 1}` : '';
  const source = d.source && d.source !== file ? ` [${path.relative(process.cwd(), d.source)}]` : '';
  console.log(`${severity} ${d.code}: ${d.message}\n    at ${where}${line}${source}`);
}

const rel = path.relative(process.cwd(), file);
if (!document) {
  console.error(`${rel}: the parser produced no document (${counts.error} errors)`);
  process.exit(1);
}
const version = document.version();
const channels = document.channels().length;
const operations = document.operations().length;
const messages = document.components().messages().length;
console.log(
  `${rel}: AsyncAPI ${version}, ${channels} channels, ${operations} operations, ` +
    `${messages} component messages; ${counts.error} errors, ${counts.warning} warnings, ` +
    `${counts.info} infos, ${counts.hint} hints`,
);
// The payloads and the dead-letter headers are $refs to spec/schemas/*.json: make sure they
// were resolved (headers with no properties, or a schema still holding $ref, would be an
// unresolved or empty reference; the dead letter's payload is the raw body: no properties).
const unresolved = [];
for (const message of document.components().messages()) {
  for (const [part, schema] of [['payload', message.payload()], ['headers', message.headers()]]) {
    if (!schema) continue;
    const props = schema.properties();
    if (!props || Object.keys(props).length === 0) {
      if ('$ref' in schema.json() || part === 'headers') unresolved.push(`${message.id()}.${part}`);
    } else {
      console.log(`  ${message.id()}.${part}: ${Object.keys(props).length} properties`);
    }
  }
}
if (unresolved.length) {
  console.error(`${rel}: not resolved to a schema with properties: ${unresolved.join(', ')}`);
  process.exit(1);
}
if (counts.error > 0) process.exit(1);
if (counts.warning > 0 && !allowWarnings) {
  console.error(`${rel}: ${counts.warning} warnings (SPEC_ALLOW_WARNINGS=1 to accept them)`);
  process.exit(1);
}
