// app.js - the llava-server chat page: conversations with images against the
// server's own POST /v1/chat/completions (streamed, SSE), kept in this
// browser's localStorage. No framework and no build step: the file is
// embedded into the server as it is (cmake/embed_web.cmake).
//
// Safety rule: text that comes from the model, the user or a file name is
// only ever put into the page through textContent, attribute properties
// and createElement, never through innerHTML; the markdown renderer below
// builds its nodes the same way, and links are made only for http(s) URLs.
// The server's Content-Security-Policy forbids inline script besides.
'use strict';

const MAX_IMAGE_BYTES = 10 * 1024 * 1024; // per attached file (the server takes 20 MB a part, 32 MiB a body)
const KEYS = {
  convs: 'llava.conversations',
  current: 'llava.current',
  settings: 'llava.settings',
  apiKey: 'llava.apiKey',
};
// The sampling fields of the settings panel: input id → how to read it.
const NUMBER_FIELDS = { temperature: parseFloat, top_p: parseFloat, top_k: parseInt, max_tokens: parseInt, seed: parseInt };

const $ = (id) => document.getElementById(id);
const ui = {
  messages: $('messages'), prompt: $('prompt'), composer: $('composer'), send: $('send'),
  stop: $('stop'), regenerate: $('regenerate'), fileInput: $('file-input'),
  attachments: $('attachments'), conversations: $('conversations'), newChat: $('new-chat'),
  settings: $('settings'), toggleSettings: $('toggle-settings'), toggleList: $('toggle-list'),
  apiKey: $('api-key'), system: $('system-prompt'), model: $('model-name'), notice: $('notice'),
  overlay: $('drop-overlay'),
};

const state = {
  convs: [],        // [{id, title, updated, messages: [{role, text, images?, error?, stats?}]}]
  currentId: null,  // the conversation shown; null: a new one, made at the first message
  pending: [],      // images attached to the next message: [{id, url, name, detail}]
  busy: null,       // while a reply streams: {controller, conv, msg}
  model: null,      // from GET /v1/models
};

// ---- small helpers ---------------------------------------------------------------------

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

function newId() {
  return Date.now().toString(36) + Math.random().toString(36).slice(2, 8);
}

function loadJSON(key, fallback) {
  try {
    const v = JSON.parse(localStorage.getItem(key));
    return v ?? fallback;
  } catch {
    return fallback;
  }
}

let noticeTimer = null;
// A message above the composer (storage full, a refused file); it stays 8 s.
function notice(text) {
  ui.notice.textContent = text;
  ui.notice.hidden = false;
  clearTimeout(noticeTimer);
  noticeTimer = setTimeout(() => { ui.notice.hidden = true; }, 8000);
}

function formatBytes(n) {
  return n >= 1048576 ? (n / 1048576).toFixed(1) + ' MB' : Math.ceil(n / 1024) + ' KB';
}

// ---- storage ---------------------------------------------------------------------------
// Everything lives in localStorage (about 5 MB an origin). Images are kept as
// data URLs; when the whole does not fit, the images of other conversations
// are left out of what is stored, then all images, and the page says so: the
// text of every conversation is kept, and the images stay until a reload.

function withoutImages(conv) {
  return {
    ...conv,
    messages: conv.messages.map((m) => (m.images
      ? { ...m, images: m.images.map((i) => ({ name: i.name, detail: i.detail, url: null })) }
      : m)),
  };
}

function saveConvs() {
  const tries = [
    [state.convs, null],
    [state.convs.map((c) => (c.id === state.currentId ? c : withoutImages(c))),
      'Browser storage is full: images of the other conversations are no longer kept (their text is).'],
    [state.convs.map(withoutImages),
      'Browser storage is full: images are not kept after a reload (the text is). Delete old conversations to make room.'],
  ];
  for (const [convs, warning] of tries) {
    try {
      localStorage.setItem(KEYS.convs, JSON.stringify(convs));
      if (warning) notice(warning);
      return;
    } catch {
      // QuotaExceededError: try with less
    }
  }
  notice('Browser storage is full: conversations are not being saved. Delete some to make room.');
}

function currentConv() {
  return state.convs.find((c) => c.id === state.currentId) || null;
}

// ---- settings --------------------------------------------------------------------------

function loadSettings() {
  const s = loadJSON(KEYS.settings, {});
  ui.system.value = s.system || '';
  for (const k of Object.keys(NUMBER_FIELDS)) $(k).value = s[k] ?? '';
  ui.apiKey.value = localStorage.getItem(KEYS.apiKey) || '';
}

function saveSettings() {
  const s = { system: ui.system.value };
  for (const k of Object.keys(NUMBER_FIELDS)) s[k] = $(k).value;
  localStorage.setItem(KEYS.settings, JSON.stringify(s));
  localStorage.setItem(KEYS.apiKey, ui.apiKey.value);
}

function authHeaders() {
  const key = ui.apiKey.value.trim();
  return key ? { Authorization: 'Bearer ' + key } : {};
}

// ---- markdown, safely ------------------------------------------------------------------
// A small subset, enough for chat answers: paragraphs (single newlines kept
// as line breaks), # headings, - / 1. lists, ``` fenced code (with a copy
// button), `code`, **bold**, *italic*, [text](url) and bare URLs. Every node
// is made with createElement and filled with textContent.

const INLINE = new RegExp([
  '`([^`\\n]+)`', // 1: code
  '\\*\\*(?=\\S)(.+?)\\*\\*', // 2: bold
  '(?<![\\w])__(?=\\S)(.+?)__(?![\\w])', // 3: bold
  '\\*(?=[^\\s*])(.+?)\\*', // 4: italic
  '(?<![\\w])_(?=[^\\s_])(.+?)_(?![\\w])', // 5: italic
  '\\[([^\\]\\n]+)\\]\\(\\s*([^)\\s]+)\\s*\\)', // 6, 7: link
  '(https?:\\/\\/[^\\s<>"\'`]*[^\\s<>"\'`.,;:!?)\\]])', // 8: bare URL
].join('|'), 'g');

// The URL if it is http(s), else null (javascript:, data: and the rest stay text).
function safeUrl(url) {
  try {
    const u = new URL(url);
    return u.protocol === 'http:' || u.protocol === 'https:' ? u.href : null;
  } catch {
    return null;
  }
}

function link(href, label) {
  const a = el('a', null, label);
  a.href = href;
  a.target = '_blank';
  a.rel = 'noopener noreferrer';
  return a;
}

function renderInline(text, parent) {
  let last = 0;
  for (const m of text.matchAll(INLINE)) {
    if (m.index > last) parent.append(text.slice(last, m.index));
    last = m.index + m[0].length;
    if (m[1] != null) {
      parent.append(el('code', null, m[1]));
    } else if (m[2] != null || m[3] != null) {
      const b = el('strong');
      renderInline(m[2] ?? m[3], b);
      parent.append(b);
    } else if (m[4] != null || m[5] != null) {
      const i = el('em');
      renderInline(m[4] ?? m[5], i);
      parent.append(i);
    } else if (m[6] != null) {
      const href = safeUrl(m[7]);
      parent.append(href ? link(href, m[6]) : m[0]);
    } else {
      const href = safeUrl(m[8]);
      parent.append(href ? link(href, m[8]) : m[8]);
    }
  }
  if (last < text.length) parent.append(text.slice(last));
}

async function copyText(text) {
  if (navigator.clipboard && window.isSecureContext) return navigator.clipboard.writeText(text);
  const t = el('textarea'); // plain http on another host: the old way
  t.value = text;
  document.body.append(t);
  t.select();
  const ok = document.execCommand('copy');
  t.remove();
  if (!ok) throw new Error('copy refused');
}

function codeBlock(code, lang) {
  const wrap = el('div', 'code');
  const pre = el('pre');
  const c = el('code', null, code);
  if (lang) c.dataset.lang = lang;
  pre.append(c);
  const btn = el('button', 'copy', 'Copy');
  btn.type = 'button';
  btn.addEventListener('click', () => {
    copyText(code).then(() => { btn.textContent = 'Copied'; }, () => { btn.textContent = 'Copy failed'; });
    setTimeout(() => { btn.textContent = 'Copy'; }, 1500);
  });
  wrap.append(pre, btn);
  return wrap;
}

const LIST_ITEM = /^\s*([-*+]|\d{1,9}[.)])\s+(.*)$/;

function renderMarkdown(text, parent) {
  const lines = text.replace(/\r\n?/g, '\n').split('\n');
  let para = [];
  const flush = () => {
    if (!para.length) return;
    const p = el('p');
    para.forEach((line, k) => {
      if (k) p.append(el('br'));
      renderInline(line, p);
    });
    parent.append(p);
    para = [];
  };
  for (let i = 0; i < lines.length;) {
    const line = lines[i];
    const fence = line.match(/^\s*(```+|~~~+)\s*([\w+#.-]*)\s*$/);
    if (fence) { // to the closing fence, or the end of the text while it streams
      flush();
      const code = [];
      for (i++; i < lines.length && !lines[i].trim().startsWith(fence[1]); i++) code.push(lines[i]);
      i++;
      parent.append(codeBlock(code.join('\n'), fence[2]));
      continue;
    }
    const heading = line.match(/^(#{1,6})\s+(.*)$/);
    if (heading) {
      flush();
      const h = el(heading[1].length <= 2 ? 'h3' : 'h4');
      renderInline(heading[2], h);
      parent.append(h);
      i++;
      continue;
    }
    const item = line.match(LIST_ITEM);
    if (item) {
      flush();
      const ordered = /\d/.test(item[1]);
      const list = el(ordered ? 'ol' : 'ul');
      if (ordered) list.start = parseInt(item[1], 10);
      for (let m; i < lines.length && (m = lines[i].match(LIST_ITEM)) && /\d/.test(m[1]) === ordered; i++) {
        const li = el('li');
        renderInline(m[2], li);
        list.append(li);
      }
      parent.append(list);
      continue;
    }
    if (line.trim()) para.push(line);
    else flush();
    i++;
  }
  flush();
}

// ---- rendering -------------------------------------------------------------------------

function statsText(msg) {
  const s = msg.stats || {};
  const parts = [];
  if (s.completion_tokens != null) parts.push(`${s.completion_tokens} tokens`);
  if (s.tokens_per_s) parts.push(`${s.tokens_per_s.toFixed(1)} tok/s`);
  if (s.ttft_ms != null) parts.push(`first token ${Math.round(s.ttft_ms)} ms`);
  if (s.prompt_tokens != null) parts.push(`prompt ${s.prompt_tokens} tokens, ${s.cached_tokens || 0} cached`);
  if (s.finish_reason === 'length') parts.push('cut at max_tokens');
  if (s.stopped) parts.push('stopped');
  return parts.join(' · ');
}

function imagesEl(images) {
  const box = el('div', 'images');
  for (const im of images) {
    const fig = el('figure');
    if (im.url) {
      const img = el('img');
      img.src = im.url;
      img.alt = im.name;
      fig.append(img);
    }
    fig.append(el('figcaption', null, `${im.name} · ${im.detail}${im.url ? '' : ' · not kept'}`));
    box.append(fig);
  }
  return box;
}

function fillBody(body, msg) {
  body.replaceChildren();
  if (msg.error) {
    body.textContent = msg.error;
  } else if (msg.role === 'user') {
    if (msg.images && msg.images.length) body.append(imagesEl(msg.images));
    if (msg.text) body.append(el('div', 'text', msg.text));
  } else {
    renderMarkdown(msg.text, body);
  }
}

function messageEl(msg) {
  const kind = msg.error ? 'error' : msg.role;
  const box = el('div', `msg ${msg.role}${msg.error ? ' error' : ''}`);
  box.append(el('div', 'role', kind === 'user' ? 'You' : kind === 'error' ? 'Error' : state.model || 'Assistant'));
  const body = el('div', msg.role === 'assistant' && !msg.error ? 'body md' : 'body');
  fillBody(body, msg);
  box.append(body);
  const stats = statsText(msg);
  box.append(el('div', 'stats', stats));
  return box;
}

function renderMessages() {
  const conv = currentConv();
  ui.messages.replaceChildren();
  if (!conv || !conv.messages.length) {
    ui.messages.append(el('p', 'empty', 'Attach an image (button, drop or paste) and ask about it.'));
  } else {
    for (const m of conv.messages) ui.messages.append(messageEl(m));
  }
  ui.messages.scrollTop = ui.messages.scrollHeight;
  updateButtons();
}

function renderList() {
  ui.conversations.replaceChildren();
  const convs = [...state.convs].sort((a, b) => b.updated - a.updated);
  for (const c of convs) {
    const li = el('li', c.id === state.currentId ? 'current' : null);
    const open = el('button', 'title', c.title);
    open.type = 'button';
    open.title = c.title;
    open.addEventListener('click', () => switchTo(c.id));
    const del = el('button', 'delete', '×');
    del.type = 'button';
    del.title = 'Delete this conversation';
    del.setAttribute('aria-label', 'Delete conversation ' + c.title);
    del.addEventListener('click', () => deleteConv(c.id));
    li.append(open, del);
    ui.conversations.append(li);
  }
}

function updateButtons() {
  const busy = !!state.busy;
  document.body.dataset.state = busy ? 'busy' : 'idle';
  ui.send.hidden = busy;
  ui.stop.hidden = !busy;
  const conv = currentConv();
  ui.regenerate.disabled = busy || !conv || !conv.messages.some((m) => m.role === 'user');
  ui.newChat.disabled = busy;
  for (const b of ui.conversations.querySelectorAll('button')) b.disabled = busy;
}

// The streaming reply's element, re-rendered at most once a frame.
let renderQueued = false;
function renderStreaming() {
  if (renderQueued) return;
  renderQueued = true;
  requestAnimationFrame(() => {
    renderQueued = false;
    const b = state.busy;
    if (!b || b.conv.id !== state.currentId) return;
    const box = ui.messages.lastElementChild;
    const nearBottom = ui.messages.scrollHeight - ui.messages.scrollTop - ui.messages.clientHeight < 80;
    fillBody(box.querySelector('.body'), b.msg);
    if (nearBottom) ui.messages.scrollTop = ui.messages.scrollHeight;
  });
}

// ---- conversations ---------------------------------------------------------------------

function switchTo(id) {
  if (state.busy) return;
  state.currentId = id;
  localStorage.setItem(KEYS.current, id || '');
  document.body.classList.remove('list-open');
  renderList();
  renderMessages();
}

function deleteConv(id) {
  if (state.busy) return;
  state.convs = state.convs.filter((c) => c.id !== id);
  saveConvs();
  switchTo(state.currentId === id ? null : state.currentId);
}

// ---- attachments -----------------------------------------------------------------------

function readAsDataURL(file) {
  return new Promise((resolve, reject) => {
    const r = new FileReader();
    r.onload = () => resolve(r.result);
    r.onerror = () => reject(r.error);
    r.readAsDataURL(file);
  });
}

async function addFiles(files) {
  for (const f of files) {
    if (!f.type.startsWith('image/')) {
      notice(`"${f.name}" is not an image.`);
      continue;
    }
    if (f.size > MAX_IMAGE_BYTES) {
      notice(`"${f.name}" is ${formatBytes(f.size)}; images up to ${formatBytes(MAX_IMAGE_BYTES)} can be attached.`);
      continue;
    }
    try {
      state.pending.push({ id: newId(), url: await readAsDataURL(f), name: f.name || 'pasted image', detail: 'auto' });
    } catch (e) {
      notice(`"${f.name}" could not be read: ${e.message}`);
    }
  }
  renderAttachments();
}

function renderAttachments() {
  ui.attachments.replaceChildren();
  for (const a of state.pending) {
    const card = el('div', 'thumb-card');
    const img = el('img', 'thumb');
    img.src = a.url;
    img.alt = a.name;
    const name = el('span', 'name', a.name);
    name.title = a.name;
    const detail = el('select');
    detail.title = 'Image detail';
    for (const d of ['auto', 'low', 'high']) {
      const o = el('option', null, `detail: ${d}`);
      o.value = d;
      detail.append(o);
    }
    detail.value = a.detail;
    detail.addEventListener('change', () => { a.detail = detail.value; });
    const remove = el('button', 'remove', '×');
    remove.type = 'button';
    remove.title = 'Remove';
    remove.setAttribute('aria-label', 'Remove ' + a.name);
    remove.addEventListener('click', () => {
      state.pending = state.pending.filter((p) => p !== a);
      renderAttachments();
    });
    card.append(img, remove, name, detail);
    ui.attachments.append(card);
  }
}

// ---- the request -----------------------------------------------------------------------

// The OpenAI messages of conv: the system prompt, then each turn; failed
// turns (error bubbles) are left out, and user turns left adjacent by that
// are merged, since chat templates want roles to alternate.
function requestMessages(conv, upTo) {
  const out = [];
  const system = ui.system.value.trim();
  if (system) out.push({ role: 'system', content: system });
  for (const m of conv.messages.slice(0, upTo)) {
    if (m.error) continue;
    if (m.role === 'assistant') {
      out.push({ role: 'assistant', content: m.text });
      continue;
    }
    const parts = [];
    if (m.text) parts.push({ type: 'text', text: m.text });
    for (const im of m.images || []) {
      if (im.url) parts.push({ type: 'image_url', image_url: { url: im.url, detail: im.detail } });
    }
    const prev = out[out.length - 1];
    if (prev && prev.role === 'user') {
      prev.content = [...(typeof prev.content === 'string' ? [{ type: 'text', text: prev.content }] : prev.content), ...parts];
    } else if (parts.length === 1 && parts[0].type === 'text') {
      out.push({ role: 'user', content: m.text });
    } else {
      out.push({ role: 'user', content: parts });
    }
  }
  return out;
}

function requestBody(conv, upTo) {
  const body = { messages: requestMessages(conv, upTo), stream: true, stream_options: { include_usage: true } };
  if (state.model) body.model = state.model;
  for (const [k, parse] of Object.entries(NUMBER_FIELDS)) {
    const v = $(k).value.trim();
    if (v !== '' && !Number.isNaN(parse(v, 10))) body[k] = parse(v, 10);
  }
  return body;
}

// The message of an error answer: the OpenAI error body's, else the status.
async function errorText(res) {
  const text = await res.text().catch(() => '');
  try {
    const msg = JSON.parse(text).error.message;
    if (msg) return `${msg} (HTTP ${res.status})`;
  } catch {
    // not the OpenAI error body
  }
  return `HTTP ${res.status} ${res.statusText}${text ? ': ' + text.slice(0, 300) : ''}`;
}

// Reads a server-sent event stream, calling onEvent with each event's JSON
// until "data: [DONE]" or the end. An event is its data: lines joined,
// ended by a blank line; comments (":") and other fields are skipped.
async function readSSE(stream, onEvent) {
  const reader = stream.getReader();
  const decoder = new TextDecoder();
  let buf = '';
  let data = [];
  const dispatch = () => {
    const d = data.join('\n');
    data = [];
    if (d === '[DONE]') return true;
    let obj;
    try {
      obj = JSON.parse(d);
    } catch {
      throw new Error('the server sent an event that is not JSON: ' + d.slice(0, 200));
    }
    onEvent(obj);
    return false;
  };
  for (;;) {
    const { value, done } = await reader.read();
    buf += done ? decoder.decode() : decoder.decode(value, { stream: true });
    for (let nl; (nl = buf.indexOf('\n')) >= 0;) {
      const line = buf.slice(0, nl).replace(/\r$/, '');
      buf = buf.slice(nl + 1);
      if (line === '') {
        if (data.length && dispatch()) {
          reader.cancel().catch(() => {});
          return;
        }
      } else if (line.startsWith('data:')) {
        data.push(line.slice(5).replace(/^ /, ''));
      }
    }
    if (done) {
      if (data.length) dispatch();
      return;
    }
  }
}

// Streams the answer to conv's messages before index upTo into msg (already
// in conv), updating the page as tokens come; Stop aborts it.
async function streamReply(conv, msg) {
  const upTo = conv.messages.indexOf(msg);
  const controller = new AbortController();
  state.busy = { controller, conv, msg };
  updateButtons();
  const t0 = performance.now();
  let tFirst = null;
  let usage = null;
  let timings = null;
  try {
    const res = await fetch('/v1/chat/completions', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json', ...authHeaders() },
      body: JSON.stringify(requestBody(conv, upTo)),
      signal: controller.signal,
    });
    if (!res.ok) throw new Error(await errorText(res));
    await readSSE(res.body, (ev) => {
      if (ev.error) throw new Error(ev.error.message || 'the server reported an error');
      const choice = ev.choices && ev.choices[0];
      const text = choice && choice.delta && choice.delta.content;
      if (text) {
        if (tFirst == null) tFirst = performance.now();
        msg.text += text;
        renderStreaming();
      }
      if (choice && choice.finish_reason) msg.stats.finish_reason = choice.finish_reason;
      if (ev.usage) usage = ev.usage;
      if (ev.timings) timings = ev.timings;
    });
  } catch (e) {
    controller.abort(); // an error event or a broken stream: let the connection go
    if (e.name === 'AbortError') {
      msg.stats.stopped = true;
    } else if (msg.text) { // the partial answer stays; the error follows it
      conv.messages.push({ role: 'assistant', text: '', error: e.message });
    } else {
      msg.error = e.message || String(e);
    }
  }
  const end = performance.now();
  if (tFirst != null) msg.stats.ttft_ms = tFirst - t0;
  if (usage) {
    msg.stats.completion_tokens = usage.completion_tokens;
    msg.stats.prompt_tokens = usage.prompt_tokens;
    msg.stats.cached_tokens = (usage.prompt_tokens_details || {}).cached_tokens || 0;
    // the server's decode rate; else the tokens after the first over the time they took
    const n = usage.completion_tokens;
    msg.stats.tokens_per_s = timings && timings.predicted_per_second
      ? timings.predicted_per_second
      : n > 1 && tFirst != null && end - tFirst > 20 ? (n - 1) / ((end - tFirst) / 1000) : null;
  }
  state.busy = null;
  conv.updated = Date.now();
  saveConvs();
  if (conv.id === state.currentId) renderMessages();
  renderList();
  updateButtons();
}

function titleOf(text, images) {
  const t = text.trim().replace(/\s+/g, ' ');
  if (t) return t.length > 40 ? t.slice(0, 39) + '…' : t;
  return images.length ? images[0].name : 'New chat';
}

async function send() {
  if (state.busy) return;
  const text = ui.prompt.value;
  if (!text.trim() && !state.pending.length) return;
  let conv = currentConv();
  const images = state.pending.map((a) => ({ url: a.url, name: a.name, detail: a.detail }));
  if (!conv) {
    conv = { id: newId(), title: titleOf(text, images), updated: Date.now(), messages: [] };
    state.convs.push(conv);
    state.currentId = conv.id;
    localStorage.setItem(KEYS.current, conv.id);
  }
  conv.messages.push({ role: 'user', text, images });
  const msg = { role: 'assistant', text: '', stats: {} };
  conv.messages.push(msg);
  state.pending = [];
  ui.prompt.value = '';
  renderAttachments();
  renderList();
  renderMessages();
  ui.messages.lastElementChild.classList.add('streaming');
  await streamReply(conv, msg);
}

// Answers the last user turn again: what followed it is dropped.
async function regenerate() {
  const conv = currentConv();
  if (state.busy || !conv) return;
  let last = conv.messages.length - 1;
  while (last >= 0 && conv.messages[last].role !== 'user') last--;
  if (last < 0) return;
  conv.messages.length = last + 1;
  const msg = { role: 'assistant', text: '', stats: {} };
  conv.messages.push(msg);
  renderMessages();
  ui.messages.lastElementChild.classList.add('streaming');
  await streamReply(conv, msg);
}

async function loadModel() {
  try {
    const res = await fetch('/v1/models', { headers: authHeaders() });
    if (!res.ok) throw new Error(await errorText(res));
    const j = await res.json();
    state.model = j.data && j.data[0] ? j.data[0].id : null;
    ui.model.textContent = state.model || '';
  } catch (e) {
    ui.model.textContent = '(server not reachable)';
    notice('Could not read the model list: ' + e.message);
  }
}

// ---- events ----------------------------------------------------------------------------

function hasFiles(e) {
  return e.dataTransfer && [...e.dataTransfer.types].includes('Files');
}

function wire() {
  ui.composer.addEventListener('submit', (e) => {
    e.preventDefault();
    send();
  });
  ui.prompt.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  ui.stop.addEventListener('click', () => state.busy && state.busy.controller.abort());
  ui.regenerate.addEventListener('click', regenerate);
  ui.newChat.addEventListener('click', () => switchTo(null));
  ui.toggleList.addEventListener('click', () => document.body.classList.toggle('list-open'));
  ui.toggleSettings.addEventListener('click', () => {
    ui.settings.hidden = !ui.settings.hidden;
    ui.toggleSettings.setAttribute('aria-expanded', String(!ui.settings.hidden));
  });
  ui.settings.addEventListener('input', saveSettings);
  ui.fileInput.addEventListener('change', () => {
    addFiles([...ui.fileInput.files]);
    ui.fileInput.value = '';
  });
  document.addEventListener('paste', (e) => {
    const files = [...(e.clipboardData ? e.clipboardData.files : [])].filter((f) => f.type.startsWith('image/'));
    if (files.length) {
      e.preventDefault();
      addFiles(files);
    }
  });
  // Drop anywhere on the page; the overlay shows while files are dragged over it.
  let depth = 0;
  window.addEventListener('dragenter', (e) => {
    if (!hasFiles(e)) return;
    depth++;
    ui.overlay.hidden = false;
  });
  window.addEventListener('dragleave', () => {
    depth = Math.max(0, depth - 1);
    if (!depth) ui.overlay.hidden = true;
  });
  window.addEventListener('dragover', (e) => {
    if (hasFiles(e)) e.preventDefault();
  });
  window.addEventListener('drop', (e) => {
    if (!hasFiles(e)) return;
    e.preventDefault();
    depth = 0;
    ui.overlay.hidden = true;
    addFiles([...e.dataTransfer.files]);
  });
}

function init() {
  state.convs = loadJSON(KEYS.convs, []).filter((c) => c && Array.isArray(c.messages));
  for (const c of state.convs) { // a reply cut by a reload: whatever came is kept
    for (const m of c.messages) m.stats = m.stats || {};
  }
  const current = localStorage.getItem(KEYS.current);
  state.currentId = state.convs.some((c) => c.id === current) ? current : null;
  loadSettings();
  wire();
  renderList();
  renderMessages();
  loadModel();
}

init();
