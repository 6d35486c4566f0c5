// The official OpenAI Node SDK (npm `openai`, pinned in tests/fixtures/tokenizer) against a
// running engramd's HTTP front door. Run by tests/integration/http_test.cc:
//
//   ENGRAM_HTTP_URL=http://127.0.0.1:PORT/v1 ENGRAM_API_KEY=KEY ENGRAM_MODEL=NAME \
//     node tests/integration/openai_sdk_test.mjs [--chat] [--tls]
//
// (--tls: the URL is https and NODE_EXTRA_CA_CERTS names the test CA.) Exits 0 when every
// check passed, 1 with the failures on stderr otherwise.
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const fixture = join(here, '../fixtures/tokenizer/package.json');
const require = createRequire(fixture);
const { default: OpenAI } = await import(pathToFileURL(require.resolve('openai')).href);

const baseURL = process.env.ENGRAM_HTTP_URL;
const apiKey = process.env.ENGRAM_API_KEY || 'none';
const model = process.env.ENGRAM_MODEL;
const withChat = process.argv.includes('--chat');
if (!baseURL || !model) {
  console.error('set ENGRAM_HTTP_URL and ENGRAM_MODEL');
  process.exit(2);
}
const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });

const failures = [];
async function check(name, fn) {
  try {
    await fn();
    console.log(`ok   ${name}`);
  } catch (e) {
    failures.push(name);
    console.error(`FAIL ${name}: ${e && e.stack ? e.stack : e}`);
  }
}

await check('models.list names the served model', async () => {
  const page = await client.models.list();
  const ids = page.data.map((m) => m.id);
  assert.deepEqual(ids, [model]);
});

const greedy = { model, prompt: 'The capital of France is', max_tokens: 12, temperature: 0 };

await check('completions: whole and streamed text are equal under greedy decoding', async () => {
  const whole = await client.completions.create({ ...greedy, ignore_eos: true });
  assert.equal(whole.object, 'text_completion');
  assert.equal(whole.choices.length, 1);
  assert.equal(whole.choices[0].finish_reason, 'length');
  assert.equal(whole.usage.completion_tokens, 12);
  assert.equal(whole.usage.total_tokens, whole.usage.prompt_tokens + 12);
  const stream = await client.completions.create({
    ...greedy, ignore_eos: true, stream: true, stream_options: { include_usage: true },
  });
  let text = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    if (chunk.usage) usage = chunk.usage;
    for (const c of chunk.choices) {
      text += c.text;
      if (c.finish_reason) finish = c.finish_reason;
    }
  }
  assert.equal(text, whole.choices[0].text);
  assert.equal(finish, 'length');
  assert.deepEqual(usage, whole.usage);
});

await check('completions: n > 1, stop strings and logprobs', async () => {
  const many = await client.completions.create({
    model, prompt: 'Once upon a time', max_tokens: 6, n: 3, seed: 11, ignore_eos: true,
  });
  assert.deepEqual(many.choices.map((c) => c.index), [0, 1, 2]);
  assert.equal(many.usage.completion_tokens, 18);
  const base = await client.completions.create({ ...greedy, ignore_eos: true });
  const text = base.choices[0].text;
  const chars = Array.from(text);  // code points: never half a surrogate pair
  const stop = chars[Math.floor(chars.length / 2)];
  const stopped = await client.completions.create({ ...greedy, ignore_eos: true, stop: [stop] });
  assert.equal(stopped.choices[0].finish_reason, 'stop');
  assert.equal(stopped.choices[0].text, text.slice(0, text.indexOf(stop)));
  const lp = await client.completions.create({ ...greedy, max_tokens: 4, logprobs: 2, ignore_eos: true });
  const l = lp.choices[0].logprobs;
  assert.equal(l.tokens.length, 4);
  assert.equal(l.token_logprobs.length, 4);
  assert.equal(l.top_logprobs.length, 4);
  assert.ok(l.token_logprobs.every((x) => x <= 0));
});

await check('a bad parameter is a BadRequestError naming the field', async () => {
  await assert.rejects(
    client.completions.create({ model, prompt: 'x', max_tokens: -3 }),
    (e) => e instanceof OpenAI.BadRequestError && e.status === 400 && e.param === 'max_tokens',
  );
  await assert.rejects(
    client.completions.create({ model: 'no-such-model', prompt: 'x' }),
    (e) => e instanceof OpenAI.NotFoundError && e.status === 404,
  );
});

if (process.env.ENGRAM_API_KEY) {
  await check('a wrong key is an AuthenticationError', async () => {
    const wrong = new OpenAI({ baseURL, apiKey: 'wrong-key-wrong-key', maxRetries: 0 });
    await assert.rejects(wrong.models.list(), (e) => e instanceof OpenAI.AuthenticationError);
  });
}

if (withChat) {
  const messages = [
    { role: 'system', content: 'You are terse.' },
    { role: 'user', content: 'Say hello in French. ¿Qué tal? 你好 👋' },
  ];
  await check('chat: whole and streamed content are equal under greedy decoding', async () => {
    const whole = await client.chat.completions.create({
      model, messages, max_tokens: 10, temperature: 0, ignore_eos: true,
    });
    assert.equal(whole.object, 'chat.completion');
    assert.equal(whole.choices[0].message.role, 'assistant');
    assert.equal(whole.choices[0].finish_reason, 'length');
    assert.equal(whole.usage.completion_tokens, 10);
    const stream = await client.chat.completions.create({
      model, messages, max_tokens: 10, temperature: 0, ignore_eos: true, stream: true,
      stream_options: { include_usage: true },
    });
    let content = '';
    let role = null;
    let usage = null;
    for await (const chunk of stream) {
      assert.equal(chunk.object, 'chat.completion.chunk');
      if (chunk.usage) usage = chunk.usage;
      for (const c of chunk.choices) {
        if (c.delta.role) role = c.delta.role;
        if (c.delta.content) content += c.delta.content;
      }
    }
    assert.equal(role, 'assistant');
    assert.equal(content, whole.choices[0].message.content);
    assert.deepEqual(usage, whole.usage);
  });
  await check('chat: logprobs with top_logprobs', async () => {
    const r = await client.chat.completions.create({
      model, messages, max_tokens: 3, temperature: 0, ignore_eos: true, logprobs: true,
      top_logprobs: 2,
    });
    const c = r.choices[0].logprobs.content;
    assert.equal(c.length, 3);
    for (const t of c) {
      assert.equal(typeof t.token, 'string');
      assert.ok(Array.isArray(t.bytes));
      assert.equal(t.top_logprobs.length, 2);
    }
  });
}

if (failures.length) {
  console.error(`${failures.length} check(s) failed: ${failures.join('; ')}`);
  process.exit(1);
}
console.log('all checks passed');
