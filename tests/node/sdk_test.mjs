// sdk_test.mjs - llava-server through the official OpenAI Node SDK (npm
// `openai`), as any OpenAI client would use it. Run by tests/test_server_sdk.c,
// which starts the servers and passes, in the environment:
//   OPENAI_SDK_DIR   the installed package (scripts/setup.sh puts it in the cache dir)
//   LLAVA_BASE_URL   a server with --api-key LLAVA_API_KEY
//   LLAVA_SMALL_URL  a server with --parallel 1 --queue-size 1 (for 429), same key
//   LLAVA_IMAGE      a PNG of the demo model's samples
// Prints one "ok - ..." line per check; exits 1 at the first failure.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
const sdk = await import(pathToFileURL(path.join(env('OPENAI_SDK_DIR'), 'index.mjs')).href);
const { default: OpenAI, BadRequestError, AuthenticationError, NotFoundError, RateLimitError } =
  sdk;

const key = env('LLAVA_API_KEY');
const client = new OpenAI({ baseURL: env('LLAVA_BASE_URL') + '/v1', apiKey: key, maxRetries: 0,
                            timeout: 120000 });
const image = 'data:image/png;base64,' + fs.readFileSync(env('LLAVA_IMAGE')).toString('base64');
const question = 'Describe the image.';
const messages = [{ role: 'user', content: [
  { type: 'image_url', image_url: { url: image } },
  { type: 'text', text: question },
] }];

function check(cond, what) {
  if (!cond) {
    console.error(`not ok - ${what}`);
    process.exit(1);
  }
  console.log(`ok - ${what}`);
}

async function expectError(cls, status, what, fn) {
  try {
    await fn();
  } catch (e) {
    check(e instanceof cls && e.status === status && typeof e.message === 'string' &&
          e.message.length > 0,
          `${what}: ${cls.name} ${status} (${e.constructor.name} ${e.status}: ${e.message})`);
    return e;
  }
  check(false, `${what}: expected ${cls.name}, but the call succeeded`);
}

// Models.
const models = await client.models.list();
check(models.data.length === 1 && typeof models.data[0].id === 'string', 'models.list');
const model = models.data[0].id;

// Non-stream chat with an image.
const plain = await client.chat.completions.create({ model, messages, max_tokens: 24,
                                                     temperature: 0 });
const text = plain.choices[0].message.content;
check(plain.object === 'chat.completion' && typeof text === 'string' && text.length > 0,
      `chat.completions.create with an image: "${text}"`);
check(['stop', 'length'].includes(plain.choices[0].finish_reason), 'finish_reason');
check(plain.usage.prompt_tokens > 0 && plain.usage.completion_tokens > 0 &&
      plain.usage.total_tokens === plain.usage.prompt_tokens + plain.usage.completion_tokens,
      'usage');

// Stream with an image and the usage chunk: the same text.
const stream = await client.chat.completions.create({ model, messages, max_tokens: 24,
  temperature: 0, stream: true, stream_options: { include_usage: true } });
let streamed = '', role = null, finish = null, usage = null, chunks = 0;
for await (const chunk of stream) {
  chunks++;
  if (chunk.usage) {
    usage = chunk.usage;
    check(chunk.choices.length === 0, 'the usage chunk has no choices');
    continue;
  }
  const c = chunk.choices[0];
  if (c.delta.role) role = c.delta.role;
  if (c.delta.content) streamed += c.delta.content;
  if (c.finish_reason) finish = c.finish_reason;
}
check(role === 'assistant' && finish === plain.choices[0].finish_reason,
      `stream: role and finish_reason (${chunks} chunks)`);
check(streamed === text, `stream text equals the plain answer: "${streamed}"`);
check(usage && usage.completion_tokens === plain.usage.completion_tokens &&
      usage.prompt_tokens === plain.usage.prompt_tokens, 'stream_options.include_usage');

// The SDK's own stream helper accumulates the same message.
const runner = client.chat.completions.stream({ model, messages, max_tokens: 24, temperature: 0 });
const final = await runner.finalChatCompletion();
check(final.choices[0].message.content === text, 'chat.completions.stream helper');

// Logprobs.
const lp = await client.chat.completions.create({ model, messages, max_tokens: 24, temperature: 0,
                                                  logprobs: true, top_logprobs: 2 });
const content = lp.choices[0].logprobs.content;
check(Array.isArray(content) && content.length > 0 &&
      content.every((t) => typeof t.token === 'string' && t.logprob <= 0 &&
                           Array.isArray(t.bytes) && t.top_logprobs.length === 2),
      `logprobs: ${content.length} tokens with 2 alternatives each`);
check(content.map((t) => t.token).join('').trim() === text.trim(), 'logprobs tokens spell the text');

// n = 2 and the legacy completions API with logprobs.
const two = await client.chat.completions.create({ model, messages, max_tokens: 8, n: 2,
                                                   temperature: 0.8, seed: 7 });
check(two.choices.length === 2 && two.choices[1].index === 1, 'n = 2');
const legacy = await client.completions.create({ model, prompt: 'A red', max_tokens: 4,
                                                 logprobs: 2, temperature: 0 });
check(legacy.object === 'text_completion' &&
      legacy.choices[0].logprobs.tokens.length === legacy.choices[0].logprobs.token_logprobs.length,
      'completions.create with logprobs');

// Errors as the SDK's classes.
await expectError(BadRequestError, 400, 'temperature 5',
  () => client.chat.completions.create({ model, messages, temperature: 5 }));
const bad = await expectError(BadRequestError, 400, 'a broken image',
  () => client.chat.completions.create({ model, messages: [{ role: 'user', content: [
    { type: 'image_url', image_url: { url: 'data:image/png;base64,aGVsbG8=' } },
    { type: 'text', text: 'x' }] }] }));
check(bad.param && bad.param.startsWith('messages[0]'), `error param: ${bad.param}`);
const wrongKey = new OpenAI({ baseURL: env('LLAVA_BASE_URL') + '/v1', apiKey: 'wrong',
                              maxRetries: 0 });
await expectError(AuthenticationError, 401, 'wrong API key',
  () => wrongKey.chat.completions.create({ model, messages }));
await expectError(NotFoundError, 404, 'unknown path', () => client.get('/nothing'));
const small = new OpenAI({ baseURL: env('LLAVA_SMALL_URL') + '/v1', apiKey: key, maxRetries: 0 });
await expectError(RateLimitError, 429, 'queue full (n = 3 on --parallel 1 --queue-size 1)',
  () => small.chat.completions.create({ model, messages, n: 3, max_tokens: 4 }));
console.log('all SDK checks passed');
