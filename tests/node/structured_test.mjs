// structured_test.mjs - llava-server's structured outputs through the official
// OpenAI Node SDK's structured-output helpers, every answer checked by an
// independent JSON Schema validator (ajv). Run by tests/test_server_sdk.c,
// which starts a server (--parallel 4) on the demo model and passes, in the
// environment:
//   NODE_PACKAGES    the cache's node_modules (scripts/setup.sh installs openai,
//                    zod, ajv and ajv's dependencies there)
//   LLAVA_BASE_URL   the server, with --api-key LLAVA_API_KEY
//   LLAVA_IMAGE      a PNG of the demo model's samples
//
// Schemas zod can express go through zodResponseFormat + chat.completions.parse
// (the answer as message.parsed, parsed by the zod schema); the rest (integer,
// $ref/$defs, type lists, formats, enums of mixed types) as a plain json_schema
// response_format through chat.completions.create and JSON.parse. Each schema
// is asked for with SEEDS seeds at temperature 1; every answer must finish with
// "stop" and be valid under ajv against the exact schema the server received.
// Prints one "ok - ..." line per check; exits 1 at the first failure.
import fs from 'node:fs';
import path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { pathToFileURL } from 'node:url';

const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
const pkg = (p) => import(pathToFileURL(path.join(env('NODE_PACKAGES'), p)).href);
const { default: OpenAI, BadRequestError } = await pkg('openai/index.mjs');
const { zodResponseFormat } = await pkg('openai/helpers/zod.mjs');
const { z } = await pkg('zod/index.js');
const { default: Ajv } = await pkg('ajv/dist/ajv.js'); // draft-07, $defs as well

const SEEDS = 10, MAX_TOKENS = 160, CONCURRENCY = 4;
const client = new OpenAI({ baseURL: env('LLAVA_BASE_URL') + '/v1', apiKey: env('LLAVA_API_KEY'),
                            maxRetries: 0, timeout: 120000 });
const image = 'data:image/png;base64,' + fs.readFileSync(env('LLAVA_IMAGE')).toString('base64');

function check(cond, what) {
  if (!cond) {
    console.error(`not ok - ${what}`);
    process.exit(1);
  }
  console.log(`ok - ${what}`);
}

// The validator: ajv in strict mode (a typo in a schema here is an error, not a
// silently ignored keyword), with the formats the server enforces written out.
const ajv = new Ajv({ strict: true, strictTypes: false, allErrors: true });
ajv.addFormat('date', /^\d{4}-(0[1-9]|1[0-2])-(0[1-9]|[12]\d|3[01])$/);
ajv.addFormat('uuid', /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/);

// Bounded everywhere (strings maxLength <= 8, arrays maxItems <= 3) so that the
// tiny demo model always finishes within MAX_TOKENS.
const s8 = () => z.string().max(8);
const zodSchemas = {
  flat: z.object({ name: s8(), ok: z.boolean() }),
  enum_and_number: z.object({ color: z.enum(['red', 'green', 'blue']), size: z.number() }),
  nested: z.object({ person: z.object({ first: s8(), last: s8() }), age: z.number() }),
  string_array: z.object({ tags: z.array(s8()).min(1).max(3) }),
  object_array: z.object({ items: z.array(z.object({ sku: z.string().max(6), qty: z.number() }))
                                     .min(1).max(3) }),
  nullables: z.object({ note: s8().nullable(), score: z.number().nullable(),
                        flag: z.boolean().nullable() }),
  union: z.object({ value: z.union([z.string().max(5), z.number(), z.boolean()]) }),
  literal: z.object({ kind: z.literal('point'), x: z.number(), y: z.number() }),
  tagged_union: z.object({ shape: z.union([
    z.object({ type: z.literal('circle'), r: z.number() }),
    z.object({ type: z.literal('rect'), w: z.number(), h: z.number() })]) }),
  matrix: z.object({ rows: z.array(z.array(z.number()).min(1).max(3)).min(1).max(3) }),
  deep: z.object({ a: z.object({ b: z.object({ c: z.object({ d: z.enum(['x', 'y']) }) }) }) }),
  enum_list: z.object({ days: z.array(z.enum(['mon', 'tue', 'wed', 'thu'])).min(2).max(3) }),
  nullable_object: z.object({ owner: z.object({ id: z.string().min(1).max(4) }).nullable(),
                              open: z.boolean() }),
  nullable_enum: z.object({ level: z.enum(['low', 'high']).nullable(),
                            words: z.array(z.string().min(2).max(8)).max(2) }),
};

const obj = (properties, extra = {}) => ({ type: 'object', properties,
  required: Object.keys(properties), additionalProperties: false, ...extra });
const str8 = { type: 'string', maxLength: 8 };
const plainSchemas = {
  integer: obj({ count: { type: 'integer' }, name: str8 }),
  type_list: obj({ label: { type: ['string', 'null'], maxLength: 6 },
                   n: { type: ['number', 'null'] } }),
  defs_ref: obj({ from: { $ref: '#/$defs/point' }, to: { $ref: '#/$defs/point' } },
                { $defs: { point: obj({ x: { type: 'number' }, y: { type: 'number' } }) } }),
  defs_chain: obj({ order: { $ref: '#/$defs/order' } }, { $defs: {
    order: obj({ id: { type: 'integer' }, lines: { type: 'array', items: { $ref: '#/$defs/line' },
                                                  minItems: 1, maxItems: 2 } }),
    line: obj({ sku: { type: 'string', maxLength: 5 }, qty: { type: 'integer' } }) } }),
  definitions_ref: obj({ pet: { $ref: '#/definitions/pet' } },
    { definitions: { pet: obj({ kind: { enum: ['cat', 'dog'] }, age: { type: 'integer' } }) } }),
  mixed_enum: obj({ v: { enum: [1, 'two', null, true] }, c: { const: 42 } }),
  formats: obj({ day: { type: 'string', format: 'date' }, id: { type: 'string', format: 'uuid' } }),
  anyof_refs: obj({ things: { type: 'array', minItems: 1, maxItems: 3, items: {
    anyOf: [{ $ref: '#/$defs/a' }, { $ref: '#/$defs/b' }, { type: 'null' }] } } },
    { $defs: { a: obj({ a: { type: 'boolean' } }), b: obj({ b: { type: 'string', maxLength: 3 } }) } }),
  with_image: obj({ shape: { enum: ['circle', 'square', 'star'] }, colors: { type: 'array',
    items: { type: 'string', maxLength: 8 }, minItems: 1, maxItems: 2 } }),
};

function messages(name) {
  const text = `Answer with a JSON object (${name}).`;
  return name === 'with_image'
    ? [{ role: 'user', content: [{ type: 'image_url', image_url: { url: image } },
                                 { type: 'text', text }] }]
    : [{ role: 'user', content: text }];
}

// One job per schema and seed.
const jobs = [];
for (const [name, zs] of Object.entries(zodSchemas)) {
  const rf = zodResponseFormat(zs, name);
  const validate = ajv.compile(rf.json_schema.schema);
  for (let seed = 1; seed <= SEEDS; seed++) jobs.push({ name, seed, zod: zs, rf, validate });
}
for (const [name, schema] of Object.entries(plainSchemas)) {
  const rf = { type: 'json_schema', json_schema: { name, schema, strict: true } };
  const validate = ajv.compile(schema);
  for (let seed = 1; seed <= SEEDS; seed++) jobs.push({ name, seed, rf, validate });
}
const nSchemas = Object.keys(zodSchemas).length + Object.keys(plainSchemas).length;

const allFinite = (v) => typeof v === 'number' ? Number.isFinite(v)
  : v !== null && typeof v === 'object' ? Object.values(v).every(allFinite) : true;

async function runJob(j) {
  const body = { model: 'demo', messages: messages(j.name), max_tokens: MAX_TOKENS,
                 temperature: 1, seed: j.seed, response_format: j.rf };
  const where = `${j.name} seed ${j.seed}`;
  let choice, value;
  if (j.zod) {
    // The SDK's helper: parse() refuses "length" (LengthFinishReasonError) and
    // parses the content with the zod schema into message.parsed.
    const r = await client.chat.completions.parse(body);
    choice = r.choices[0];
    value = choice.message.parsed;
    if (!isDeepStrictEqual(value, JSON.parse(choice.message.content)))
      return `${where}: message.parsed differs from the content: ${choice.message.content}`;
  } else {
    const r = await client.chat.completions.create(body);
    choice = r.choices[0];
    try {
      value = JSON.parse(choice.message.content);
    } catch (e) {
      return `${where}: not JSON (${e.message}): ${choice.message.content}`;
    }
  }
  if (choice.finish_reason !== 'stop')
    return `${where}: finish_reason ${choice.finish_reason}: ${choice.message.content}`;
  // ajv takes Infinity (a too-large exponent through JSON.parse) as a number
  if (!allFinite(value)) return `${where}: a number is not finite: ${choice.message.content}`;
  if (!j.validate(value))
    return `${where}: invalid under ajv: ${ajv.errorsText(j.validate.errors)}: ` +
           choice.message.content;
  return null;
}

async function pool(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) {
      const i = next++;
      out[i] = await fn(items[i]);
    }
  }));
  return out;
}

const t0 = Date.now();
const results = await pool(jobs, CONCURRENCY, async (j) => {
  try {
    return await runJob(j);
  } catch (e) {
    return `${j.name} seed ${j.seed}: ${e.constructor.name}: ${e.message}`;
  }
});
const failures = results.filter((r) => r !== null);
for (const f of failures.slice(0, 10)) console.error(`  ${f}`);
check(failures.length === 0,
      `${jobs.length - failures.length} of ${jobs.length} structured outputs finished with ` +
      `"stop" and are valid (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
check(nSchemas >= 20 && jobs.length >= 200, 'at least 20 schemas and 200 objects');
console.log(`${jobs.length} objects over ${nSchemas} schemas, all valid ` +
            `(${Object.keys(zodSchemas).length} schemas through zodResponseFormat + parse, ` +
            `${Object.keys(plainSchemas).length} as plain json_schema)`);

// json_object: the demo model may ramble inside a string until max_tokens, so
// an answer cut at "length" is only checked to start an object; those that stop
// must be a JSON object, and at least one of the seeds must stop.
const jo = await pool(Array.from({ length: SEEDS }, (_, i) => i + 1), CONCURRENCY, (seed) =>
  client.chat.completions.create({ model: 'demo', messages: messages('json_object'),
    max_tokens: MAX_TOKENS, temperature: 1, seed, response_format: { type: 'json_object' } }));
let stopped = 0;
for (const r of jo) {
  const c = r.choices[0];
  if (c.finish_reason === 'stop') {
    const v = JSON.parse(c.message.content);
    check(v !== null && typeof v === 'object' && !Array.isArray(v),
          `json_object: a JSON object: ${c.message.content}`);
    stopped++;
  } else {
    check(c.finish_reason === 'length' && c.message.content.trimStart().startsWith('{'),
          `json_object cut at max_tokens starts an object`);
  }
}
check(stopped > 0, `json_object: ${stopped} of ${SEEDS} seeds finished with a JSON object`);

// A keyword the server cannot enforce is a 400 naming it, as the SDK's
// BadRequestError with the schema's param - from a plain schema and from zod
// (z.int() emits minimum / maximum).
async function expectBadSchema(what, keyword, fn) {
  try {
    await fn();
  } catch (e) {
    check(e instanceof BadRequestError && e.status === 400 &&
          e.param === 'response_format.json_schema.schema' && e.message.includes(keyword),
          `${what}: ${e.constructor.name} ${e.status} param ${e.param}: ${e.message}`);
    return;
  }
  check(false, `${what}: expected BadRequestError, but the call succeeded`);
}
await expectBadSchema('unsupported "minimum"', 'minimum', () => client.chat.completions.create({
  model: 'demo', messages: messages('bad'), max_tokens: 8, response_format: { type: 'json_schema',
    json_schema: { name: 'bad', strict: true,
                   schema: obj({ n: { type: 'integer', minimum: 0 } }) } } }));
await expectBadSchema('zod z.int() (minimum)', 'minimum', () => client.chat.completions.parse({
  model: 'demo', messages: messages('bad'), max_tokens: 8,
  response_format: zodResponseFormat(z.object({ n: z.int() }), 'bad') }));
console.log('all structured-output SDK checks passed');
