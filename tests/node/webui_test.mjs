// webui_test.mjs - llava-server's chat page (web/, served at /) in a real
// browser: Debian's chromium driven by playwright-core. Run by
// tests/test_webui.c, which starts a server (--api-key) on the demo model and
// passes, in the environment:
//   NODE_PACKAGES    the cache's node_modules (scripts/setup.sh installs playwright-core)
//   CHROMIUM         the browser to drive (/usr/bin/chromium)
//   LLAVA_BASE_URL   the server; LLAVA_API_KEY its key
//   LLAVA_IMAGE      the demo sample sample_01_320x240.png
//   WEBUI_SCREENS    where to save a PNG of each step
//   WEBUI_SLOW       1 under ASan: waits are longer (nothing here is timed)
//
// Checked, in order: the page loads with its CSP and the model's name; a
// question without the key shows the server's 401 as an error bubble; with
// the key (settings panel), the sample attached through the file input is
// answered by a streamed reply ("green" at temperature 0); a follow-up's
// request carries the first turn (image included); Regenerate answers again;
// a long answer stopped mid-stream leaves the partial text and an idle page;
// paste and drop attach images and the remove button drops them;
// conversations survive a reload and can be switched and deleted; a canned
// reply (page.route) with <img onerror>, a javascript: link and markdown,
// under a file name holding HTML, stays text; at 375 px nothing scrolls
// sideways. Prints one "ok - ..." line per check; exits 1 at the first failure.
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';

const env = (k) => {
  if (!process.env[k]) throw new Error(`${k} is not set`);
  return process.env[k];
};
const { chromium } = await import(
  pathToFileURL(path.join(env('NODE_PACKAGES'), 'playwright-core/index.mjs')).href);

const BASE = env('LLAVA_BASE_URL');
const KEY = env('LLAVA_API_KEY');
const IMAGE = fs.readFileSync(env('LLAVA_IMAGE'));
const SCREENS = env('WEBUI_SCREENS');
// Generous: under ASan the server is ~30x slower and CI has two cores.
const WAIT_MS = process.env.WEBUI_SLOW === '1' ? 300000 : 60000;
const t0 = Date.now();

let browser;
function check(cond, what) {
  if (!cond) {
    console.error(`not ok - ${what}`);
    if (browser) browser.close().catch(() => {});
    process.exit(1);
  }
  console.log(`ok - ${what}`);
}

let shot = 0;
async function screenshot(page, name) {
  const file = path.join(SCREENS, `${String(++shot).padStart(2, '0')}-${name}.png`);
  await page.screenshot({ path: file });
  console.log(`   screenshot ${file}`);
}

browser = await chromium.launch({
  executablePath: env('CHROMIUM'),
  args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
});
const context = await browser.newContext({ viewport: { width: 1000, height: 700 } });
const page = await context.newPage();
page.setDefaultTimeout(WAIT_MS);
const pageErrors = [];
page.on('pageerror', (e) => pageErrors.push(e.message));
page.on('console', (m) => {
  if (/Content Security Policy/i.test(m.text())) pageErrors.push(m.text());
});
const chatRequests = []; // the bodies the page POSTs to /v1/chat/completions
page.on('request', (r) => {
  if (r.method() === 'POST' && r.url().endsWith('/v1/chat/completions')) chatRequests.push(r.postDataJSON());
});

const idle = () => page.waitForSelector('body[data-state="idle"]');
const assistants = page.locator('.msg.assistant:not(.error) .body');
const lastAnswer = async () => (await assistants.last().textContent()) || '';
async function ask(text) {
  await page.fill('#prompt', text);
  await page.click('#send');
  await idle();
}
async function setSetting(id, value) {
  if (await page.isHidden('#settings')) await page.click('#toggle-settings');
  await page.fill('#' + id, value);
}

// 1. The page, its headers and the model's name.
const res = await page.goto(BASE + '/');
const csp = res.headers()['content-security-policy'] || '';
check(res.status() === 200 && csp.includes("default-src 'self'"), `GET / with its CSP (${csp.slice(0, 40)}…)`);
await page.waitForFunction(() => document.getElementById('model-name').textContent === 'demo');
check(true, 'the model name from /v1/models');
await screenshot(page, 'loaded');

// 2. No key yet: the server's 401 becomes an error bubble.
await ask('Hello?');
const err = (await page.locator('.msg.error .body').last().textContent()) || '';
check(/API key/.test(err) && /401/.test(err), `a 401 shows as an error bubble: "${err}"`);
await screenshot(page, 'error-bubble');

// 3. The key and greedy sampling in the settings panel; a new conversation.
await setSetting('api-key', KEY);
await setSetting('temperature', '0');
await page.click('#toggle-settings');
await page.click('#new-chat');
check(await page.evaluate(() => localStorage.getItem('llava.apiKey')) === KEY, 'the API key is kept in localStorage');

// 4. The sample through the file input, and the question.
await page.setInputFiles('#file-input', env('LLAVA_IMAGE'));
await page.waitForSelector('.thumb-card img');
await page.selectOption('.thumb-card select', 'low');
await screenshot(page, 'attached');
await page.fill('#prompt', 'What is the color of the circle?');
await page.click('#send');
// streamed: the bubble fills while the page is busy, or was filled by the time we look
await page.waitForFunction(() => {
  const b = [...document.querySelectorAll('.msg.assistant .body')].pop();
  return b && b.textContent.length > 0;
});
await idle();
const first = (await lastAnswer()).trim();
check(/green/i.test(first), `the streamed answer about the sample: "${first}"`);
const req1 = chatRequests[chatRequests.length - 1];
check(req1.stream === true && req1.stream_options.include_usage === true && req1.temperature === 0 &&
      req1.model === 'demo', 'the request streams, asks for usage and carries the settings');
const stats1 = (await page.locator('.msg.assistant .stats').last().textContent()) || '';
check(/tok\/s/.test(stats1) && /first token \d+ ms/.test(stats1) && /cached/.test(stats1),
      `the answer's timings: "${stats1}"`);
await screenshot(page, 'answer');

// 5. A follow-up: its request carries the first turn, image included.
await ask('What shape is blue?');
const req2 = chatRequests[chatRequests.length - 1];
const m = req2.messages;
const hasImage = Array.isArray(m[0].content) &&
  m[0].content.some((p) => p.type === 'image_url' && p.image_url.url.startsWith('data:image/png;base64,') &&
                           p.image_url.detail === 'low');
check(m.length === 3 && m[0].role === 'user' && hasImage && m[1].role === 'assistant' &&
      m[1].content.trim() === first && m[2].role === 'user' && m[2].content === 'What shape is blue?',
      'the follow-up request carries the first turn (image, detail low, answer)');
const second = (await lastAnswer()).trim();
check(second.length > 0, `the follow-up is answered: "${second}"`);
const stats2 = (await page.locator('.msg.assistant .stats').last().textContent()) || '';
const cached = Number((stats2.match(/(\d+) cached/) || [])[1]);
check(cached > 0, `the follow-up reuses the first turn's prompt: ${cached} cached tokens`);
await screenshot(page, 'follow-up');

// 6. Regenerate: the same request again, the answer replaced (greedy: the same).
const before = chatRequests.length;
await page.click('#regenerate');
await idle();
const req3 = chatRequests[chatRequests.length - 1];
check(chatRequests.length === before + 1 && JSON.stringify(req3.messages) === JSON.stringify(m) &&
      await page.locator('.msg').count() === 4 && (await lastAnswer()).trim() === second,
      'Regenerate sends the same turns and replaces the last answer');

// 7. Stop mid-stream: a long answer (greedy, about 490 tokens), stopped once text shows.
await page.click('#new-chat');
await setSetting('max_tokens', '2000');
await page.click('#toggle-settings');
await page.fill('#prompt', 'Tell me a very long story about shapes.');
await page.click('#send');
// Stop is pressed inside the page the moment text shows: a quiet machine
// streams the whole answer in about half a second, and page.click's own
// checks took long enough that the answer could end first (Stop hidden).
await page.waitForFunction(() => {
  const b = [...document.querySelectorAll('.msg.assistant .body')].pop();
  const ready = document.body.dataset.state === 'busy' && b && b.textContent.length >= 20;
  if (ready) document.getElementById('stop').click();
  return ready;
});
await idle();
const partial = await lastAnswer();
const stats3 = (await page.locator('.msg.assistant .stats').last().textContent()) || '';
check(partial.length >= 20 && /stopped/.test(stats3) && await page.isVisible('#send') &&
      await page.isHidden('#stop'),
      `Stop ends the stream: idle again, ${partial.length} characters kept (${stats3})`);
await screenshot(page, 'stopped');

// 8. Paste and drop attach images; the remove buttons drop them.
await page.evaluate(async (b64) => {
  const bytes = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
  const file = (name) => new File([bytes], name, { type: 'image/png' });
  const paste = new DataTransfer();
  paste.items.add(file('pasted.png'));
  document.dispatchEvent(new ClipboardEvent('paste', { clipboardData: paste, bubbles: true }));
  const drop = new DataTransfer();
  drop.items.add(file('dropped.png'));
  window.dispatchEvent(new DragEvent('drop', { dataTransfer: drop, bubbles: true, cancelable: true }));
}, IMAGE.toString('base64'));
await page.waitForFunction(() => document.querySelectorAll('.thumb-card').length === 2);
const names = await page.locator('.thumb-card .name').allTextContents();
check(names.includes('pasted.png') && names.includes('dropped.png'), `paste and drop attach: ${names.join(', ')}`);
await page.click('.thumb-card .remove');
await page.click('.thumb-card .remove');
check(await page.locator('.thumb-card').count() === 0, 'the remove buttons drop them');

// 9. Conversations survive a reload; switch to the first, delete one.
await page.reload();
await page.waitForSelector('#conversations li');
const n = await page.locator('#conversations li').count();
check(n === 3 && (await lastAnswer()) === partial, `${n} conversations kept over a reload, the current one shown`);
await page.locator('#conversations li .title', { hasText: 'What is the color' }).click();
await page.waitForSelector('.msg.user .images img');
check(await page.locator('.msg').count() === 4, 'switching shows the first conversation with its image');
await page.locator('#conversations li', { hasText: 'Hello?' }).locator('.delete').click();
check(await page.locator('#conversations li').count() === 2, 'a conversation is deleted');

// 10. Injection: a canned stream with HTML, a javascript: link and markdown,
// and a file name holding HTML; all of it stays text.
const evil = '<img src=x onerror="window.__pwned=1">';
const reply = [`Look: ${evil}`, '', '**bold** and *italic* and `code`', '',
  '[bad](javascript:window.__pwned=2) [good](https://example.com/x)', '', '- one', '- two', '',
  '```html', evil, '```'].join('\n');
const pieces = reply.match(/[\s\S]{1,7}/g); // streamed in small pieces
const sse = pieces.map((p) => `data: ${JSON.stringify({ choices: [{ index: 0, delta: { content: p } }] })}\n\n`).join('') +
  `data: ${JSON.stringify({ choices: [{ index: 0, delta: {}, finish_reason: 'stop' }] })}\n\n` +
  `data: ${JSON.stringify({ choices: [], usage: { prompt_tokens: 5, completion_tokens: 9, prompt_tokens_details: { cached_tokens: 0 } } })}\n\n` +
  'data: [DONE]\n\n';
await page.route('**/v1/chat/completions', (route) =>
  route.fulfill({ status: 200, headers: { 'content-type': 'text/event-stream' }, body: sse }));
await page.click('#new-chat');
await page.setInputFiles('#file-input', { name: `${evil}.png`, mimeType: 'image/png', buffer: IMAGE });
await page.waitForSelector('.thumb-card');
await ask('Show me some HTML.');
await page.unroute('**/v1/chat/completions');
const dom = await page.evaluate(() => ({
  pwned: window.__pwned,
  imgX: document.querySelectorAll('img[src="x"]').length,
  nonData: [...document.images].filter((i) => !i.src.startsWith('data:')).length,
  onerror: document.querySelectorAll('[onerror]').length,
  answer: [...document.querySelectorAll('.msg.assistant .body')].pop().textContent,
  caption: document.querySelector('.msg.user figcaption').textContent,
  js: document.querySelectorAll('a[href^="javascript"]').length,
  good: [...document.querySelectorAll('.msg.assistant a')].map((a) => `${a.href} ${a.rel} ${a.target}`),
  strong: document.querySelectorAll('.msg.assistant strong').length,
  em: document.querySelectorAll('.msg.assistant em').length,
  code: document.querySelectorAll('.msg.assistant .code pre code').length,
  copy: document.querySelectorAll('.msg.assistant .code .copy').length,
  items: document.querySelectorAll('.msg.assistant ul li').length,
}));
check(dom.pwned === undefined && dom.imgX === 0 && dom.nonData === 0 && dom.onerror === 0,
      'no element made from the reply or the file name: window.__pwned is undefined, no <img src=x>');
check(dom.answer.includes(evil) && dom.caption.includes(evil), 'the HTML shows as text in the reply and the caption');
check(dom.js === 0 && dom.good.length === 1 && dom.good[0] === 'https://example.com/x noopener noreferrer _blank',
      `links: only http(s), rel=noopener (${dom.good.join('; ')})`);
check(dom.strong === 1 && dom.em === 1 && dom.code === 1 && dom.copy === 1 && dom.items === 2,
      'markdown: bold, italic, a fenced code block with its copy button, a list');
await screenshot(page, 'injection-as-text');

// 11. A phone: 375 px wide, nothing wider than the screen; the list is a drawer.
await page.setViewportSize({ width: 375, height: 740 });
await page.click('#toggle-list');
await page.waitForSelector('body.list-open');
await page.waitForTimeout(300); // the drawer's slide
await screenshot(page, 'phone-375-list');
await page.locator('#conversations li .title', { hasText: 'What is the color' }).click();
await page.waitForSelector('.msg.user .images img');
const widths = await page.evaluate(() => ({
  doc: document.documentElement.scrollWidth,
  body: document.body.scrollWidth,
  messages: document.getElementById('messages').scrollWidth - document.getElementById('messages').clientWidth,
}));
check(widths.doc <= 375 && widths.body <= 375 && widths.messages <= 0,
      `375 px: no horizontal scroll (document ${widths.doc}, body ${widths.body})`);
await page.waitForTimeout(300); // the drawer's slide back
await screenshot(page, 'phone-375');

check(pageErrors.length === 0, `no script errors or CSP violations${pageErrors.length ? ': ' + pageErrors.join(' | ') : ''}`);
await browser.close();
console.log(`webui_test: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
