// tools_test.mjs - llava-server's tool calling through the official OpenAI Node
// SDK, every call's arguments checked by an independent JSON Schema validator
// (ajv) against the function's parameters. Run by tests/test_server_sdk.c,
// which starts a server (--parallel 4) on the demo model and passes, in the
// environment:
//   NODE_PACKAGES    the cache's node_modules (scripts/setup.sh installs openai
//                    and ajv with its dependencies there)
//   LLAVA_BASE_URL   the server, with --api-key LLAVA_API_KEY
//
// Checked: tool_choice "required" over SEEDS seeds at temperature 1 (always
// calls: finish_reason "tool_calls", unique ids, known names, arguments valid
// under ajv); a named function (only that name) and parallel_tool_calls false
// (exactly one call); the round trip (calls, then the assistant message as the
// SDK returned it and one tool message per call, then a final answer in
// content); the SDK's runTools helper running local functions; a streamed
// "required" request through chat.completions.stream + finalChatCompletion;
// a parameters keyword the server cannot enforce as a BadRequestError.
// The demo model is random, so the parameters are bounded (enums, integers,
// booleans, strings of at most 8) and it writes no call under "auto".
// Prints one "ok - ..." line per check; exits 1 at the first failure.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
const pkg = (p) => import(pathToFileURL(path.join(env('NODE_PACKAGES'), p)).href);
const { default: OpenAI, BadRequestError } = await pkg('openai/index.mjs');
const { default: Ajv } = await pkg('ajv/dist/ajv.js');

const SEEDS = 24, MAX_TOKENS = 600, CONCURRENCY = 4;
const opts = { baseURL: env('LLAVA_BASE_URL') + '/v1', apiKey: env('LLAVA_API_KEY'),
               maxRetries: 0, timeout: 120000 };
const client = new OpenAI(opts);

function check(cond, what) {
  if (!cond) {
    console.error(`not ok - ${what}`);
    process.exit(1);
  }
  console.log(`ok - ${what}`);
}

const ajv = new Ajv({ strict: true, strictTypes: false, allErrors: true });
const obj = (properties) => ({ type: 'object', properties, required: Object.keys(properties),
                               additionalProperties: false });
const functions = {
  get_weather: { description: 'Current weather of a city',
                 parameters: obj({ city: { type: 'string', maxLength: 8 },
                                   unit: { enum: ['c', 'f'] } }) },
  count_shapes: { description: 'Count the shapes of a color in the picture',
                  parameters: obj({ color: { enum: ['red', 'green', 'blue'] } }) },
  set_alarm: { description: 'Set an alarm',
               parameters: obj({ hour: { type: 'integer' }, loud: { type: 'boolean' } }) },
};
const validators = Object.fromEntries(Object.entries(functions).map(([n, f]) =>
  [n, ajv.compile(f.parameters)]));
const tools = Object.entries(functions).map(([name, f]) =>
  ({ type: 'function', function: { name, ...f } }));
const ask = [{ role: 'user', content: 'What is the weather in Paris, and how many red shapes?' }];

let nCalls = 0, nRequests = 0;
const seenIds = new Set();

// The calls of one message: each id unique (across the whole run), type
// "function", a known name (`only` if given), arguments JSON valid under ajv;
// null when all hold, else what is wrong.
function badCalls(calls, where, only) {
  if (!Array.isArray(calls) || calls.length === 0) return `${where}: no tool_calls`;
  for (const c of calls) {
    if (typeof c.id !== 'string' || !c.id.startsWith('call_') || seenIds.has(c.id))
      return `${where}: id ${c.id} missing or not unique`;
    seenIds.add(c.id);
    if (c.type !== 'function') return `${where}: type ${c.type}`;
    const name = c.function?.name;
    if (!(name in functions)) return `${where}: unknown function ${name}`;
    if (only && name !== only) return `${where}: ${name}, not ${only}`;
    let args;
    try {
      args = JSON.parse(c.function.arguments);
    } catch (e) {
      return `${where}: ${name} arguments not JSON (${e.message}): ${c.function.arguments}`;
    }
    if (!validators[name](args))
      return `${where}: ${name} arguments invalid under ajv: ` +
             `${ajv.errorsText(validators[name].errors)}: ${c.function.arguments}`;
  }
  nCalls += calls.length;
  return null;
}

// A non-stream completion that must be calls.
async function callsOf(body, where, only) {
  const r = await client.chat.completions.create(body);
  nRequests++;
  const c = r.choices[0];
  if (c.finish_reason !== 'tool_calls')
    return [r, `${where}: finish_reason ${c.finish_reason}: ${c.message.content}`];
  if (c.message.content !== null) return [r, `${where}: content ${c.message.content}`];
  return [r, badCalls(c.message.tool_calls, where, only)];
}

async function pool(items, n, fn) {
  const out = new Array(items.length);
  let next = 0;
  await Promise.all(Array.from({ length: n }, async () => {
    while (next < items.length) {
      const i = next++;
      try {
        out[i] = await fn(items[i]);
      } catch (e) {
        out[i] = `${items[i].kind} seed ${items[i].seed}: ${e.constructor.name}: ${e.message}`;
      }
    }
  }));
  return out;
}

const base = (seed) => ({ model: 'demo', messages: ask, tools, max_tokens: MAX_TOKENS,
                          temperature: 1, seed });
const t0 = Date.now();

// 1-2. "required", a named function, parallel_tool_calls false.
const jobs = [];
for (let seed = 1; seed <= SEEDS; seed++) jobs.push({ kind: 'required', seed });
for (let seed = 1; seed <= 6; seed++) jobs.push({ kind: 'named', seed });
for (let seed = 1; seed <= 6; seed++) jobs.push({ kind: 'single', seed });
let parallelSeen = 0, singleCalls = [];
const results = await pool(jobs, CONCURRENCY, async (j) => {
  const where = `${j.kind} seed ${j.seed}`;
  if (j.kind === 'required') {
    const [r, bad] = await callsOf({ ...base(j.seed), tool_choice: 'required' }, where);
    if (!bad && r.choices[0].message.tool_calls.length > 1) parallelSeen++;
    return bad;
  }
  if (j.kind === 'named')
    return (await callsOf({ ...base(j.seed), tool_choice:
      { type: 'function', function: { name: 'count_shapes' } } }, where, 'count_shapes'))[1];
  const [r, bad] = await callsOf({ ...base(j.seed), max_tokens: 120, tool_choice: 'required',
                                   parallel_tool_calls: false }, where);
  if (!bad) singleCalls.push(r.choices[0].message.tool_calls.length);
  return bad;
});
const failures = results.filter((r) => r !== null);
for (const f of failures.slice(0, 10)) console.error(`  ${f}`);
check(failures.length === 0,
      `${jobs.length} requests (${SEEDS} "required" seeds, 6 named count_shapes, 6 ` +
      `parallel_tool_calls false) all finished with valid tool_calls ` +
      `(${parallelSeen} "required" answers held parallel calls)`);
check(singleCalls.length === 6 && singleCalls.every((n) => n === 1),
      'parallel_tool_calls false: exactly one call each time');

// 3. The round trip: calls, then the assistant message as the SDK returned it
// and one tool message per call, then an answer in content.
const results3 = { get_weather: (a) => ({ city: a.city, temp: 21, unit: a.unit }),
                   count_shapes: (a) => ({ color: a.color, count: 3 }),
                   set_alarm: (a) => ({ hour: a.hour, set: true }) };
const rounds = await pool([1, 2, 3, 4].map((seed) => ({ kind: 'round trip', seed })),
                          CONCURRENCY, async ({ seed }) => {
  const where = `round trip seed ${seed}`;
  const [r1, bad] = await callsOf({ ...base(seed), tool_choice: 'required' }, where);
  if (bad) return bad;
  const msg = r1.choices[0].message;
  const history = [...ask, msg, ...msg.tool_calls.map((c) => ({ role: 'tool', tool_call_id: c.id,
    content: JSON.stringify(results3[c.function.name](JSON.parse(c.function.arguments))) }))];
  const r2 = await client.chat.completions.create({ model: 'demo', messages: history, tools,
    tool_choice: seed % 2 ? 'none' : 'auto', max_tokens: 40, temperature: 1, seed });
  nRequests++;
  const c = r2.choices[0];
  if (!['stop', 'length'].includes(c.finish_reason) || typeof c.message.content !== 'string' ||
      c.message.tool_calls?.length)
    return `${where}: final answer finish ${c.finish_reason}, content ${c.message.content}, ` +
           `tool_calls ${JSON.stringify(c.message.tool_calls)}`;
  return `ok ${msg.tool_calls.length} call(s) -> "${c.message.content.slice(0, 40)}"`;
});
for (const [i, r] of rounds.entries())
  check(r.startsWith('ok '), `round trip seed ${i + 1} (tool_choice ${i % 2 ? 'auto' : 'none'} ` +
        `after the results): ${r.replace(/^ok /, '')}`);

// 3b. The SDK's runTools helper with local functions. Under "auto" the demo
// model writes no call, and under "required" it never stops calling, so the
// client's fetch asks "required" while the last message is the user's and
// "auto" once the tool results follow (what a real app would choose). Each run
// must run its functions with parsed arguments valid under ajv, one tool
// message per call, within maxChatCompletions 4. The runner refuses an answer
// cut at max_tokens (LengthFinishReasonError), and the demo model's free text
// after the results sometimes rambles past RUN_TOKENS (about 1 seed in 16 at
// 400 tokens; the call ids, in the prompt with the results, change between
// servers, so a seed's answer need not repeat): a run may end that way only on
// its final completion, and at least one of RUNS runs must end in a final
// content.
const RUNS = 4, RUN_TOKENS = 500;
const runnable = (calledWith) => Object.entries(functions).map(([name, f]) => ({
  type: 'function', function: { name, description: f.description, parameters: f.parameters,
    parse: JSON.parse, function: (args) => {
      calledWith.push({ name, args, valid: validators[name](args) });
      return results3[name](args);
    } } }));
const switching = new OpenAI({ ...opts, fetch: (url, init) => {
  const body = JSON.parse(init.body);
  if (body.messages.at(-1).role === 'tool') body.tool_choice = 'auto';
  return fetch(url, { ...init, body: JSON.stringify(body) });
} });
const runs = await pool(Array.from({ length: RUNS }, (_, i) => ({ kind: 'runTools', seed: i + 7 })),
                        CONCURRENCY, async ({ seed }) => {
  const calledWith = [];
  const runner = switching.chat.completions.runTools({ model: 'demo', messages: ask,
    tools: runnable(calledWith), tool_choice: 'required', max_tokens: RUN_TOKENS,
    temperature: 1, seed }, { maxChatCompletions: 4 });
  let final = null, cut = false;
  try {
    final = await runner.finalContent();
  } catch (e) {
    if (e.constructor.name !== 'LengthFinishReasonError') throw e;
    cut = true;
  }
  const completions = runner.allChatCompletions();
  nRequests += completions.length + cut;
  const where = `runTools seed ${seed}`;
  if (!(calledWith.length >= 1 && calledWith.every((c) => c.valid && typeof c.args === 'object')))
    return `${where}: functions run ${JSON.stringify(calledWith)}`;
  if (runner.messages.filter((m) => m.role === 'tool').length !== calledWith.length)
    return `${where}: not one tool message per call`;
  if (completions.length !== 1 + !cut || completions[0].choices[0].finish_reason !== 'tool_calls')
    return `${where}: ${completions.length} completions`;
  if (!cut && (typeof final !== 'string' || completions[1].choices[0].finish_reason !== 'stop'))
    return `${where}: final content ${final}`;
  nCalls += calledWith.length;
  return { calls: calledWith.map((c) => `${c.name}(${JSON.stringify(c.args)})`).join(', '),
           final };
});
for (const [i, r] of runs.entries())
  check(typeof r === 'object', typeof r === 'object'
    ? `runTools seed ${i + 7} ran ${r.calls}, then ` +
      (r.final !== null ? `final content "${r.final.slice(0, 40)}"`
                        : `the answer passed ${RUN_TOKENS} tokens (LengthFinishReasonError)`)
    : r);
check(runs.some((r) => r.final !== null),
      `runTools: ${runs.filter((r) => r.final !== null).length} of ${RUNS} runs ended in a ` +
      'final content');
// With a named function the runner stops after running it once.
const namedCalls = [];
const named = client.chat.completions.runTools({ model: 'demo', messages: ask,
  tools: runnable(namedCalls), tool_choice: { type: 'function', function: { name: 'set_alarm' } },
  max_tokens: MAX_TOKENS, temperature: 1, seed: 8 });
const namedResult = await named.finalFunctionToolCallResult();
nRequests++;
check(namedCalls.length === 1 && namedCalls[0].name === 'set_alarm' && namedCalls[0].valid &&
      namedResult === JSON.stringify(results3.set_alarm(namedCalls[0].args)),
      `runTools with a named function ran set_alarm(${JSON.stringify(namedCalls[0]?.args)}) once`);
nCalls++;

// 4. Streaming through the SDK's stream helper: the same shape of calls.
const streams = await pool([1, 2, 3, 4].map((seed) => ({ kind: 'stream', seed })), CONCURRENCY,
  async ({ seed }) => {
    const where = `stream seed ${seed}`;
    const s = client.chat.completions.stream({ ...base(seed + 100), tool_choice: 'required' });
    let deltas = 0;
    s.on('chunk', (ch) => { if (ch.choices[0]?.delta?.tool_calls) deltas++; });
    const r = await s.finalChatCompletion();
    nRequests++;
    const c = r.choices[0];
    if (c.finish_reason !== 'tool_calls') return `${where}: finish_reason ${c.finish_reason}`;
    if (deltas < 1) return `${where}: no tool_calls delta`;
    return badCalls(c.message.tool_calls, where) ??
           `ok ${c.message.tool_calls.map((t) => t.function.name).join(', ')}`;
  });
for (const [i, r] of streams.entries())
  check(r.startsWith('ok '), `stream helper seed ${i + 101}: valid calls ${r.replace(/^ok /, '')}`);

// 5. A keyword the server cannot enforce in parameters.
try {
  await client.chat.completions.create({ model: 'demo', messages: ask, max_tokens: 8,
    tools: [{ type: 'function', function: { name: 'f', parameters:
      obj({ s: { type: 'string', pattern: '^a+$' } }) } }] });
  check(false, 'a "pattern" in parameters: expected BadRequestError, but the call succeeded');
} catch (e) {
  check(e instanceof BadRequestError && e.status === 400 &&
        e.param === 'tools[0].function.parameters' && e.message.includes('pattern'),
        `"pattern" in parameters: ${e.constructor.name} ${e.status} param ${e.param}: ` +
        e.message);
}

// the time is reported, not checked: a sanitizer build of the server is ~10x slower
console.log(`took ${((Date.now() - t0) / 1000).toFixed(1)} s`);
console.log(`${nCalls} tool calls over ${nRequests} requests, all valid`);
