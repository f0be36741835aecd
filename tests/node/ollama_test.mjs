// ollama_test.mjs - llava-server's Ollama API (server/ollama.h) through the
// official Ollama JavaScript library (npm `ollama`), unchanged: the client a
// UI or script would use against OLLAMA_HOST. Run by tests/test_server_sdk.c,
// which starts a server (--parallel 4, --alias demo) on the demo model and
// passes, in the environment:
//   NODE_PACKAGES    the cache's node_modules (scripts/setup.sh installs ollama
//                    and its dependency whatwg-fetch there)
//   LLAVA_BASE_URL   the server, with --api-key LLAVA_API_KEY (sent as the
//                    library's headers option allows)
//   LLAVA_IMAGE      the demo's sample_01 (a green circle and a blue square)
//
// Checked: version, list, ps and show; chat and generate, streamed (the
// library's async iterator over NDJSON) and not, with the image as a file
// path the library encodes: the demo answers "green"; the streamed pieces
// make the plain answer and the last part carries the counts; format with a
// schema; tools (tool_choice required, this server's extension) as
// message.tool_calls with argument objects; the load request; a bad image as
// the library's ResponseError with status 400; abort() mid-stream.
// Prints one "ok - ..." line per check; exits 1 at the first failure.
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
const pkg = (p) => import(pathToFileURL(path.join(env('NODE_PACKAGES'), p)).href);
const { Ollama } = await pkg('ollama/dist/index.mjs');

const ollama = new Ollama({ host: env('LLAVA_BASE_URL'),
                            headers: { Authorization: `Bearer ${env('LLAVA_API_KEY')}` } });
const IMAGE = env('LLAVA_IMAGE');
const QUESTION = 'What is the color of the circle?';
const GREEDY = { temperature: 0, num_predict: 24 };

function check(cond, what) {
  if (!cond) {
    console.error(`not ok - ${what}`);
    process.exit(1);
  }
  console.log(`ok - ${what}`);
}

const counted = (r) => r.done === true && ['stop', 'length'].includes(r.done_reason) &&
  r.prompt_eval_count > 0 && r.eval_count > 0 && r.total_duration > 0 &&
  Number.isInteger(r.eval_duration) && Number.isInteger(r.load_duration);

// ---- model information
const v = await ollama.version();
check(typeof v.version === 'string' && v.version.length > 0, `version ${v.version}`);
const list = await ollama.list();
check(list.models.length === 1 && list.models[0].name === 'demo:latest' &&
      list.models[0].details.families.includes('clip'), 'list: the served model');
const ps = await ollama.ps();
check(ps.models.length === 1 && ps.models[0].model === 'demo:latest', 'ps: the served model');
const show = await ollama.show({ model: 'demo' });
check(show.capabilities.includes('vision') && show.model_info['general.architecture'] &&
      typeof show.template === 'string', 'show: capabilities, model_info, template');

// ---- chat: plain, then streamed, the image given as a path
const msg = { role: 'user', content: QUESTION, images: [IMAGE] };
const plain = await ollama.chat({ model: 'demo', messages: [msg], stream: false, options: GREEDY });
check(plain.message.role === 'assistant' && plain.message.content === 'green' && counted(plain),
      `chat: "${plain.message.content}" with the counts`);
let text = '', last = null, parts = 0;
for await (const part of await ollama.chat({ model: 'demo', messages: [msg], stream: true,
                                              options: GREEDY })) {
  text += part.message.content;
  parts++;
  last = part;
}
check(text === plain.message.content && parts >= 2 && counted(last),
      `chat stream: ${parts} parts make the same answer, the last one counted`);

// ---- generate
const gen = await ollama.generate({ model: 'demo', prompt: QUESTION, images: [IMAGE],
                                    stream: false, options: GREEDY });
check(gen.response === 'green' && counted(gen), 'generate: "green"');
text = '';
for await (const part of await ollama.generate({ model: 'demo', prompt: QUESTION, images: [IMAGE],
                                                  stream: true, options: GREEDY }))
  text += part.response;
check(text === 'green', 'generate stream');

// ---- format: a schema
const schema = { type: 'object', properties: { shape: { enum: ['circle', 'square'] },
                                               count: { type: 'integer' } },
                 required: ['shape', 'count'] };
const fmt = await ollama.chat({ model: 'demo', messages: [{ role: 'user', content: 'Describe.',
                                                           images: [IMAGE] }],
                                format: schema, stream: false,
                                options: { temperature: 0, num_predict: 60 } });
const obj = JSON.parse(fmt.message.content);
check(['circle', 'square'].includes(obj.shape) && Number.isInteger(obj.count),
      `format schema: ${fmt.message.content}`);

// ---- tools
const tools = [{ type: 'function', function: {
  name: 'get_weather', description: 'Weather of a city',
  parameters: { type: 'object', properties: { city: { type: 'string', maxLength: 8 },
                                              unit: { enum: ['c', 'f'] } },
                required: ['city', 'unit'] } } }];
const called = await ollama.chat({ model: 'demo', stream: false, tools, tool_choice: 'required',
                                   parallel_tool_calls: false,
                                   messages: [{ role: 'user', content: 'Weather in Paris?' }],
                                   options: { temperature: 1, seed: 3, num_predict: 120 } });
const call = called.message.tool_calls?.[0]?.function;
check(called.message.tool_calls.length === 1 && call.name === 'get_weather' &&
      typeof call.arguments.city === 'string' && ['c', 'f'].includes(call.arguments.unit),
      `tool call ${JSON.stringify(call)}`);
const answer = await ollama.chat({ model: 'demo', stream: false, tools, options: GREEDY,
                                   messages: [{ role: 'user', content: 'Weather in Paris?' },
                                              called.message,
                                              { role: 'tool', content: '22 C',
                                                tool_name: 'get_weather' }] });
check(typeof answer.message.content === 'string' && counted(answer),
      'the round trip with the tool result');

// ---- load, errors, abort
const load = await ollama.chat({ model: 'demo', messages: [] });
check(load.done && load.done_reason === 'load', 'load request');
try {
  await ollama.chat({ model: 'demo', stream: false,
                      messages: [{ role: 'user', content: 'x', images: ['aGVsbG8='] }] });
  check(false, 'a bad image is refused');
} catch (e) {
  check(e.name === 'ResponseError' && e.status_code === 400 && /image/.test(e.error),
        `a bad image: ResponseError ${e.status_code} "${e.error}"`);
}
const stream = await ollama.generate({ model: 'demo', prompt: 'List the shapes.', stream: true,
                                       format: { type: 'array', items: { enum: ['a', 'b'] },
                                                 minItems: 100 },
                                       options: { num_predict: 4000 } });
let aborted = false;
try {
  for await (const part of stream) {
    if (!part.done) stream.abort();
  }
} catch (e) {
  aborted = e.name === 'AbortError';
}
check(aborted, 'abort() mid-stream');
