// Screenshot of engramd's status page after it has polled for a while in real time (headless
// Chromium's --screenshot shoots at the load event, before the charts have history), through
// the DevTools protocol; prints the page's console errors and exceptions and exits 1 if any.
//   node --experimental-websocket scripts/status_page_screenshot.mjs \
//       http://127.0.0.1:8000/ docs/status_page.png [seconds=20]
// Needs Debian's chromium (scripts/setup.sh) and Node >= 20.10.
import { spawn } from "node:child_process";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

const [url, out, seconds = "20"] = process.argv.slice(2);
if (!url || !out) {
  console.error("usage: status_page_screenshot.mjs URL OUT.png [seconds]");
  process.exit(2);
}
const profile = mkdtempSync(join(tmpdir(), "engram-chromium-"));
const chrome = spawn("chromium", ["--headless=new", "--no-sandbox", "--disable-gpu",
  "--hide-scrollbars", "--remote-debugging-port=0", `--user-data-dir=${profile}`,
  "--window-size=1240,760", "about:blank"], { stdio: ["ignore", "ignore", "pipe"] });
const exited = new Promise((r) => chrome.on("exit", r));
const cleanup = async () => {
  chrome.kill("SIGKILL");
  await exited;
  rmSync(profile, { recursive: true, force: true, maxRetries: 5 });
};
const wsUrl = await new Promise((resolve, reject) => {
  let err = "";
  chrome.stderr.on("data", (d) => {
    err += d;
    const m = err.match(/DevTools listening on (ws:\S+)/);
    if (m) resolve(m[1]);
  });
  chrome.on("exit", (code) => reject(new Error(`chromium exited ${code}: ${err}`)));
});
const ws = new WebSocket(wsUrl);
await new Promise((r) => ws.addEventListener("open", r, { once: true }));
let next = 1;
const pending = new Map();
const problems = [];
ws.addEventListener("message", (ev) => {
  const m = JSON.parse(ev.data);
  if (m.id && pending.has(m.id)) {
    pending.get(m.id)(m);
    pending.delete(m.id);
  } else if (m.method === "Runtime.exceptionThrown") {
    problems.push("exception: " + m.params.exceptionDetails.text + " " +
      (m.params.exceptionDetails.exception?.description ?? ""));
  } else if (m.method === "Runtime.consoleAPICalled" && m.params.type === "error") {
    problems.push("console.error: " + m.params.args.map((a) => a.value ?? a.description).join(" "));
  } else if (m.method === "Log.entryAdded" && m.params.entry.level === "error") {
    problems.push("log: " + m.params.entry.text + " " + (m.params.entry.url ?? ""));
  }
});
const send = (method, params = {}, sessionId) => new Promise((resolve, reject) => {
  const id = next++;
  pending.set(id, (m) => (m.error ? reject(new Error(`${method}: ${m.error.message}`)) : resolve(m.result)));
  ws.send(JSON.stringify({ id, method, params, sessionId }));
});
try {
  const { targetId } = await send("Target.createTarget", { url: "about:blank" });
  const { sessionId } = await send("Target.attachToTarget", { targetId, flatten: true });
  await send("Runtime.enable", {}, sessionId);
  await send("Log.enable", {}, sessionId);
  await send("Page.enable", {}, sessionId);
  await send("Page.navigate", { url }, sessionId);
  await new Promise((r) => setTimeout(r, Number(seconds) * 1000));
  const { data } = await send("Page.captureScreenshot", { format: "png" }, sessionId);
  writeFileSync(out, Buffer.from(data, "base64"));
  console.log(`wrote ${out}`);
} catch (e) {
  problems.push(String(e));
} finally {
  ws.close();
  await cleanup();
}
for (const p of problems) console.error(p);
process.exit(problems.length ? 1 : 0);
